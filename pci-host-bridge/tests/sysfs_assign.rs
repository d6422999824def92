//! The sysfs backend's assignment helpers against a fake sysfs tree in a temporary directory
//! (never the real /sys): dom0's driver unbound at start and the function re-probed when the
//! backend is dropped, uio_pci_generic kept and its /dev/uioN found for INTx, a VF
//! cross-checked against its PF's SR-IOV capability, decode on/off and reset through the
//! `enable` and `reset` files, and BAR forwarding through an mmap of `resourceN` (regular
//! files here) with exactly the guest's access width.
//!
//! Each test builds its own fake function with `fake_fn` (alike but for IDs, config bytes
//! and BARs), on purpose: the function a test needs stands in the test.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use pci_host_bridge::backend::sysfs::SysfsDevice;
use pci_host_bridge::{HostDevice, PciAddress};

mod common;
use common::TempDir;

/// A function directory with 4 KiB of config space (`config` bytes given sparse), IDs,
/// `resource` lines and a driver.
fn fake_fn(
    root: &Path,
    addr: &str,
    ids: (u16, u16),
    config: &[(usize, &[u8])],
    resource: &[(u64, u64, u64)],
    driver: Option<&str>,
) -> PathBuf {
    let d = root.join("bus/pci/devices").join(addr);
    std::fs::create_dir_all(&d).unwrap();
    let mut c = vec![0u8; 4096];
    for (o, b) in config {
        c[*o..*o + b.len()].copy_from_slice(b);
    }
    std::fs::write(d.join("config"), c).unwrap();
    std::fs::write(d.join("vendor"), format!("0x{:04x}\n", ids.0)).unwrap();
    std::fs::write(d.join("device"), format!("0x{:04x}\n", ids.1)).unwrap();
    let mut res = String::new();
    for i in 0..13 {
        let (s, e, f) = resource.get(i).copied().unwrap_or((0, 0, 0));
        res.push_str(&format!("0x{s:016x} 0x{e:016x} 0x{f:016x}\n"));
    }
    std::fs::write(d.join("resource"), res).unwrap();
    if let Some(drv) = driver {
        let dd = root.join("bus/pci/drivers").join(drv);
        std::fs::create_dir_all(&dd).unwrap();
        std::fs::write(dd.join("unbind"), "").unwrap();
        symlink(
            format!("../../../../bus/pci/drivers/{drv}"),
            d.join("driver"),
        )
        .unwrap();
    }
    std::fs::write(root.join("bus/pci/drivers_probe"), "").unwrap();
    d
}

const MEM64_PREF: u64 = 0x0014_220C;

#[test]
fn driver_unbound_at_start_and_reprobed_on_drop() {
    let t = TempDir::new("unbind");
    let root = &t.0;
    fake_fn(
        root,
        "0000:03:00.0",
        (0x8086, 0x1572),
        &[(0, &[0x86, 0x80, 0x72, 0x15])],
        &[(0xfa00_0000, 0xfa7f_ffff, MEM64_PREF)],
        Some("i40e"),
    );
    let addr: PciAddress = "0000:03:00.0".parse().unwrap();
    let mut d = SysfsDevice::open(root, addr, true).unwrap();
    assert_eq!(d.detach_host_driver().unwrap().as_deref(), Some("i40e"));
    let unbind = root.join("bus/pci/drivers/i40e/unbind");
    assert_eq!(std::fs::read_to_string(&unbind).unwrap(), "0000:03:00.0");
    assert_eq!(
        std::fs::read_to_string(root.join("bus/pci/drivers_probe")).unwrap(),
        ""
    );
    drop(d);
    assert_eq!(
        std::fs::read_to_string(root.join("bus/pci/drivers_probe")).unwrap(),
        "0000:03:00.0",
        "handed back to dom0"
    );
    // Opened read-only: nothing is unbound.
    let mut ro = SysfsDevice::open(root, addr, false).unwrap();
    std::fs::write(&unbind, "").unwrap();
    assert_eq!(ro.detach_host_driver().unwrap(), None);
    assert_eq!(std::fs::read_to_string(&unbind).unwrap(), "");
}

