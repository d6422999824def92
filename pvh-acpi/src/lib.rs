//! The guest's ACPI fragment, generated from the same per-guest TOML file the device models read,
//! so that the tables and the processes serving them cannot disagree.
//!
//! A PVH domU's tables come from libxl (tools/libacpi): a FADT whose PM1a_EVT/PM1a_CNT point at
//! 0xB000/0xB004, a DSDT with processor objects only (no `\_S5`, no PCI root) and a MADT with
//! the local APICs only. This crate makes what the project's device models need on top:
//!
//! - **SSDT** (`ssdt.aml`): `\_S5` (always), `\_S4` (always) and `\_S3` (only with
//!   `[pm_trap] allow_s3`), with pm-trap's configured or default SLP_TYP values
//!   ([`pm_trap::GUEST_S5`]); with a `[pci]` section the root bridge `\_SB.PCI0` (PNP0A08, `_CID`
//!   PNP0A03, `_SEG`, `_BBN`, `_UID`, `_CRS` with the bus range, the CF8/CFC ports, the I/O window
//!   and the MMIO window(s) — never the ECAM window) and `\_SB.MRES`, a PNP0C02 motherboard
//!   resource holding the ECAM window (Linux accepts an MCFG region only when it is reserved in
//!   the E820 map or by such a device); with `[pci]` and `[ioapic]` a `_PRT` routing INTA-D of
//!   every slot of the root bus to IOAPIC GSIs with [`intx_gsi`].
//! - **MADT** (`apic.aml`, only with an `[ioapic]` section): a full replacement of libxl's MADT:
//!   the same header identity (OEMID `Xen`, OEM Table ID `HVM`) with a higher OEM revision, the
//!   local APICs exactly as libxl lists them (processor UID *i*, APIC ID 2*i*, all enabled), and
//!   the IOAPIC (id, address, GSI base 0). Linux's initrd table upgrade replaces a firmware table
//!   only when signature, OEMID and OEM Table ID match and the OEM revision is strictly higher;
//!   any other initrd table is *added* — a second MADT would be ignored ("BIOS bug: multiple
//!   APIC/MADT found", instance 0 is used), so the MADT must replace libxl's and must therefore
//!   carry the local APICs too.
//! - **MCFG** (`mcfg.aml`, only with a `[pci]` section): the ECAM window and bus range.
//!
//! The encoders ([`aml`], [`resource`], [`table`]) are small and explicit, each constant citing
//! its section of the ACPI specification 6.4 (or the PCI Firmware Specification for MCFG).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod aml;
pub mod cli;
pub mod resource;
pub mod table;

use std::path::{Path, PathBuf};

use ioapic::IoapicConfig;
use ioreq_server::config::GuestConfig;
use pci_host_bridge::PciConfig;
use pm_trap::{Mode, PmTrapConfig};

