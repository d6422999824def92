//! The host's PCI functions as Xen 4.17 sees them: who owns each one (the hardware domain, a
//! guest, or `dom_io`, Xen's quarantine), where its BARs and MSI-X table are, its MSI-X
//! bookkeeping (`struct arch_msix`: `used_entries`, `table.first`), and, when the test or demo
//! provides them, files standing for the physical device: its config space (what Xen reads
//! with `pci_conf_read*`, and what dom0's device model writes through sysfs) and its BAR
//! contents (what a guest reaches through a p2m mapping).
//!
//! Citations are to branch `stable-4.17` of xen-project/xen.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use serde::Serialize;

/// `PCI_MSIX_FLAGS_ENABLE` / `PCI_MSIX_FLAGS_MASKALL` in MSI-X Message Control.
pub const MSIX_ENABLE: u16 = 0x8000;
/// Function Mask.
pub const MSIX_MASKALL: u16 = 0x4000;
/// `PCI_MSI_FLAGS_ENABLE` in MSI Message Control.
pub const MSI_ENABLE: u16 = 0x0001;

/// One memory BAR of a host function: its host physical base and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HostBar {
    /// Host physical address (what `read_pci_mem_bar()` returns).
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Where a function's MSI-X table and PBA live (the MSI-X capability's Table/PBA
/// Offset/BIR registers) and how many entries it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MsixLayout {
    /// Table Size + 1.
    pub entries: u16,
    /// Table BIR.
    pub table_bir: u8,
    /// Table offset inside that BAR.
    pub table_offset: u32,
    /// PBA BIR.
    pub pba_bir: u8,
    /// PBA offset inside that BAR.
    pub pba_offset: u32,
}

/// What the sim knows about one host PCI function (registered with
/// [`crate::Sim::add_host_device`]). A function nobody registered is still known to the sim
/// (Xen knows every function dom0 reported), with unknown BARs: then the checks that need
/// them are skipped, and the op record says so.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HostPciDevice {
    /// seg << 16 | bus << 8 | devfn.
    pub sbdf: u32,
    /// Memory BARs by index (for a VF: what Xen derives from its PF's SR-IOV capability).
    pub bars: [Option<HostBar>; 6],
    /// The MSI-X capability, if the function has one.
    pub msix: Option<MsixLayout>,
    /// Multiple Message Capable of the MSI capability, as a vector count (`msi_maxvec`).
    pub msi_maxvec: Option<u32>,
    /// An SR-IOV virtual function (Xen takes memory decode from the PF then, which the sim
    /// does not model: the decode check is skipped).
    pub is_vf: bool,
    /// A file holding the function's config space bytes (256 or 4096), standing for the
    /// physical device: the sim reads MSI/MSI-X Message Control and the Command register
    /// from it; a device model's host backend writes it (the way dom0 writes sysfs
    /// `config`). Without it the sim cannot see the device's Enable bits.
    pub config_file: Option<PathBuf>,
    /// Files holding BAR contents by index (offset 0 = the BAR's first byte): guest accesses
    /// through a p2m mapping read and write them. Without one such accesses read 0.
    pub bar_files: [Option<PathBuf>; 6],
}

impl HostPciDevice {
    /// The VF of `pci-host-bridge/testdata/sriov-nic-vf.json` as Xen sees it (0000:03:02.2,
    /// from the snapshot's description and its PF): BAR0 at 0x38_0002_0000 (64 KiB), BAR3 at
    /// 0x38_0010_8000 (16 KiB); MSI-X with 5 entries, the table at BAR3 + 0, the PBA at
    /// BAR3 + 0x2000. The demo and the cross-process tests pass it through.
    pub fn sriov_nic_vf() -> Self {
        let mut bars = [None; 6];
        bars[0] = Some(HostBar {
            base: 0x38_0002_0000,
            size: 0x1_0000,
        });
        bars[3] = Some(HostBar {
            base: 0x38_0010_8000,
            size: 0x4000,
        });
        HostPciDevice {
            sbdf: 0x0312,
            bars,
            msix: Some(MsixLayout {
                entries: 5,
                table_bir: 3,
                table_offset: 0,
                pba_bir: 3,
                pba_offset: 0x2000,
            }),
            is_vf: true,
            ..Default::default()
        }
    }

    /// The MSI-X table's host address by Xen's formula: `read_pci_mem_bar(bir)` plus the
    /// table offset (xen/arch/x86/msi.c:846-860).
    pub fn msix_table_paddr(&self) -> Option<u64> {
        let m = self.msix?;
        let bar = self.bars.get(usize::from(m.table_bir)).copied().flatten()?;
        Some(bar.base + u64::from(m.table_offset))
    }

    /// Read `n` bytes of config space from the file, if there is one.
    pub fn read_config(&self, offset: u64, n: usize) -> Option<Vec<u8>> {
        let f = std::fs::File::open(self.config_file.as_ref()?).ok()?;
        let mut b = vec![0u8; n];
        f.read_exact_at(&mut b, offset).ok()?;
        Some(b)
    }

