//! The host listing against a fake sysfs tree, the `[pci]` TOML section, and read-only
//! snapshots of this machine's devices.

mod common;
use common::TempDir;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use pci_host_bridge::backend::snapshot::{Snapshot, SnapshotDevice};
use pci_host_bridge::backend::sysfs::SysfsDevice;
use pci_host_bridge::list::{list_host_functions, render_tree};
use pci_host_bridge::pci_ids::PciIds;
use pci_host_bridge::{BackendKind, HostDevice, PciAddress, PciConfig};

fn fake_fn(
    root: &Path,
    addr: &str,
    vendor: u16,
    device: u16,
    class: u32,
    driver: Option<&str>,
    group: Option<u32>,
) -> PathBuf {
    let d = root.join("bus/pci/devices").join(addr);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("vendor"), format!("0x{vendor:04x}\n")).unwrap();
    std::fs::write(d.join("device"), format!("0x{device:04x}\n")).unwrap();
    std::fs::write(d.join("class"), format!("0x{class:06x}\n")).unwrap();
    std::fs::write(d.join("subsystem_vendor"), "0x8086\n").unwrap();
    std::fs::write(d.join("subsystem_device"), "0x000c\n").unwrap();
    if let Some(drv) = driver {
        symlink(
            format!("../../../../bus/pci/drivers/{drv}"),
            d.join("driver"),
        )
        .unwrap();
    }
    if let Some(g) = group {
        symlink(
            format!("../../../../kernel/iommu_groups/{g}"),
            d.join("iommu_group"),
        )
        .unwrap();
    }
    d
}

#[test]
fn lists_pf_vf_tree_with_names() {
    let t = TempDir::new("list");
    let root = &t.0;
    let pf = fake_fn(
        root,
        "0000:03:00.0",
        0x8086,
        0x10fb,
        0x020000,
        Some("ixgbe"),
        Some(12),
    );
    std::fs::write(pf.join("sriov_totalvfs"), "63\n").unwrap();
    std::fs::write(pf.join("sriov_numvfs"), "2\n").unwrap();
    for (i, vf) in ["0000:03:10.0", "0000:03:10.2"].iter().enumerate() {
        let d = fake_fn(
            root,
            vf,
            0x8086,
            0x10ed,
            0x020000,
            Some(if i == 0 { "pciback" } else { "ixgbevf" }),
            Some(20 + i as u32),
        );
        symlink("../0000:03:00.0", d.join("physfn")).unwrap();
        symlink(format!("../{vf}"), pf.join(format!("virtfn{i}"))).unwrap();
    }
    // An audio function of a vendor no database names, with a class code none names either:
    // the listing falls back to hex for both.
    let names = PciIds::embedded();
    let unknown_vendor = (0..=u16::MAX)
        .rev()
        .find(|&v| names.vendor(v).is_none())
        .unwrap();
    let unknown_class = (0..=0xffu32)
        .map(|c| c << 16)
        .find(|&c| names.class(c).is_none())
        .unwrap();
    fake_fn(
        root,
        "0000:00:1f.3",
        unknown_vendor,
        0x0001,
        unknown_class,
        None,
        None,
    );
    std::fs::create_dir_all(root.join("bus/pci/devices/not-a-device")).unwrap();

    // The embedded database only (not this machine's pci.ids, which may differ).
    let configured = ["0000:03:10.2".parse::<PciAddress>().unwrap()];
    let list = list_host_functions(root, Some(&names), &configured).unwrap();
    assert_eq!(list.len(), 2);
    let odd = &list[0];
    assert_eq!(odd.address.to_string(), "0000:00:1f.3");
    assert!(!odd.assignable && odd.driver.is_none());
    assert_eq!(
        (&odd.vendor_name, &odd.device_name, &odd.class_name),
        (&None, &None, &None)
    );
    let pf = &list[1];
    assert_eq!(pf.iommu_group, Some(12));
    assert_eq!(pf.driver.as_deref(), Some("ixgbe"));
    assert_eq!(pf.sriov.map(|s| (s.num_vfs, s.total_vfs)), Some((2, 63)));
    assert_eq!(pf.virtual_functions.len(), 2);
    // Well-known IDs resolve through the embedded pci.ids (when built in).
    let embedded = cfg!(feature = "pci-ids");
    let vendor = pf.vendor_name.clone().unwrap_or_default();
    if embedded {
        assert!(vendor.contains("Intel"), "{vendor}");
        assert!(pf.device_name.as_deref().unwrap().contains("82599"));
        assert!(pf.class_name.as_deref().unwrap().contains("Ethernet"));
        assert!(pf.virtual_functions[0]
            .device_name
            .as_deref()
            .unwrap()
            .contains("Virtual Function"));
    } else {
        assert_eq!(pf.vendor_name, None);
    }
    assert_eq!(
        pf.virtual_functions[0].assigned.as_deref(),
        Some("driver pciback")
    );
    assert_eq!(pf.virtual_functions[1].assigned.as_deref(), Some("config"));
    assert!(pf.virtual_functions.iter().all(|v| v.is_virtual_function));

    let json = serde_json::to_value(&list).unwrap();
    assert_eq!(json[1]["virtual_functions"][0]["address"], "0000:03:10.0");
    let tree = render_tree(&list);
    if embedded {
        assert_eq!(json[1]["vendor_name"], vendor);
        assert!(
            tree.contains(&format!("0000:03:00.0 8086:10fb {vendor} ")),
            "{tree}"
        );
    }
    assert!(tree.contains("├── 0000:03:10.0"), "{tree}");
    assert!(tree.contains("└── 0000:03:10.2"), "{tree}");
    assert!(
        tree.contains(&format!(
            "0000:00:1f.3 {unknown_vendor:04x}:0001 [class {unknown_class:06x}] driver=none not assignable"
        )),
        "{tree}"
    );
    // Without names: IDs only, no failure.
    let bare = list_host_functions(root, None, &[]).unwrap();
    assert!(bare.iter().all(|f| f.vendor_name.is_none()));
    assert!(render_tree(&bare).contains("8086:10fb [class 020000]"));
}