/// What can go wrong while generating the tables.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The per-guest config file could not be read or parsed.
    #[error(transparent)]
    Config(#[from] ioreq_server::config::ConfigError),
    /// The `[pm_trap]` section is invalid.
    #[error(transparent)]
    PmTrap(#[from] pm_trap::ConfigError),
    /// The `[ioapic]` section is invalid.
    #[error(transparent)]
    Ioapic(#[from] ioapic::ConfigError),
    /// The `[pci]` section is invalid.
    #[error("[pci]: {0}")]
    Pci(#[from] pci_host_bridge::Error),
    /// The configuration asks for something the tables cannot express.
    #[error("{0}")]
    Unsupported(String),
    /// An AML name or table ID is not valid.
    #[error("invalid ACPI name {0:?}")]
    BadName(String),
    /// An EISA/PNP ID is not three capital letters and four hex digits.
    #[error("invalid EISA ID {0:?}")]
    BadEisaId(String),
    /// An object is larger than its encoding allows.
    #[error("{what}: {len} exceeds the maximum of {max}")]
    TooLarge {
        /// What.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A table file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A PCI interrupt pin, `INTA` to `INTD` (PCI Local Bus 3.0, Interrupt Pin register values 1-4;
/// here 0-based as in ACPI `_PRT` Pin fields, ACPI 6.4 6.2.13).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum IntxPin {
    /// INTA# (`_PRT` pin 0).
    A = 0,
    /// INTB# (`_PRT` pin 1).
    B = 1,
    /// INTC# (`_PRT` pin 2).
    C = 2,
    /// INTD# (`_PRT` pin 3).
    D = 3,
}

impl IntxPin {
    /// All four pins in order.
    pub const ALL: [IntxPin; 4] = [IntxPin::A, IntxPin::B, IntxPin::C, IntxPin::D];

    /// From the config-space Interrupt Pin register (1 = INTA ... 4 = INTD; 0 = none).
    pub fn from_config_register(v: u8) -> Option<IntxPin> {
        match v {
            1 => Some(IntxPin::A),
            2 => Some(IntxPin::B),
            3 => Some(IntxPin::C),
            4 => Some(IntxPin::D),
            _ => None,
        }
    }
}

/// First GSI of the PCI INTx lines on the IOAPIC (GSIs 0-15 are the ISA IRQs, identity-mapped,
/// no interrupt source overrides).
pub use irq_line::PCI_INTX_GSI_OFFSET as PCI_GSI_OFFSET;

/// The GSI the `_PRT` routes pin `pin` of guest slot `slot` to:
/// [`irq_line::pci_intx_gsi`], the one formula pci-host-bridge raises INTx with
/// too (`GSI = gsi_base + 16 + ((slot + pin) % 4)` with this crate's 0-based pins).
pub fn intx_gsi(gsi_base: u32, slot: u8, pin: IntxPin) -> u32 {
    irq_line::pci_intx_gsi(gsi_base, slot, pin as u8 + 1).expect("IntxPin is one of the four pins")
}

/// OEMID of every table Xen's libacpi builds (tools/libacpi/acpi2_0.h `ACPI_OEM_ID`).
pub const LIBXL_OEM_ID: &str = "Xen";
/// OEM Table ID of libacpi's tables (`ACPI_OEM_TABLE_ID`).
pub const LIBXL_OEM_TABLE_ID: &str = "HVM";
/// OEM Revision of libacpi's tables (`ACPI_OEM_REVISION`); the replacement MADT must be higher.
pub const LIBXL_OEM_REVISION: u32 = 0;
/// Revision of libacpi's MADT (`ACPI_2_0_MADT_REVISION`).
pub const LIBXL_MADT_REVISION: u8 = 2;
/// libacpi's Local APIC address (`LAPIC_BASE_ADDRESS`).
pub const LAPIC_BASE_ADDRESS: u32 = 0xFEE0_0000;
/// OEMID of the tables that are added (not replacements).
pub const OEM_ID: &str = "PVHDM";
/// Creator ID written into every generated table.
pub const CREATOR_ID: [u8; 4] = *b"PVHA";
/// Creator revision.
pub const CREATOR_REVISION: u32 = 1;
/// SSDT revision: 2, so that integers are 64 bits wide (ACPI 6.4, 5.2.11.1).
pub const SSDT_REVISION: u8 = 2;
/// MCFG revision (PCI Firmware Specification 3.2, Table 4-2).
pub const MCFG_REVISION: u8 = 1;
/// The file names the tables are written to (Linux loads every file in
/// `kernel/firmware/acpi/` of an uncompressed cpio at the start of the initrd).
pub const SSDT_FILE: &str = "ssdt.aml";
/// MADT file name.
pub const MADT_FILE: &str = "apic.aml";
/// MCFG file name.
pub const MCFG_FILE: &str = "mcfg.aml";

/// libxl's local APIC ID of vCPU `i` (tools/libs/light/libxl_x86_acpi.c `acpi_lapic_id`), which
/// is also the APIC ID Xen gives vCPU `i`.
pub fn lapic_id(vcpu: u32) -> u32 {
    vcpu * 2
}

/// Everything the tables are made from, resolved and validated.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// `[pm_trap]` (guest mode).
    pub pm: PmTrapConfig,
    /// `[ioapic]`, when the guest has one.
    pub ioapic: Option<IoapicConfig>,
    /// `[pci]`, when the guest has a PCI root.
    pub pci: Option<PciConfig>,
    /// Number of vCPUs libxl lists in its MADT (`maxvcpus`, all enabled).
    pub vcpus: u32,
}

impl Inputs {
    /// From a per-guest config: `[pm_trap]` (defaults when absent), `[ioapic]` and `[pci]` when
    /// present. `vcpus` overrides the file's `vcpus` (default 1).
    pub fn from_config(cfg: &GuestConfig, vcpus: Option<u32>) -> Result<Inputs, Error> {
        let pm: PmTrapConfig = cfg.section("pm_trap")?;
        let ioapic: Option<IoapicConfig> = cfg.optional_section("ioapic")?;
        if let Some(c) = &ioapic {
            c.validate()?;
        }
        let pci: Option<PciConfig> = cfg.optional_section("pci")?;
        if let Some(c) = &pci {
            c.validate()?;
        }
        Ok(Inputs {
            pm,
            ioapic,
            pci,
            vcpus: vcpus.or(cfg.vcpus).unwrap_or(1),
        })
    }
}

/// The generated tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestTables {
    /// The SSDT (always).
    pub ssdt: Vec<u8>,
    /// The replacement MADT (with an `[ioapic]` section).
    pub madt: Option<Vec<u8>>,
    /// The MCFG (with a `[pci]` section).
    pub mcfg: Option<Vec<u8>>,
    /// Things the caller should tell the operator (the tables are still usable).
    pub warnings: Vec<String>,
}

impl GuestTables {
    /// Write the tables into `dir` (created if missing) as [`SSDT_FILE`], [`MADT_FILE`],
    /// [`MCFG_FILE`]; returns the files written.
    pub fn write_dir(&self, dir: &Path) -> Result<Vec<PathBuf>, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.into(),
            source,
        })?;
        let mut written = Vec::new();
        for (file, bytes) in [
            (SSDT_FILE, Some(&self.ssdt)),
            (MADT_FILE, self.madt.as_ref()),
            (MCFG_FILE, self.mcfg.as_ref()),
        ] {
            let path = dir.join(file);
            match bytes {
                Some(b) => {
                    std::fs::write(&path, b).map_err(|source| Error::Write {
                        path: path.clone(),
                        source,
                    })?;
                    written.push(path);
                }
                None => {
                    // A stale table from an earlier run would be loaded too: remove it.
                    if path.exists() {
                        std::fs::remove_file(&path)
                            .map_err(|source| Error::Write { path, source })?;
                    }
                }
            }
        }
        Ok(written)
    }
}