    fn read16(&self, offset: u64) -> Option<u16> {
        self.read_config(offset, 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    /// `pci_find_cap_offset`: walk the capability list in the config file.
    pub fn find_cap(&self, id: u8) -> Option<u64> {
        let cfg = self.read_config(0, 256)?;
        if cfg[6] & 0x10 == 0 {
            return None;
        }
        let mut p = usize::from(cfg[0x34] & 0xFC);
        for _ in 0..48 {
            if p < 0x40 {
                return None;
            }
            if cfg[p] == id {
                return Some(p as u64);
            }
            p = usize::from(cfg[p + 1] & 0xFC);
        }
        None
    }

    /// MSI-X Message Control of the physical device, if the sim can see it.
    pub fn msix_control(&self) -> Option<u16> {
        self.read16(self.find_cap(0x11)? + 2)
    }

    /// MSI Message Control of the physical device, if the sim can see it.
    pub fn msi_control(&self) -> Option<u16> {
        self.read16(self.find_cap(0x05)? + 2)
    }

    /// `memory_decoded()` (xen/arch/x86/msi.c:128-139): the Command register's Memory Space
    /// bit. `None` when the sim cannot tell (no config file, or a VF, whose decode Xen takes
    /// from the PF's SR-IOV control).
    pub fn memory_decoded(&self) -> Option<bool> {
        if self.is_vf {
            return None;
        }
        self.read16(4).map(|c| c & 2 != 0)
    }
}

/// Who owns a host function (`pdev->domain`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    /// The hardware domain (dom0).
    Hardware,
    /// A guest.
    Domain(u16),
    /// `dom_io`: quarantined.
    DomIo,
}

/// The sim's state of one host function.
#[derive(Clone, Debug, Serialize)]
pub struct PhysDev {
    /// What is known about it.
    pub info: HostPciDevice,
    /// Whether it was registered (else its BARs and MSI-X layout are unknown).
    pub registered: bool,
    /// `pdev->domain`.
    pub owner: Owner,
    /// `pdev->quarantine`: set when assigned to dom_io (pci.c:1482-1484), cleared when it
    /// returns to the hardware domain (pci.c:878-879).
    pub quarantine: bool,
    /// `msix->used_entries`: one per mapped MSI-X entry, plus one for `prepare_msix`
    /// (msi.c:967; pci_prepare_msix, msi.c:1142-1165).
    pub msix_used_entries: u32,
    /// `msix->table.first`, the table's first host frame; 0 = not located (then a domU's
    /// MSI-X map_pirq fails with ENODATA, msi.c:881-886).
    pub msix_table_first: u64,
}

/// Every host function the sim knows, and the IOMMU settings of the host.
pub struct Host {
    /// By sbdf.
    pub devices: BTreeMap<u32, PhysDev>,
    /// `iommu_quarantine` (Kconfig IOMMU_QUARANTINE_BASIC is the default,
    /// xen/drivers/passthrough/Kconfig:46): deassigned devices go to dom_io
    /// (pci.c:849-858).
    pub quarantine: bool,
    /// `iommu_intremap`: without interrupt remapping, multi-vector MSI is refused
    /// (xen/arch/x86/irq.c:2923-2924).
    pub intremap: bool,
}

impl Default for Host {
    fn default() -> Self {
        Host {
            devices: BTreeMap::new(),
            quarantine: true,
            intremap: true,
        }
    }
}

impl Host {
    /// Register (or replace the facts of) a function; it starts owned by the hardware
    /// domain.
    pub fn add(&mut self, info: HostPciDevice) {
        let sbdf = info.sbdf;
        match self.devices.get_mut(&sbdf) {
            Some(d) => {
                d.info = info;
                d.registered = true;
            }
            None => {
                self.devices.insert(
                    sbdf,
                    PhysDev {
                        info,
                        registered: true,
                        owner: Owner::Hardware,
                        quarantine: false,
                        msix_used_entries: 0,
                        msix_table_first: 0,
                    },
                );
            }
        }
    }

    /// The function at `sbdf`; one nobody registered is created owned by the hardware domain
    /// with unknown facts (every function dom0 reported is known to Xen).
    pub fn get(&mut self, sbdf: u32) -> &mut PhysDev {
        self.devices.entry(sbdf).or_insert_with(|| PhysDev {
            info: HostPciDevice {
                sbdf,
                ..Default::default()
            },
            registered: false,
            owner: Owner::Hardware,
            quarantine: false,
            msix_used_entries: 0,
            msix_table_first: 0,
        })
    }

    /// The registered BAR holding host address `addr`, with its file: (file, offset).
    pub fn bar_backing(&self, addr: u64) -> Option<(PathBuf, u64)> {
        self.devices.values().find_map(|d| {
            d.info.bars.iter().enumerate().find_map(|(i, b)| {
                let b = (*b)?;
                if addr >= b.base && addr - b.base < b.size {
                    Some((d.info.bar_files[i].clone()?, addr - b.base))
                } else {
                    None
                }
            })
        })
    }

    /// Whether host frame `mfn` is in `mmio_ro_ranges` (an MSI-X table or PBA page of a
    /// function with MSI-X in use, msi.c:939-945): Xen maps such frames only 4K at a time
    /// (set_mmio_p2m_entry, p2m.c:1144-1150).
    pub fn mmio_ro(&self, mfn: u64, nr: u64) -> bool {
        self.devices.values().any(|d| {
            if d.msix_used_entries == 0 || d.msix_table_first == 0 {
                return false;
            }
            let Some(m) = d.info.msix else { return false };
            let first = d.msix_table_first;
            let last = (first * 4096 + u64::from(m.entries) * 16 - 1) / 4096;
            mfn <= last && first < mfn + nr
        })
    }
}

/// Read `buf.len()` bytes of a BAR file at `offset` (zeros where the file is short).
pub fn read_file_at(path: &std::path::Path, offset: u64, buf: &mut [u8]) {
    buf.fill(0);
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.read_at(buf, offset);
    }
}

/// Write `data` into a BAR file at `offset`.
pub fn write_file_at(path: &std::path::Path, offset: u64, data: &[u8]) {
    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) {
        let _ = f.write_all_at(data, offset);
    }
}
