//! Unit tests of the configuration: the guest defaults, the layouts read from ACPI tables,
//! the keys and the errors.

use super::*;
use crate::acpi::{AcpiInfo, AddressSpace, Gas, SleepObject};
use ioreq_server::device::Space;

#[test]
fn defaults_are_xen_pvh() {
    let c = PmTrapConfig::from_guest_toml("domid = 1\n").unwrap();
    assert_eq!(c, PmTrapConfig::default());
    let s = c.setup().unwrap();
    assert_eq!(s.pm1a_evt, Some(Block::port(0xB000, 4)));
    assert_eq!(s.pm1a_cnt, Some(Block::port(0xB004, 2)));
    assert_eq!(s.pm1b_cnt, None);
    assert_eq!(
        s.reset,
        Some(ResetSetup {
            block: Block::port(0xCF9, 1),
            value: 6
        })
    );
    assert_eq!(s.sleep.s5, Some(GUEST_S5));
    assert!(!s.allow_s3);
}

fn info() -> AcpiInfo {
    let g = |addr, bits| Some(Gas::io(addr, bits));
    AcpiInfo {
        pm1a_cnt: g(0x404, 2),
        pm1b_cnt: None,
        reset: Some(acpi::ResetRegister {
            space: AddressSpace::SYSTEM_IO,
            addr: 0xB2,
            bit_width: 8,
            value: Some(0xE4),
        }),
        hw_reduced: false,
        sleep_control: None,
        sleep: acpi::SleepStates {
            s3: SleepObject::Dynamic("conditional".into()),
            s4: SleepObject::Absent,
            s5: SleepObject::Static([7, 0]),
        },
        pm1a_evt: g(0x400, 4),
        pm1b_evt: None,
        sleep_status: None,
        smi_cmd: 0xB2,
        fadt_revision: 4,
        fadt_length: 244,
        sleep_detail: Vec::new(),
        tables: Vec::new(),
        aml_errors: Vec::new(),
        warnings: Vec::new(),
    }
}

#[test]
fn from_acpi_layouts() {
    let mut i = info();
    let s = from_acpi(&i, true).unwrap();
    assert_eq!(s.pm1a_cnt, Some(Block::port(0x404, 2)));
    assert_eq!(s.pm1a_evt, Some(Block::port(0x400, 4)));
    assert_eq!(s.reset, None, "SMI_CMD is not trapped");
    assert_eq!(
        s.sleep,
        SleepValues {
            s3: None,
            s4: None,
            s5: Some([7, 0])
        }
    );
    assert!(s.allow_s3);
    i.reset = Some(acpi::ResetRegister {
        space: AddressSpace::SYSTEM_IO,
        addr: 0xCF9,
        bit_width: 8,
        value: Some(6),
    });
    i.pm1a_cnt = Some(Gas {
        space: AddressSpace::SYSTEM_IO,
        addr: 0x1004,
        bit_width: 32,
        bit_offset: 0,
        access_size: 0,
    });
    i.pm1a_evt = Some(Gas {
        space: AddressSpace::SYSTEM_MEMORY,
        addr: 0xFE00_0000,
        bit_width: 8,
        bit_offset: 0,
        access_size: 0,
    });
    let s = from_acpi(&i, false).unwrap();
    assert_eq!(
        s.reset,
        Some(ResetSetup {
            block: Block::port(0xCF9, 1),
            value: 6
        })
    );
    assert_eq!(s.pm1a_cnt, Some(Block::port(0x1004, 4)));
    assert_eq!(
        s.pm1a_evt,
        Some(Block {
            space: Space::Memory,
            base: 0xFE00_0000,
            len: 4
        })
    );
    // HW-reduced: sleep registers only; missing control register is an error.
    i.hw_reduced = true;
    assert!(from_acpi(&i, false).is_err());
    i.sleep_control = Some(Gas::io(0x405, 1));
    i.sleep_status = Some(Gas::io(0x401, 1));
    let s = from_acpi(&i, false).unwrap();
    assert_eq!((s.pm1a_cnt, s.pm1a_evt), (None, None));
    assert_eq!(s.sleep_control, Some(Block::port(0x405, 1)));
    assert_eq!(s.sleep_status, Some(Block::port(0x401, 1)));
    // A PM1 control block in PCI config space cannot be trapped.
    i.hw_reduced = false;
    i.pm1a_cnt = Some(Gas {
        space: AddressSpace::PCI_CONFIG,
        addr: 0x40,
        bit_width: 16,
        bit_offset: 0,
        access_size: 0,
    });
    assert!(from_acpi(&i, false)
        .unwrap_err()
        .to_string()
        .contains("PM1a_CNT"));
}

#[test]
fn keys_and_errors() {
    let c = PmTrapConfig::from_guest_toml(
        "[pm_trap]\nmode = \"guest\"\nallow_s3 = true\npm1b_evt = 0x45C\npm1b_cnt = 0x460\ns5 = [0, 7]\nreset_port = 0\n",
    )
    .unwrap();
    let s = c.setup().unwrap();
    assert_eq!(s.pm1b_cnt, Some(Block::port(0x460, 2)));
    assert_eq!(s.sleep.s5, Some([0, 7]));
    assert_eq!(s.reset, None);
    assert!(s.allow_s3);
    let e = PmTrapConfig::from_guest_toml("[pm_trap]\npm1a_ctn = 1\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("pm1a_ctn"), "{e}");
    let e = PmTrapConfig::from_guest_toml("[pm_trap]\nmode = \"dom0\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("dom0") || e.contains("mode"), "{e}");
    let e = PmTrapConfig::from_guest_toml("[pm_trap]\npm1a_cnt = 70000\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("70000"), "{e}");
    let c = PmTrapConfig::from_guest_toml("[pm_trap]\npm1a_cnt = 0xB002\n").unwrap();
    assert!(matches!(c.setup(), Err(ConfigError::Overlap { .. })));
    let c = PmTrapConfig::from_guest_toml("[pm_trap]\ns5 = [8, 0]\n").unwrap();
    assert!(c.setup().unwrap_err().to_string().contains("s5"));
    let c = PmTrapConfig::from_guest_toml("[pm_trap]\nmode = \"hardware-domain\"\ns5 = [7, 0]\n")
        .unwrap();
    assert!(c.setup().unwrap_err().to_string().contains("s5"));
    let c = PmTrapConfig::from_guest_toml("[pm_trap]\npm1a_cnt = 0xFFFF\n").unwrap();
    assert!(c.setup().unwrap_err().to_string().contains("outside"));
    let c = PmTrapConfig::from_guest_toml(
        "[pm_trap]\nmode = \"hardware-domain\"\nacpi_dir = \"/nonexistent\"\n",
    )
    .unwrap();
    assert!(c.setup().unwrap_err().to_string().contains("/nonexistent"));
}