#[test]
fn uio_pci_generic_is_kept_and_gives_intx() {
    let t = TempDir::new("uio");
    let root = &t.0;
    let d = fake_fn(
        root,
        "0000:05:00.0",
        (0x10ec, 0x8139),
        &[(0x3D, &[1])],
        &[(0xc000, 0xc0ff, 0x0004_0101)],
        Some("uio_pci_generic"),
    );
    std::fs::create_dir_all(d.join("uio/uio3")).unwrap();
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::fs::write(root.join("dev/uio3"), [1, 0, 0, 0]).unwrap();
    let addr: PciAddress = "0000:05:00.0".parse().unwrap();
    let mut dev = SysfsDevice::open(root, addr, true).unwrap();
    assert_eq!(
        dev.detach_host_driver().unwrap(),
        None,
        "uio_pci_generic stays"
    );
    assert!(dev.intx_fd().is_none());
    dev.enable_intx("uio").unwrap();
    assert!(dev.intx_fd().is_some());
    assert_eq!(dev.intx_ack().unwrap(), 1);
    // Unmask: Interrupt Disable cleared through the config file (one byte at 0x05).
    std::fs::write(d.join("config"), {
        let mut c = std::fs::read(d.join("config")).unwrap();
        c[5] = 0x04;
        c
    })
    .unwrap();
    dev.intx_unmask().unwrap();
    assert_eq!(std::fs::read(d.join("config")).unwrap()[5], 0);
    // Another driver: "uio" is refused with a pointer to the set-up.
    let t2 = TempDir::new("uio2");
    fake_fn(&t2.0, "0000:06:00.0", (1, 2), &[], &[], Some("e1000e"));
    let mut other = SysfsDevice::open(&t2.0, "0000:06:00.0".parse().unwrap(), true).unwrap();
    let e = other.enable_intx("uio").unwrap_err().to_string();
    assert!(e.contains("uio_pci_generic"), "{e}");
}

#[test]
fn vf_cross_checked_against_its_pf() {
    let t = TempDir::new("vf");
    let root = &t.0;
    // The PF: SR-IOV at 0x100 with 8 VFs, offset 0x10, stride 1, VF device 0x154c, VF BAR0
    // 64-bit at 0x38_0000_0000 (resource line 7 covers 64 VFs x 64 KiB).
    let mut sriov = [0u8; 0x40];
    sriov[0..4].copy_from_slice(&0x0001_0010u32.to_le_bytes());
    sriov[8] = 0x19;
    sriov[0x0E] = 64;
    sriov[0x10] = 8;
    sriov[0x14] = 0x10;
    sriov[0x16] = 1;
    sriov[0x1A..0x1C].copy_from_slice(&0x154cu16.to_le_bytes());
    sriov[0x24..0x28].copy_from_slice(&0x0000_000Cu32.to_le_bytes());
    sriov[0x28..0x2C].copy_from_slice(&0x38u32.to_le_bytes());
    let mut pf_res = vec![(0xfa00_0000, 0xfa7f_ffff, MEM64_PREF)];
    pf_res.resize(7, (0, 0, 0));
    pf_res.push((
        0x38_0000_0000,
        0x38_0000_0000 + 64 * 0x1_0000 - 1,
        MEM64_PREF,
    ));
    let pf = fake_fn(
        root,
        "0000:03:00.0",
        (0x8086, 0x1572),
        &[(0, &[0x86, 0x80, 0x72, 0x15]), (0x100, &sriov)],
        &pf_res,
        None,
    );
    std::fs::write(pf.join("sriov_totalvfs"), "64\n").unwrap();
    let vf = fake_fn(
        root,
        "0000:03:02.2",
        (0x8086, 0x154c),
        &[(0, &[0xff, 0xff, 0xff, 0xff])],
        &[(0x38_0002_0000, 0x38_0002_ffff, MEM64_PREF)],
        None,
    );
    symlink("../0000:03:00.0", vf.join("physfn")).unwrap();
    let d = SysfsDevice::open(root, "0000:03:02.2".parse().unwrap(), false).unwrap();
    assert!(d.is_virtual_function());
    let v = d.derive_vf().unwrap();
    assert_eq!((v.index, v.vendor, v.device), (2, 0x8086, 0x154c));
    assert_eq!(
        v.bars[0],
        d.bar(0),
        "the kernel's BAR equals the derived one"
    );
}

const MEM32: u64 = 0x0004_0200;

