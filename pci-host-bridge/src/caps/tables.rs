//! The capability IDs, the register-descriptor tables of the capabilities that are exposed
//! (PM, PCI Express, vendor-specific, the extended header and Device Serial Number; MSI and
//! MSI-X have theirs in [`crate::msi`] and [`crate::msix`]), and the name of every standard
//! and extended capability ID (for the status socket and the logs). Kept apart from the
//! exposure policy and list relinking in `mod.rs`: this file is tables, and its length is
//! their content (one descriptor per register, one name per ID).

#[cfg(doc)]
use crate::config_space::RegKind;
use crate::config_space::{Init, RegDesc};
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

/// Power Management capability registers.
pub const PM: &[RegDesc] = &[
    RegDesc {
        offset: 0x00,
        size: 1,
        name: "pm_cap_id",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x01,
        size: 1,
        name: "pm_next",
        init: Init::Builder,
        ..RegDesc::VIRT_RO
    },
    RegDesc {
        offset: 0x02,
        size: 2,
        name: "pm_pmc",
        emu: 0xF9C8,
        ro: 0xF9C8,
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x04,
        size: 2,
        name: "pm_pmcsr",
        emu: 0xFFF7,
        ro: 0xFFF7 & !0x8103,
        w1c: 0x8000,
        ..RegDesc::VIRT_RW
    },
    RegDesc {
        offset: 0x06,
        size: 1,
        name: "pm_bse",
        ..RegDesc::VIRT_RO
    },
    RegDesc {
        offset: 0x07,
        size: 1,
        name: "pm_data",
        ..RegDesc::VIRT_RO
    },
];
/// Length of the PM capability.
pub const PM_LEN: u16 = 8;

/// PCI Express capability registers (version 1 uses the first 0x24 bytes).
pub const PCIE: &[RegDesc] = &[
    RegDesc {
        offset: 0x00,
        size: 1,
        name: "pcie_cap_id",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x01,
        size: 1,
        name: "pcie_next",
        init: Init::Builder,
        ..RegDesc::VIRT_RO
    },
    RegDesc {
        offset: 0x02,
        size: 2,
        name: "pcie_flags",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x04,
        size: 4,
        name: "pcie_devcap",
        emu: 0x1000_0000,
        ro: 0x1000_0000,
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x08,
        size: 2,
        name: "pcie_devctl",
        emu: 0xFFFF,
        ro: 0x8400,
        init: Init::Device(0x7FFF),
        ..RegDesc::VIRT_RW
    },
    RegDesc {
        offset: 0x0A,
        size: 2,
        name: "pcie_devsta",
        pass: 0x000F,
        w1c: 0x000F,
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x0C,
        size: 4,
        name: "pcie_lnkcap",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x10,
        size: 2,
        name: "pcie_lnkctl",
        emu: 0xFFFF,
        ro: 0xFC34,
        init: Init::Device(0xFFCF),
        ..RegDesc::VIRT_RW
    },
    RegDesc {
        offset: 0x12,
        size: 2,
        name: "pcie_lnksta",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x14,
        size: 4,
        name: "pcie_sltcap",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x18,
        size: 2,
        name: "pcie_sltctl",
        emu: 0xFFFF,
        ro: 0xE000,
        init: Init::Device(0x1FFF),
        ..RegDesc::VIRT_RW
    },
    RegDesc {
        offset: 0x1A,
        size: 2,
        name: "pcie_sltsta",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x1C,
        size: 2,
        name: "pcie_rootctl",
        ..RegDesc::VIRT_RO
    },
    RegDesc {
        offset: 0x1E,
        size: 2,
        name: "pcie_rootcap",
        ..RegDesc::VIRT_RO
    },
    RegDesc {
        offset: 0x20,
        size: 4,
        name: "pcie_rootsta",
        ..RegDesc::VIRT_RO
    },
    RegDesc {
        offset: 0x24,
        size: 4,
        name: "pcie_devcap2",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x28,
        size: 2,
        name: "pcie_devctl2",
        emu: 0xFFFF,
        ro: 0xFFE0,
        init: Init::Device(0xFFFF),
        ..RegDesc::VIRT_RW
    },
    RegDesc {
        offset: 0x2A,
        size: 2,
        name: "pcie_devsta2",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x2C,
        size: 4,
        name: "pcie_lnkcap2",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x30,
        size: 2,
        name: "pcie_lnkctl2",
        emu: 0xFFFF,
        ro: 0xE040,
        init: Init::Device(0xFFFF),
        ..RegDesc::VIRT_RW
    },
    RegDesc {
        offset: 0x32,
        size: 2,
        name: "pcie_lnksta2",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x34,
        size: 4,
        name: "pcie_sltcap2",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x38,
        size: 2,
        name: "pcie_sltctl2",
        ..RegDesc::VIRT_RO
    },
    RegDesc {
        offset: 0x3A,
        size: 2,
        name: "pcie_sltsta2",
        ..RegDesc::DEVICE_RO
    },
];

/// Length of a version-1 PCIe capability as described here.
pub const PCIE_V1_LEN: u16 = 0x24;
/// Length of a version-2 PCIe capability.
pub const PCIE_V2_LEN: u16 = 0x3C;

/// Vendor-specific capability header (the body is [`RegKind::Opaque`] bytes).
pub const VENDOR: &[RegDesc] = &[
    RegDesc {
        offset: 0x00,
        size: 1,
        name: "vendor_cap_id",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x01,
        size: 1,
        name: "vendor_next",
        init: Init::Builder,
        ..RegDesc::VIRT_RO
    },
];

/// Extended capability header (ID, version and the relinked next pointer, all virtual).
pub const EXT_HEADER: RegDesc = RegDesc {
    offset: 0,
    size: 4,
    name: "ext_cap_header",
    init: Init::Builder,
    ..RegDesc::VIRT_RO
};

/// Device Serial Number body.
pub const DSN_BODY: &[RegDesc] = &[
    RegDesc {
        offset: 0x04,
        size: 4,
        name: "dsn_lo",
        ..RegDesc::DEVICE_RO
    },
    RegDesc {
        offset: 0x08,
        size: 4,
        name: "dsn_hi",
        ..RegDesc::DEVICE_RO
    },
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