/// Generate all tables from a config file's contents.
pub fn generate(inputs: &Inputs) -> Result<GuestTables, Error> {
    let mut warnings = Vec::new();
    if inputs.pm.mode != Mode::Guest {
        return Err(Error::Unsupported(
            "[pm_trap] mode = \"hardware-domain\": the guest fragment is for a domU".into(),
        ));
    }
    let setup = inputs.pm.guest_setup()?;
    let pm1a_cnt = setup.pm1a_cnt.map(|b| b.base);
    if pm1a_cnt != Some(u64::from(pm_trap::config::GUEST_PM1A_CNT)) {
        warnings.push(format!(
            "[pm_trap] PM1a_CNT is {pm1a_cnt:x?}, but libxl's FADT (which this fragment does not replace) declares {:#x}: the guest will write its sleep type there",
            pm_trap::config::GUEST_PM1A_CNT
        ));
    }
    let ssdt = ssdt(inputs, &setup)?;
    let madt = inputs
        .ioapic
        .as_ref()
        .map(|io| madt(io, inputs.vcpus))
        .transpose()?;
    let mcfg = inputs.pci.as_ref().map(mcfg).transpose()?;
    Ok(GuestTables {
        ssdt,
        madt,
        mcfg,
        warnings,
    })
}

/// `Name (\_Sx, Package (0x04) {SLP_TYPa, SLP_TYPb, 0, 0})` (ACPI 7.4.2 "\_Sx (System States)":
/// the first two elements are PM1a/PM1b SLP_TYP; the other two are reserved).
fn sleep_object(state: u8, v: [u8; 2]) -> Result<Vec<u8>, Error> {
    aml::name(
        &format!("\\_S{state}"),
        &aml::package(&[
            aml::integer(v[0].into()),
            aml::integer(v[1].into()),
            aml::integer(0),
            aml::integer(0),
        ])?,
    )
}