#[test]
fn decode_and_reset_through_sysfs_files() {
    let t = TempDir::new("decode");
    let root = &t.0;
    let d = fake_fn(
        root,
        "0000:03:00.0",
        (0x8086, 0x1572),
        &[(0, &[0x86, 0x80, 0x72, 0x15])],
        &[(0xfa00_0000, 0xfa7f_ffff, MEM64_PREF)],
        None,
    );
    let addr: PciAddress = "0000:03:00.0".parse().unwrap();
    let mut dev = SysfsDevice::open(root, addr, true).unwrap();
    // No `reset` file: the function has no reset method.
    assert!(!dev.reset().unwrap());
    std::fs::write(d.join("reset"), "").unwrap();
    assert!(dev.reset().unwrap());
    assert_eq!(std::fs::read_to_string(d.join("reset")).unwrap(), "1");
    // pciback's pci_enable_device / pci_disable_device: sysfs `enable`.
    dev.enable_decode().unwrap();
    assert_eq!(std::fs::read_to_string(d.join("enable")).unwrap(), "1");
    dev.disable_decode().unwrap();
    assert_eq!(std::fs::read_to_string(d.join("enable")).unwrap(), "0");
    // Read-only: nothing is written.
    let mut ro = SysfsDevice::open(root, addr, false).unwrap();
    assert!(ro.enable_decode().is_err());
    assert!(ro.reset().is_err());
    assert_eq!(std::fs::read_to_string(d.join("reset")).unwrap(), "1");
}

/// Memory BARs are forwarded through an mmap of `resourceN` with one access of exactly the
/// guest's width; a sub-page BAR's first byte sits at its offset in the page the kernel maps.
#[test]
fn bar_forwarding_through_resource_mmap() {
    let t = TempDir::new("barmap");
    let root = &t.0;
    let d = fake_fn(
        root,
        "0000:04:00.0",
        (0x1234, 0x5678),
        &[],
        // BAR0: 8 KiB; BAR1: a 128-byte BAR at 0xf80 into its page.
        &[
            (0xfe00_0000, 0xfe00_1fff, MEM32),
            (0xfe00_2f80, 0xfe00_2fff, MEM32),
        ],
        None,
    );
    std::fs::write(d.join("resource0"), vec![0u8; 0x2000]).unwrap();
    std::fs::write(d.join("resource1"), vec![0u8; 0x1000]).unwrap();
    let addr: PciAddress = "0000:04:00.0".parse().unwrap();
    let mut dev = SysfsDevice::open(root, addr, true).unwrap();
    dev.write_bar(0, 0x10, &0xA1B2_C3D4u32.to_le_bytes())
        .unwrap();
    dev.write_bar(0, 0x1FF8, &0x1122_3344_5566_7788u64.to_le_bytes())
        .unwrap();
    let file = std::fs::read(d.join("resource0")).unwrap();
    assert_eq!(file[0x10..0x14], 0xA1B2_C3D4u32.to_le_bytes());
    assert_eq!(file[0x1FF8..0x2000], 0x1122_3344_5566_7788u64.to_le_bytes());
    let mut b2 = [0u8; 2];
    dev.read_bar(0, 0x12, &mut b2).unwrap();
    assert_eq!(u16::from_le_bytes(b2), 0xA1B2);
    let mut b1 = [0u8; 1];
    dev.read_bar(0, 0x13, &mut b1).unwrap();
    assert_eq!(b1[0], 0xA1);
    // Not naturally aligned, not a 1/2/4/8-byte access, or past the BAR: refused.
    assert!(dev.read_bar(0, 0x11, &mut b2).is_err());
    let mut b3 = [0u8; 3];
    assert!(dev.read_bar(0, 0x10, &mut b3).is_err());
    assert!(dev.write_bar(0, 0x12, &[1, 2, 3, 4]).is_err());
    assert!(dev.read_bar(0, 0x2000, &mut b1).is_err());
    // The sub-page BAR: byte 0 is at 0xf80 of the mapped page.
    dev.write_bar(1, 0x4, &0xBEEFu16.to_le_bytes()).unwrap();
    let file = std::fs::read(d.join("resource1")).unwrap();
    assert_eq!(file[0xF84..0xF86], 0xBEEFu16.to_le_bytes());
    let mut b4 = [0u8; 4];
    dev.read_bar(1, 0x4, &mut b4).unwrap();
    assert_eq!(u32::from_le_bytes(b4), 0xBEEF);
    assert!(
        dev.read_bar(1, 0x80, &mut b4).is_err(),
        "past the 128 bytes"
    );
}
