//! The simulated hypervisor: domains, the device-model socket, and per-connection handling
//! of the sim transport's requests (ioreq_server::transport::sim_proto).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ioreq_server::seqpacket;
use tracing::info;

use crate::domain::{Domain, DomainReport};
use crate::guest::Vcpu;
use crate::host::{Host, HostPciDevice, Owner};

mod serve;

/// How a domain is created (the toolstack's choices that matter to passthrough).
#[derive(Clone, Debug)]
pub struct DomainConfig {
    /// vCPUs.
    pub vcpus: u32,
    /// Guest RAM in MiB (max_pages = RAM / 4 KiB).
    pub ram_mib: u64,
    /// `XEN_DOMCTL_CDF_iommu`: an IOMMU context, without which Xen refuses assignment
    /// (EOPNOTSUPP, xen/drivers/passthrough/iommu.c:621-622) and bind_pt_irq (ESRCH,
    /// xen/arch/x86/domctl.c:549-562). libxl never sets it for PVH (libxl_x86.c:829-835);
    /// the project's rig forces it.
    pub iommu: bool,
    /// `on_poweroff = "destroy"` (xl's default): a poweroff destroys the domain, and Xen
    /// quarantines its functions (pci.c:849-858). Off = "preserve": it stays shut down.
    pub destroy_on_poweroff: bool,
}

impl Default for DomainConfig {
    fn default() -> Self {
        DomainConfig {
            vcpus: 1,
            ram_mib: 16,
            iommu: true,
            destroy_on_poweroff: false,
        }
    }
}

/// The hypervisor's state: domains, and the host's PCI functions (owned by no domain).
pub(crate) struct Machine {
    pub domains: HashMap<u16, Domain>,
    pub host: Host,
}

impl std::ops::Deref for Machine {
    type Target = HashMap<u16, Domain>;
    fn deref(&self) -> &Self::Target {
        &self.domains
    }
}

impl std::ops::DerefMut for Machine {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.domains
    }
}

/// How the sim is set up.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Where device models connect.
    pub socket: PathBuf,
    /// How long a vCPU waits for an answer before it is reported stuck.
    pub ioreq_timeout: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            socket: PathBuf::from("/run/xen-sim/sim.sock"),
            ioreq_timeout: Duration::from_secs(5),
        }
    }
}

/// What the watchdog needs to wake one waiting vCPU: its deadline and the eventfd it sleeps
/// on (shared, so it cannot be closed under the watchdog).
#[derive(Default)]
pub(crate) struct Watch {
    pub wait: Mutex<Option<(Instant, Arc<OwnedFd>)>>,
}

pub(crate) struct Inner {
    pub domains: Mutex<Machine>,
    /// Waiting vCPUs, for the watchdog.
    pub watches: Mutex<Vec<std::sync::Weak<Watch>>>,
    /// Notified whenever a DM op or binding changes a domain (so tests can wait for setup).
    pub changed: Condvar,
    pub opts: SimOptions,
    stop: AtomicBool,
    next_conn: AtomicU64,
}

impl Inner {
    pub fn lock(&self) -> MutexGuard<'_, Machine> {
        self.domains.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running simulated hypervisor. Cloning shares it.
#[derive(Clone)]
pub struct Sim {
    pub(crate) inner: Arc<Inner>,
}

impl Sim {
    /// Listen on `opts.socket` and serve device models on background threads.
    pub fn start(opts: SimOptions) -> std::io::Result<Sim> {
        if let Some(d) = opts.socket.parent() {
            std::fs::create_dir_all(d)?;
        }
        let listener = seqpacket::listen(&opts.socket)?;
        let inner = Arc::new(Inner {
            domains: Mutex::new(Machine {
                domains: HashMap::new(),
                host: Host::default(),
            }),
            watches: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            opts,
            stop: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
        });
        let sim = Sim { inner };
        let s2 = sim.clone();
        std::thread::Builder::new()
            .name("xen-sim-accept".into())
            .spawn(move || s2.accept_loop(listener))?;
        let s3 = sim.clone();
        std::thread::Builder::new()
            .name("xen-sim-watchdog".into())
            .spawn(move || s3.watchdog())?;
        info!(socket = %sim.inner.opts.socket.display(), "xen-sim listening");
        Ok(sim)
    }