/// The SSDT body and table.
fn ssdt(inputs: &Inputs, setup: &pm_trap::TrapSetup) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    if setup.allow_s3 {
        if let Some(v) = setup.sleep.s3 {
            body.extend(sleep_object(3, v)?);
        }
    }
    if let Some(v) = setup.sleep.s4 {
        body.extend(sleep_object(4, v)?);
    }
    if let Some(v) = setup.sleep.s5 {
        body.extend(sleep_object(5, v)?);
    }
    if let Some(pci) = &inputs.pci {
        let mut sb = pci_root(pci, inputs.ioapic.as_ref())?;
        sb.extend(ecam_reservation(pci)?);
        body.extend(aml::scope("\\_SB", &sb)?);
    }
    own_table(*b"SSDT", SSDT_REVISION, "PVHSSDT", &body)
}

/// `body` as a table of our own (SSDT, MCFG): our OEMID and creator, OEM revision 1. Unlike
/// the MADT, these tables replace nothing of libxl's, so they carry no libxl identity.
fn own_table(
    signature: [u8; 4],
    revision: u8,
    oem_table_id: &str,
    body: &[u8],
) -> Result<Vec<u8>, Error> {
    table::build(
        &table::Ident {
            signature,
            revision,
            oem_id: table::padded(OEM_ID)?,
            oem_table_id: table::padded(oem_table_id)?,
            oem_revision: 1,
            creator_id: CREATOR_ID,
            creator_revision: CREATOR_REVISION,
        },
        body,
    )
}

/// Size of the ECAM window of `pci` (1 MiB per bus).
fn ecam_size(pci: &PciConfig) -> u64 {
    (u64::from(pci.bus_end) - u64::from(pci.bus_start) + 1) << 20
}

/// `Device (PCI0)` inside `\_SB`.
fn pci_root(pci: &PciConfig, ioapic: Option<&IoapicConfig>) -> Result<Vec<u8>, Error> {
    let mut d = Vec::new();
    d.extend(aml::name("_HID", &aml::dword(aml::eisa_id("PNP0A08")?))?);
    d.extend(aml::name("_CID", &aml::dword(aml::eisa_id("PNP0A03")?))?);
    d.extend(aml::name("_SEG", &aml::integer(0))?);
    d.extend(aml::name("_BBN", &aml::integer(pci.bus_start.into()))?);
    d.extend(aml::name("_UID", &aml::integer(0))?);
    let mut crs = vec![
        resource::word_address(
            resource::Space::Bus,
            pci.bus_start.into(),
            pci.bus_end.into(),
            false,
        ),
        // The configuration mechanism #1 ports, which the bridge consumes (as on every PC root
        // bridge). Xen decodes them; accesses reach pci-host-bridge as PCI_CONFIG ioreqs.
        resource::io_port(0xCF8, 8),
    ];
    let w = pci.windows();
    if let Some((a, b)) = w.io {
        let (a, b) = (u16::try_from(a), u16::try_from(b));
        let (Ok(a), Ok(b)) = (a, b) else {
            return Err(Error::Unsupported(
                "[pci] io window beyond port 0xFFFF".into(),
            ));
        };
        crs.push(resource::word_address(resource::Space::Io, a, b, false));
    }
    for (a, b) in w.mmio {
        crs.push(resource::memory_window(a, b, false));
    }
    d.extend(aml::name("_CRS", &aml::buffer(&resource::template(&crs))?)?);
    if let Some(io) = ioapic {
        let pins = u32::from(io.pins_u8());
        let need = PCI_GSI_OFFSET + 4;
        if pins < need {
            return Err(Error::Unsupported(format!(
                "[ioapic] pins = {pins}: the _PRT routes PCI INTx to GSIs {PCI_GSI_OFFSET}-{} (see pvh_acpi::intx_gsi), so at least {need} pins are needed",
                need - 1
            )));
        }
        d.extend(aml::name("_PRT", &prt(0)?)?);
    }
    aml::device("PCI0", &d)
}

