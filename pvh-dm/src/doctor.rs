//! `pvh-dm doctor`: is this host ready for pvh-dm guests?

use std::path::{Path, PathBuf};

use xen_abi::XEN_DOMCTL_INTERFACE_VERSION_4_17 as DOMCTL_4_17;

use crate::exit;
use crate::plan;
use crate::xl::Xl;

/// What `doctor` is given.
pub struct Opts {
    /// `xl`.
    pub xl: Xl,
    /// sysfs root.
    pub sysfs: PathBuf,
    /// Runtime directory.
    pub run_dir: PathBuf,
    /// Guest configs to check too.
    pub configs: Vec<PathBuf>,
    /// Device-model directory.
    pub dm_dir: Option<PathBuf>,
    /// The IOMMU wrapper.
    pub iommu_wrapper: PathBuf,
}

struct Report {
    fails: usize,
}

impl Report {
    fn ok(&mut self, m: impl AsRef<str>) {
        println!("ok    {}", m.as_ref());
    }
    fn warn(&mut self, m: impl AsRef<str>) {
        println!("warn  {}", m.as_ref());
    }
    fn fail(&mut self, m: impl AsRef<str>) {
        self.fails += 1;
        println!("FAIL  {}", m.as_ref());
    }
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Run the checks; returns the exit code.
pub fn run(o: &Opts) -> i32 {
    let hv = o.sysfs.join("hypervisor");
    match read(&hv.join("type")) {
        Some(t) if t == "xen" => {}
        Some(t) => {
            println!(
                "pvh-dm doctor: not a Xen host ({} says \"{t}\"); pvh-dm needs a Xen 4.17 dom0",
                hv.join("type").display()
            );
            return exit::ERROR;
        }
        None => {
            println!(
                "pvh-dm doctor: no Xen hypervisor on this machine ({} does not exist); pvh-dm needs a Xen 4.17 dom0",
                hv.join("type").display()
            );
            return exit::ERROR;
        }
    }
    let mut r = Report { fails: 0 };
    let major = read(&hv.join("version/major")).unwrap_or_default();
    let minor = read(&hv.join("version/minor")).unwrap_or_default();
    let extra = read(&hv.join("version/extra")).unwrap_or_default();
    let version = format!("{major}.{minor}{extra}");
    if major == "4" && minor == "17" {
        r.ok(format!(
            "Xen {version}: the domctl interface {DOMCTL_4_17:#x} pci-host-bridge implements"
        ));
    } else {
        r.fail(format!(
            "Xen {version}: pci-host-bridge's passthrough domctls are Xen 4.17's (interface {DOMCTL_4_17:#x}); it will refuse \
             passthrough on this version (guests without devices still run)"
        ));
    }
    // The real test of the interface: one getdomaininfo domctl for dom0 with 4.17's
    // interface version, through ioreq-server's transport (which checks xen_version first).
    {
        use ioreq_server::transport::Transport as _;
        match ioreq_server::transport::xen::XenTransport::open(0) {
            Ok(mut t) => match t.passthrough(&xen_abi::passthrough::PtOp::GetDomainInfo) {
                Ok(pages) => r.ok(format!(
                    "domctl interface {DOMCTL_4_17:#x}: getdomaininfo(dom0) answered (max_pages {pages})"
                )),
                Err(e) => r.fail(format!(
                    "getdomaininfo(dom0) with domctl interface {DOMCTL_4_17:#x}: {e}"
                )),
            },
            Err(e) => r.fail(format!("hypervisor handles for the domctl check: {e}")),
        }
    }
    match read(Path::new("/proc/xen/capabilities")) {
        Some(c) if c.contains("control_d") => {
            r.ok("running in dom0 (/proc/xen/capabilities: control_d)")
        }
        Some(_) => r.fail("not dom0 (/proc/xen/capabilities has no control_d)"),
        None => r.warn("/proc/xen/capabilities unreadable (xenfs not mounted on /proc/xen?)"),
    }
    let info = match o.xl.info() {
        Ok(i) => {
            r.ok(format!(
                "xl info: xen_version {}, free_memory {} MiB",
                i.get("xen_version").map_or("?", String::as_str),
                i.get("free_memory").map_or("?", String::as_str)
            ));
            Some(i)
        }
        Err(e) => {
            r.fail(format!("xl info: {e}"));
            None
        }
    };
    if let Some(i) = &info {
        match crate::xl::iommu_enabled(i) {
            Some(true) => r.ok(format!(
                "IOMMU enabled (virt_caps: {})",
                i.get("virt_caps").map_or("", String::as_str)
            )),
            _ => {
                let dmesg = o.xl.dmesg().unwrap_or_default();
                let line = dmesg
                    .lines()
                    .find(|l| l.contains("I/O virtualisation"))
                    .map(|l| l.trim().to_string());
                r.fail(format!(
                    "no IOMMU: virt_caps has no hvm_directio ({}); {}: guests cannot pass devices through",
                    i.get("virt_caps").map_or("?", String::as_str),
                    line.unwrap_or_else(|| "xl dmesg has no 'I/O virtualisation' line".into())
                ))
            }
        }
    }
    for n in ["privcmd", "evtchn", "hypercall"] {
        let p = Path::new("/dev/xen").join(n);
        if p.exists() {
            r.ok(format!("{}", p.display()));
        } else {
            r.fail(format!(
                "{} missing (modprobe xen-{}; needed by every device model{})",
                p.display(),
                if n == "hypercall" { "privcmd" } else { n },
                if n == "hypercall" {
                    ", for passthrough"
                } else {
                    ""
                }
            ));
        }
    }
    match crate::xenstore::Xenstore::open(None) {
        Ok(x) => r.ok(format!("xenstore at {}", x.path().display())),
        Err(e) => r.fail(format!("{e} (supervision watches @releaseDomain)")),
    }
    for name in crate::dm::ALL {
        match crate::dm::find_binary(name, o.dm_dir.as_deref()) {
            Ok(p) => r.ok(format!("{name}: {}", p.display())),
            Err(e) => r.fail(e.to_string()),
        }
    }
    if o.iommu_wrapper.exists() {
        r.ok(format!(
            "IOMMU-context wrapper {}",
            o.iommu_wrapper.display()
        ));
    } else {
        r.warn(format!(
            "no IOMMU-context wrapper {} (build scripts/xen-rig/cdf-iommu.c): only guests without passthrough can start",
            o.iommu_wrapper.display()
        ));
    }
    candidates(&mut r, &o.sysfs, &o.run_dir);
    r.ok(format!(
        "guest windows: with the default ECAM window {:#x} a guest may have at most {} MiB of RAM (libxl fills RAM \
         below its PVH hole at {:#x})",
        pci_host_bridge::config::DEFAULT_ECAM_BASE,
        pci_host_bridge::config::DEFAULT_ECAM_BASE >> 20,
        plan::PVH_HOLE_START
    ));
    for c in &o.configs {
        let opts = plan::Options {
            xl_config: c.clone(),
            dm_config: None,
            sysfs: o.sysfs.clone(),
            run_dir: o.run_dir.clone(),
            dm_dir: o.dm_dir.clone(),
            iommu_wrapper: o.iommu_wrapper.clone(),
            no_acpi_upgrade: false,
            unbind_dom0_drivers: false,
            skip_iommu_check: true,
        };
        match plan::build(&opts) {
            Ok(p) => r.ok(format!(
                "{}: guest {} ({} MiB; device models {}; devices {})",
                c.display(),
                p.name,
                p.memory_bytes >> 20,
                p.dms.iter().map(|d| d.name).collect::<Vec<_>>().join(", "),
                if p.devices.is_empty() {
                    "none".into()
                } else {
                    p.devices.join(", ")
                }
            )),
            Err(e) => r.fail(format!("{}: {e}", c.display())),
        }
    }
    if r.fails > 0 {
        println!("pvh-dm doctor: {} check(s) failed", r.fails);
        exit::ERROR
    } else {
        exit::OK
    }
}

fn candidates(r: &mut Report, sysfs: &Path, run: &Path) {
    let dir = sysfs.join("bus/pci/devices");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        r.warn(format!("{} unreadable", dir.display()));
        return;
    };
    let used = plan::in_use_by_other_guests(run);
    let mut names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut n = 0;
    for a in names {
        let d = dir.join(&a);
        let drv = plan::bound_driver(sysfs, &a);
        let free = drv
            .as_deref()
            .is_none_or(|x| plan::PARKING_DRIVERS.contains(&x));
        if !free {
            continue;
        }
        // Bridges and host bridges are not candidates.
        let class = read(&d.join("class")).unwrap_or_default();
        if class.starts_with("0x0604") || class.starts_with("0x0600") {
            continue;
        }
        n += 1;
        let vf = std::fs::read_link(d.join("physfn"))
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()));
        let owner = used.iter().find(|(x, _, _)| *x == a);
        r.ok(format!(
            "candidate {a} [{}:{}] class {class} driver={}{}{}",
            read(&d.join("vendor"))
                .unwrap_or_default()
                .trim_start_matches("0x"),
            read(&d.join("device"))
                .unwrap_or_default()
                .trim_start_matches("0x"),
            drv.as_deref().unwrap_or("none"),
            vf.map(|p| format!(" (VF of {p})")).unwrap_or_default(),
            owner
                .map(|(_, d, nm)| format!(" (in use by guest {nm}, domid {d})"))
                .unwrap_or_default()
        ));
    }
    if n == 0 {
        r.warn("no host function is free for passthrough (each is bound to a dom0 driver)");
    }
}