    /// The socket device models connect to.
    pub fn socket(&self) -> &Path {
        &self.inner.opts.socket
    }

    /// Create a domain with `vcpus` vCPUs and `ram_mib` MiB of guest RAM, with an IOMMU
    /// context, preserved when powered off.
    pub fn create_domain(&self, domid: u16, vcpus: u32, ram_mib: u64) -> std::io::Result<()> {
        self.create_domain_with(
            domid,
            &DomainConfig {
                vcpus,
                ram_mib,
                ..Default::default()
            },
        )
    }

    /// Create a domain as `cfg` says.
    pub fn create_domain_with(&self, domid: u16, cfg: &DomainConfig) -> std::io::Result<()> {
        let mut d = Domain::new(domid, cfg.vcpus, cfg.ram_mib << 20)?;
        d.iommu = cfg.iommu;
        d.destroy_on_poweroff = cfg.destroy_on_poweroff;
        self.inner.lock().insert(domid, d);
        Ok(())
    }

    /// Destroy a domain as `xl destroy` does: its pirqs are unmapped and its functions
    /// deassigned (to dom_io under quarantine); it stays in the sim for its report.
    pub fn destroy_domain(&self, domid: u16) {
        let mut g = self.inner.lock();
        let m = &mut *g;
        if let Some(d) = m.domains.get_mut(&domid) {
            d.destroy(&mut m.host);
        }
        drop(g);
        self.inner.changed.notify_all();
    }

    /// Tell the sim about a host PCI function: its BARs and MSI-X layout (what Xen reads from
    /// the device), and optionally files standing for its config space and BAR contents.
    /// It starts owned by the hardware domain.
    pub fn add_host_device(&self, dev: HostPciDevice) {
        self.inner.lock().host.add(dev);
    }

    /// Who owns host function `sbdf` now.
    pub fn host_device_owner(&self, sbdf: u32) -> Owner {
        self.inner.lock().host.get(sbdf).owner
    }

    /// Xen's `iommu_quarantine` (on by default).
    pub fn set_iommu_quarantine(&self, on: bool) {
        self.inner.lock().host.quarantine = on;
    }

    /// Whether the host has interrupt remapping (`iommu_intremap`, on by default).
    pub fn set_interrupt_remapping(&self, on: bool) {
        self.inner.lock().host.intremap = on;
    }

    /// Host function `sbdf` raises MSI-X entry (or MSI vector) `entry`. Delivered to its
    /// guest as Xen would deliver a bound pirq, or not (see
    /// [`DomainReport::device_interrupts`]); returns whether it was delivered.
    pub fn device_interrupt(&self, sbdf: u32, entry: u32) -> Result<(), String> {
        let mut g = self.inner.lock();
        let m = &mut *g;
        let owner = m.host.get(sbdf).owner;
        let r = match owner {
            Owner::Domain(id) => match m.domains.get_mut(&id) {
                Some(d) => d.device_interrupt(&m.host, sbdf, entry),
                None => Err("owner domain unknown".into()),
            },
            o => Err(format!("the function is not a guest's (owner {o:?})")),
        };
        if let Owner::Domain(id) = owner {
            if let Some(d) = m.domains.get_mut(&id) {
                d.report.device_interrupts.push(serde_json::json!({
                    "sbdf": sbdf, "entry": entry, "delivered": r.is_ok(),
                    "why": r.as_ref().err(),
                }));
            }
        }
        drop(g);
        self.inner.changed.notify_all();
        r
    }

    /// A handle to drive vCPU `vcpu` of `domid` as the guest.
    pub fn vcpu(&self, domid: u16, vcpu: u32) -> Vcpu {
        Vcpu::new(self.clone(), domid, vcpu)
    }