/// The `_PRT` package (ACPI 6.4, 6.2.13 "_PRT (PCI Routing Table)"): one entry per slot 0-31
/// and pin INTA-INTD, `Package () {Address 0xSSSSFFFF, Pin, Source 0, SourceIndex = GSI}` (a
/// zero Source means SourceIndex is a GSI).
fn prt(gsi_base: u32) -> Result<Vec<u8>, Error> {
    let mut entries = Vec::new();
    for slot in 0u8..32 {
        for pin in IntxPin::ALL {
            entries.push(aml::package(&[
                aml::dword((u32::from(slot) << 16) | 0xFFFF),
                aml::integer(pin as u64),
                aml::integer(0),
                aml::integer(intx_gsi(gsi_base, slot, pin).into()),
            ])?);
        }
    }
    aml::package(&entries)
}

/// `Device (MRES)` inside `\_SB`: a PNP0C02 motherboard resource consuming the ECAM window, so
/// that Linux's `pci_mmcfg_late_init` finds the MCFG region reserved (it checks E820 and then
/// PNP0C01/PNP0C02 `_CRS`; libxl's E820 leaves the MMIO hole unlisted).
fn ecam_reservation(pci: &PciConfig) -> Result<Vec<u8>, Error> {
    let base = pci.ecam_base;
    let size = ecam_size(pci);
    let desc = match (u32::try_from(base), u32::try_from(base + (size - 1))) {
        (Ok(b), Ok(_)) => resource::memory32_fixed(b, size as u32),
        _ => resource::qword_address(resource::Space::Memory, base, base + (size - 1), true),
    };
    let mut d = Vec::new();
    d.extend(aml::name("_HID", &aml::dword(aml::eisa_id("PNP0C02")?))?);
    d.extend(aml::name("_UID", &aml::string("ECAM")?)?);
    d.extend(aml::name(
        "_CRS",
        &aml::buffer(&resource::template(&[desc]))?,
    )?);
    aml::device("MRES", &d)
}

/// The MADT flags of the replacement: 0 (no `PCAT_COMPAT`; see [`table::MADT_FLAGS_PCAT_COMPAT`]
/// and the comment in the MADT builder for why it must stay clear with an IOAPIC).
pub const MADT_FLAGS: u32 = 0;

/// The replacement MADT: libxl's header identity with OEM revision + 1, libxl's local APIC list,
/// and the IOAPIC. No interrupt source overrides: ISA IRQs map 1:1 to GSIs 0-15 (there is no
/// PIT or 8259 in a PVH domU), and the SCI (FADT SCI_INT 9) keeps the ACPI default of
/// level-triggered, active-low (ACPI 6.4, 5.2.12.5).
fn madt(io: &IoapicConfig, vcpus: u32) -> Result<Vec<u8>, Error> {
    if vcpus == 0 || vcpus > 128 {
        return Err(Error::Unsupported(format!(
            "{vcpus} vCPUs: the MADT lists xAPIC entries with APIC ID 2*i, so 1 to 128 vCPUs"
        )));
    }
    let address = u32::try_from(io.base)
        .map_err(|_| Error::Unsupported(format!("[ioapic] base {:#x} above 4 GiB", io.base)))?;
    let mut body = Vec::new();
    body.extend_from_slice(&LAPIC_BASE_ADDRESS.to_le_bytes());
    // Flags 0: no PCAT_COMPAT, unlike libxl's MADT. A PVH domU has no 8259 PICs, and since
    // "x86/i8259: Skip probing when ACPI/MADT advertises PCAT compatibility" (Linux 6.5,
    // backported to 6.1 stable) Linux trusts the flag instead of probing port 0x21: it then
    // keeps 16 legacy IRQs, runs the IO-APIC timer check (`check_timer`) and panics with
    // "IO-APIC + timer doesn't work!" (seen on the rig with Debian's 6.1.0-56). Without the
    // flag the probe reads 0xFF ("Using NULL legacy PIC") and the check is skipped.
    body.extend_from_slice(&MADT_FLAGS.to_le_bytes());
    body.extend(table::madt_io_apic(io.id_u8(), address, 0));
    for i in 0..vcpus {
        body.extend(table::madt_local_apic(i as u8, lapic_id(i) as u8, true));
    }
    table::build(
        &table::Ident {
            signature: *b"APIC",
            revision: LIBXL_MADT_REVISION,
            oem_id: table::padded(LIBXL_OEM_ID)?,
            oem_table_id: table::padded(LIBXL_OEM_TABLE_ID)?,
            oem_revision: LIBXL_OEM_REVISION + 1,
            creator_id: CREATOR_ID,
            creator_revision: CREATOR_REVISION,
        },
        &body,
    )
}