#[test]
fn lists_this_machine_read_only() {
    let ids = PciIds::load_default();
    match list_host_functions(Path::new("/sys"), Some(&ids), &[]) {
        Ok(list) => eprintln!("{}", render_tree(&list)),
        Err(e) => eprintln!("no sysfs here: {e}"),
    }
}

#[test]
fn pci_section_from_toml() {
    let text = r#"
        ecam_base = 0xE0000000
        bus_end = 3
        mmio64_base = 0x8000000000
        mmio64_size = 0x1000000000

        [[device]]
        host = "0000:03:10.1"
        slot = 2

        [[device]]
        host = "03:10.3"
        slot = 2
        function = 1
        backend = "snapshot"
        snapshot = "vf.json"
    "#;
    let c: PciConfig = toml::from_str(text).unwrap();
    c.validate().unwrap();
    assert_eq!(c.ecam_base, 0xE000_0000);
    assert_eq!((c.bus_start, c.bus_end), (0, 3));
    assert_eq!(c.mmio_base, 0xF100_0000);
    assert_eq!(c.host_bridge_vendor, 0x1b36);
    assert_eq!(c.devices[0].host, PciAddress::new(0, 3, 0x10, 1));
    assert_eq!(c.devices[0].backend, BackendKind::Sysfs);
    assert_eq!(c.devices[1].function, 1);
    assert_eq!(c.devices[1].snapshot.as_deref(), Some(Path::new("vf.json")));
    let empty: PciConfig = toml::from_str("").unwrap();
    assert_eq!(empty, PciConfig::default());
    assert!(toml::from_str::<PciConfig>("ecam = 1").is_err());
    assert!(
        toml::from_str::<PciConfig>("[[device]]\nhost = \"0000:03:10.1\"\nslot = 2\nbar = 1")
            .is_err()
    );
    assert!(toml::from_str::<PciConfig>("[[device]]\nhost = \"zz\"\nslot = 2").is_err());
}

#[test]
fn bridge_from_config_with_snapshot_backend() {
    let toml_text = format!(
        "[[device]]\nhost = \"0000:03:00.0\"\nslot = 3\nbackend = \"snapshot\"\nsnapshot = \"{}\"\n",
        common::testdata("intel-82599-like-pf.json").display()
    );
    let c: PciConfig = toml::from_str(&toml_text).unwrap();
    let b = pci_host_bridge::PciHostBridge::from_config(&c).unwrap();
    let f = b.function(PciAddress::new(0, 0, 3, 0)).unwrap();
    assert_eq!(f.device().ids(), (0x8086, 0x10fb));
}

#[test]
fn snapshots_of_this_machine_round_trip_read_only() {
    let Ok(rd) = std::fs::read_dir("/sys/bus/pci/devices") else {
        return;
    };
    let t = TempDir::new("snap");
    for e in rd.flatten() {
        let Ok(addr) = e.file_name().to_string_lossy().parse::<PciAddress>() else {
            continue;
        };
        let Ok(snap) = Snapshot::from_sysfs(Path::new("/sys"), addr) else {
            continue;
        };
        // The sysfs backend opened read-only refuses writes.
        let mut ro = SysfsDevice::open(Path::new("/sys"), addr, false).unwrap();
        assert!(ro.write_config(0x3C, &[0]).is_err());
        let mut raw = vec![0u8; ro.config_len()];
        ro.read_config(0, &mut raw).unwrap();
        let path = t.0.join(format!("{addr}.json"));
        snap.save(&path).unwrap();
        let back = SnapshotDevice::open(&path).unwrap();
        let mut copy = vec![0u8; back.config_len()];
        back.read_config(0, &mut copy).unwrap();
        assert_eq!(copy, raw, "{addr}");
        for i in 0..6 {
            assert_eq!(back.bar(i), ro.bar(i), "{addr} BAR{i}");
        }
        assert_eq!(back.ids(), ro.ids());
    }
}

/// Regenerates testdata/real/*.json from this machine (read-only). Run explicitly:
/// `PCI_HOST_BRIDGE_SNAPSHOT_DIR=pci-host-bridge/testdata/real cargo test -p pci-host-bridge
/// --test list_and_config -- --ignored regenerate`.
#[test]
#[ignore]
fn regenerate_real_snapshots() {
    let Ok(dir) = std::env::var("PCI_HOST_BRIDGE_SNAPSHOT_DIR") else {
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir("/sys/bus/pci/devices").unwrap().flatten() {
        let Ok(addr) = e.file_name().to_string_lossy().parse::<PciAddress>() else {
            continue;
        };
        if let Ok(snap) = Snapshot::from_sysfs(Path::new("/sys"), addr) {
            snap.save(
                &Path::new(&dir).join(format!("{}.json", addr.to_string().replace(':', "_"))),
            )
            .unwrap();
        }
    }
}
