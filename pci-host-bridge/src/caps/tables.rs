//! The capability IDs, the register-descriptor tables of the capabilities that are exposed
//! (PM, PCI Express, vendor-specific, the extended header and Device Serial Number; MSI and
//! MSI-X have theirs in [`crate::msi`] and [`crate::msix`]), and the name of every standard
//! and extended capability ID (for the status socket and the logs). Kept apart from the
//! exposure policy and list relinking in `mod.rs`: this file is tables, and its length is
//! their content (one descriptor per register, one name per ID).

#[cfg(doc)]
use crate::config_space::RegKind;
use crate::config_space::{cap_regs, Init, RegDesc};
use crate::msi;
use crate::msix;

/// Power Management capability ID.
pub const PM_ID: u8 = 0x01;
/// Vendor-specific capability ID.
pub const VENDOR_ID: u8 = 0x09;
/// PCI Express capability ID.
pub const PCIE_ID: u8 = 0x10;
/// Extended capability: Device Serial Number.
pub const EXT_DSN: u16 = 0x0003;
/// Extended capability: vendor-specific.
pub const EXT_VSEC: u16 = 0x000B;
/// Extended capability: ARI.
pub const EXT_ARI: u16 = 0x000E;
/// Extended capability: SR-IOV.
pub const EXT_SRIOV: u16 = 0x0010;
/// Extended capability: Resizable BAR.
pub const EXT_REBAR: u16 = 0x0015;

// The tables are `#[rustfmt::skip]`: one register per line, aligned as a table (offset, size,
// name, then the bits the guest owns: `.emu(emulated, read-only)`, `.pass`, `.w1c`, `.init`).

/// Power Management capability registers.
#[rustfmt::skip]
pub const PM: &[RegDesc] = &cap_regs!["pm";
    RegDesc::device_ro(0x02, 2, "pm_pmc")    .emu(0xF9C8, 0xF9C8),
    RegDesc::virt_rw  (0x04, 2, "pm_pmcsr")  .emu(0xFFF7, 0xFFF7 & !0x8103).w1c(0x8000),
    RegDesc::virt_ro  (0x06, 1, "pm_bse"),
    RegDesc::virt_ro  (0x07, 1, "pm_data"),
];
/// Length of the PM capability.
pub const PM_LEN: u16 = 8;

/// PCI Express capability registers (version 1 uses the first 0x24 bytes).
#[rustfmt::skip]
pub const PCIE: &[RegDesc] = &cap_regs!["pcie";
    RegDesc::device_ro(0x02, 2, "pcie_flags"),
    RegDesc::device_ro(0x04, 4, "pcie_devcap")  .emu(0x1000_0000, 0x1000_0000),
    RegDesc::virt_rw  (0x08, 2, "pcie_devctl")  .emu(0xFFFF, 0x8400).init(Init::Device(0x7FFF)),
    RegDesc::device_ro(0x0A, 2, "pcie_devsta")  .pass(0x000F).w1c(0x000F),
    RegDesc::device_ro(0x0C, 4, "pcie_lnkcap"),
    RegDesc::virt_rw  (0x10, 2, "pcie_lnkctl")  .emu(0xFFFF, 0xFC34).init(Init::Device(0xFFCF)),
    RegDesc::device_ro(0x12, 2, "pcie_lnksta"),
    RegDesc::device_ro(0x14, 4, "pcie_sltcap"),
    RegDesc::virt_rw  (0x18, 2, "pcie_sltctl")  .emu(0xFFFF, 0xE000).init(Init::Device(0x1FFF)),
    RegDesc::device_ro(0x1A, 2, "pcie_sltsta"),
    RegDesc::virt_ro  (0x1C, 2, "pcie_rootctl"),
    RegDesc::virt_ro  (0x1E, 2, "pcie_rootcap"),
    RegDesc::virt_ro  (0x20, 4, "pcie_rootsta"),
    RegDesc::device_ro(0x24, 4, "pcie_devcap2"),
    RegDesc::virt_rw  (0x28, 2, "pcie_devctl2") .emu(0xFFFF, 0xFFE0).init(Init::Device(0xFFFF)),
    RegDesc::device_ro(0x2A, 2, "pcie_devsta2"),
    RegDesc::device_ro(0x2C, 4, "pcie_lnkcap2"),
    RegDesc::virt_rw  (0x30, 2, "pcie_lnkctl2") .emu(0xFFFF, 0xE040).init(Init::Device(0xFFFF)),
    RegDesc::device_ro(0x32, 2, "pcie_lnksta2"),
    RegDesc::device_ro(0x34, 4, "pcie_sltcap2"),
    RegDesc::virt_ro  (0x38, 2, "pcie_sltctl2"),
    RegDesc::device_ro(0x3A, 2, "pcie_sltsta2"),
];