/// The MCFG for the ECAM window (segment 0).
fn mcfg(pci: &PciConfig) -> Result<Vec<u8>, Error> {
    let mut body = vec![0u8; table::MCFG_RESERVED_LEN];
    body.extend(table::mcfg_allocation(
        pci.ecam_base,
        0,
        pci.bus_start,
        pci.bus_end,
    ));
    own_table(*b"MCFG", MCFG_REVISION, "PVHMCFG", &body)
}

/// Read a per-guest config file and generate its tables.
pub fn generate_from_file(path: &Path, vcpus: Option<u32>) -> Result<GuestTables, Error> {
    let cfg = GuestConfig::load(path)?;
    generate(&Inputs::from_config(&cfg, vcpus)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swizzle() {
        assert_eq!(intx_gsi(0, 0, IntxPin::A), 16);
        assert_eq!(intx_gsi(0, 1, IntxPin::A), 17);
        assert_eq!(intx_gsi(0, 2, IntxPin::D), 17);
        assert_eq!(intx_gsi(0, 3, IntxPin::B), 16);
        assert_eq!(intx_gsi(24, 31, IntxPin::D), 24 + 16 + 2);
        assert_eq!(IntxPin::from_config_register(2), Some(IntxPin::B));
        assert_eq!(IntxPin::from_config_register(0), None);
    }

    fn cfg(text: &str) -> GuestConfig {
        GuestConfig::parse(text, Path::new("g.toml")).unwrap()
    }

    #[test]
    fn sections_select_tables() {
        let t = generate(&Inputs::from_config(&cfg("domid = 1\n"), None).unwrap()).unwrap();
        assert!(t.madt.is_none() && t.mcfg.is_none());
        assert!(table::checksum_ok(&t.ssdt));
        let t = generate(
            &Inputs::from_config(&cfg("domid = 1\nvcpus = 2\n[ioapic]\n[pci]\n"), None).unwrap(),
        )
        .unwrap();
        let madt = t.madt.unwrap();
        assert!(table::checksum_ok(&madt) && table::checksum_ok(t.mcfg.as_ref().unwrap()));
        assert_eq!(madt.len(), 36 + 8 + 12 + 2 * 8);
        assert_eq!(&madt[24..28], &1u32.to_le_bytes());
    }

    #[test]
    fn refuses_what_cannot_be_expressed() {
        let few_pins = cfg("domid = 1\n[ioapic]\npins = 16\n[pci]\n");
        assert!(generate(&Inputs::from_config(&few_pins, None).unwrap()).is_err());
        let hw = cfg("domid = 1\n[pm_trap]\nmode = \"hardware-domain\"\n");
        assert!(generate(&Inputs::from_config(&hw, None).unwrap()).is_err());
        let many = cfg("domid = 1\n[ioapic]\n");
        assert!(generate(&Inputs::from_config(&many, Some(129)).unwrap()).is_err());
    }
}