    /// What happened to the domain so far.
    pub fn report(&self, domid: u16) -> DomainReport {
        self.inner
            .lock()
            .get(&domid)
            .map(|d| d.report.clone())
            .unwrap_or_default()
    }

    /// Make the next `count` DM ops with number `op` fail with `errno` (fault injection).
    pub fn fail_next_dm_ops(&self, domid: u16, op: u32, count: u32, errno: i32) {
        if let Some(d) = self.inner.lock().get_mut(&domid) {
            d.fail_next.push((op, count, errno));
        }
    }

    /// Use AMD's extended config access (CF8 bits 24-27 = register bits 8-11).
    pub fn set_amd_extended_config(&self, domid: u16, on: bool) {
        if let Some(d) = self.inner.lock().get_mut(&domid) {
            d.amd_ext_cfg = on;
        }
    }

    /// Write guest RAM.
    pub fn write_guest(&self, domid: u16, gpa: u64, data: &[u8]) -> bool {
        self.inner
            .lock()
            .get(&domid)
            .is_some_and(|d| usize::try_from(gpa).is_ok_and(|g| d.ram_map.write_bytes(g, data)))
    }

    /// Read guest RAM.
    pub fn read_guest(&self, domid: u16, gpa: u64, out: &mut [u8]) -> bool {
        self.inner
            .lock()
            .get(&domid)
            .is_some_and(|d| usize::try_from(gpa).is_ok_and(|g| d.ram_map.read_bytes(g, out)))
    }

    /// Wait until `pred` holds for the domain (checked after every change), or time out.
    pub fn wait_for(
        &self,
        domid: u16,
        timeout: Duration,
        pred: impl Fn(&DomainView) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.inner.lock();
        loop {
            if let Some(d) = g.get(&domid) {
                if pred(&DomainView(d)) {
                    return true;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            g = self
                .inner
                .changed
                .wait_timeout(g, left.min(Duration::from_millis(50)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Wake every vCPU whose wait passed its deadline (it then reports itself stuck). A
    /// vCPU sleeps in a single blocking read, so the ioreq round trip costs no poll().
    fn watchdog(self) {
        while !self.inner.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
            let now = Instant::now();
            let mut ws = self.inner.watches.lock().unwrap_or_else(|p| p.into_inner());
            ws.retain(|w| w.strong_count() > 0);
            for w in ws.iter().filter_map(std::sync::Weak::upgrade) {
                let g = w.wait.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((deadline, fd)) = g.as_ref() {
                    if now >= *deadline {
                        let _ = nix::unistd::write(fd, &1u64.to_ne_bytes());
                    }
                }
            }
        }
    }

    /// Register a vCPU's watch.
    pub(crate) fn add_watch(&self, w: &Arc<Watch>) {
        self.inner
            .watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(w));
    }

    /// Stop accepting new device models.
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        let _ = std::fs::remove_file(&self.inner.opts.socket);
    }
}

/// A read-only view of a domain for [`Sim::wait_for`].
pub struct DomainView<'a>(&'a Domain);

impl DomainView<'_> {
    /// Number of enabled servers that registered at least one range.
    pub fn serving(&self) -> usize {
        self.0
            .servers
            .values()
            .filter(|s| s.enabled && s.ranges.iter().any(|r| !r.is_empty()))
            .count()
    }
    /// Whether every enabled server has bound all of its vCPU ports.
    pub fn all_bound(&self) -> bool {
        self.0.servers.values().filter(|s| s.enabled).all(|s| {
            s.vcpu_ports
                .iter()
                .all(|p| self.0.channels.get(p).is_some_and(|c| c.local.is_some()))
        })
    }
    /// Number of servers (enabled or not).
    pub fn servers(&self) -> usize {
        self.0.servers.len()
    }
    /// Whether the guest was shut down.
    pub fn shut_down(&self) -> bool {
        self.0.shut_down
    }
    /// Whether the domain was destroyed.
    pub fn destroyed(&self) -> bool {
        self.0.dead
    }
    /// The report so far.
    pub fn report(&self) -> &DomainReport {
        &self.0.report
    }
}