/// Length of a version-1 PCIe capability as described here.
pub const PCIE_V1_LEN: u16 = 0x24;
/// Length of a version-2 PCIe capability.
pub const PCIE_V2_LEN: u16 = 0x3C;

/// Vendor-specific capability header (the body is [`RegKind::Opaque`] bytes).
pub const VENDOR: &[RegDesc] = &cap_regs!["vendor";];

/// Extended capability header (ID, version and the relinked next pointer, all virtual).
pub const EXT_HEADER: RegDesc = RegDesc::virt_ro(0, 4, "ext_cap_header").init(Init::Builder);

/// Device Serial Number body.
#[rustfmt::skip]
pub const DSN_BODY: &[RegDesc] = &[
    RegDesc::device_ro(0x04, 4, "dsn_lo"),
    RegDesc::device_ro(0x08, 4, "dsn_hi"),
];

pub(super) fn name_std(id: u8) -> &'static str {
    match id {
        PM_ID => "power-management",
        0x02 => "agp",
        0x03 => "vpd",
        0x04 => "slot-id",
        msi::CAP_ID => "msi",
        0x06 => "compact-pci-hot-swap",
        0x07 => "pci-x",
        0x08 => "hypertransport",
        VENDOR_ID => "vendor-specific",
        0x0A => "debug-port",
        0x0C => "pci-hot-plug",
        0x0D => "bridge-subsystem-vendor-id",
        0x0E => "agp-8x",
        0x0F => "secure-device",
        PCIE_ID => "pci-express",
        msix::CAP_ID => "msi-x",
        0x12 => "sata",
        0x13 => "advanced-features",
        0x14 => "enhanced-allocation",
        0x15 => "flattening-portal-bridge",
        _ => "unknown",
    }
}

pub(super) fn name_ext(id: u16) -> &'static str {
    match id {
        0x0000 => "null",
        0x0001 => "aer",
        0x0002 | 0x0009 => "virtual-channel",
        EXT_DSN => "device-serial-number",
        0x0004 => "power-budgeting",
        0x0005 => "root-complex-link-declaration",
        0x0007 => "root-complex-event-collector",
        0x0008 => "mfvc",
        0x000A => "rcrb",
        EXT_VSEC => "vendor-specific",
        0x000D => "acs",
        EXT_ARI => "ari",
        0x000F => "ats",
        EXT_SRIOV => "sr-iov",
        0x0011 => "mr-iov",
        0x0012 => "multicast",
        0x0013 => "page-request",
        EXT_REBAR => "resizable-bar",
        0x0016 => "dpa",
        0x0017 => "tph",
        0x0018 => "ltr",
        0x0019 => "secondary-pcie",
        0x001B => "pasid",
        0x001D => "dpc",
        0x001E => "l1-pm-substates",
        0x001F => "ptm",
        0x0023 => "dvsec",
        0x0024 => "vf-resizable-bar",
        0x0025 => "data-link-feature",
        0x0026 => "physical-layer-16gt",
        0x0027 => "lane-margining",
        _ => "unknown",
    }
}
