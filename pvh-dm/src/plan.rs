//! Validation before anything changes: read the xl config and the guest TOML, check them
//! against each other and against the host, and decide what `create` will do.
//!
//! Order (every check before the first one that runs `xl`): the xl config (syntax, `type =
//! "pvh"`, `name`, no `pci = [...]`), the guest TOML and its sections (through pvh-acpi,
//! which also generates the tables), the host functions in sysfs, the kernel and ramdisk,
//! the memory layout, the device-model binaries and the IOMMU wrapper. Only then, and only
//! when the guest passes devices through, `xl info` for the IOMMU.

use std::path::{Path, PathBuf};

use ioreq_server::config::GuestConfig;
use pci_host_bridge::BackendKind;
use pvh_acpi::GuestTables;

use crate::kernel::{self, KernelKind};
use crate::xlcfg::XlConfig;

/// Why `create` refuses to go on (nothing has been changed).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

fn refuse<T>(m: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(m.into()))
}

/// libxl's MMIO hole for a PVH guest (no device model): it starts at `ACPI_INFO_PHYSICAL_ADDRESS`
/// = 0xFC000000 (tools/libs/light/libxl_dom.c `libxl__build_hvm`: the hole only covers the ACPI
/// info page, the LAPIC and the special pages); guest RAM fills everything below it.
pub const PVH_HOLE_START: u64 = 0xFC00_0000;

/// Drivers a host function may be bound to in dom0 without being "in use": the parking
/// drivers and the ones the bridge's backends work with.
pub const PARKING_DRIVERS: &[&str] = &[
    "pciback",
    "xen-pciback",
    "pci-stub",
    "vfio-pci",
    "uio_pci_generic",
];

/// The key in the xl config that may name the guest TOML (pvh-dm's own; xl ignores keys it
/// does not know).
pub const DM_CONFIG_KEY: &str = "pvh_dm_config";

/// What `create` is given.
#[derive(Clone, Debug)]
pub struct Options {
    /// The xl config.
    pub xl_config: PathBuf,
    /// The guest TOML (default: see [`dm_config_path`]).
    pub dm_config: Option<PathBuf>,
    /// sysfs root (normally `/sys`).
    pub sysfs: PathBuf,
    /// Runtime directory.
    pub run_dir: PathBuf,
    /// Directory holding the device-model binaries (default: next to pvh-dm, then `$PATH`).
    pub dm_dir: Option<PathBuf>,
    /// The IOMMU-context wrapper for `xl create` (`LD_PRELOAD`).
    pub iommu_wrapper: PathBuf,
    /// Deliver no ACPI tables through the initrd.
    pub no_acpi_upgrade: bool,
    /// Let the bridge unbind a dom0 driver from a host function.
    pub unbind_dom0_drivers: bool,
    /// Skip the `xl info` IOMMU check (the wrapper is still used).
    pub skip_iommu_check: bool,
}

/// A device model to start.
#[derive(Clone, Debug)]
pub struct DmPlan {
    /// Name.
    pub name: &'static str,
    /// Binary.
    pub binary: PathBuf,
}

/// Everything `create` needs, validated.
#[derive(Debug)]
pub struct Plan {
    /// Guest name.
    pub name: String,
    /// The parsed xl config.
    pub xl: XlConfig,
    /// Its path.
    pub xl_path: PathBuf,
    /// The guest TOML's path.
    pub dm_config: PathBuf,
    /// The guest TOML.
    pub guest: GuestConfig,
    /// The tables to deliver (`None` with --no-acpi-upgrade).
    pub tables: Option<GuestTables>,
    /// The ramdisk the xl config names.
    pub ramdisk: Option<PathBuf>,
    /// Device models in start order.
    pub dms: Vec<DmPlan>,
    /// Host functions passed through.
    pub devices: Vec<String>,
    /// The wrapper, when the domain needs an IOMMU context.
    pub iommu_wrapper: Option<PathBuf>,
    /// Things to tell the operator.
    pub warnings: Vec<String>,
    /// The guest's maximum memory in bytes.
    pub memory_bytes: u64,
}

/// The guest TOML for an xl config: `--dm-config` if given; else the xl config's
/// `pvh_dm_config = "FILE"` (relative to the xl config's directory); else the xl config's
/// path with `.toml` for its extension (`/etc/xen/web.cfg` -> `/etc/xen/web.toml`).
pub fn dm_config_path(xl_path: &Path, xl: &XlConfig, explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.into();
    }
    if let Some(v) = xl.get(DM_CONFIG_KEY).and_then(|v| v.as_str()) {
        let p = Path::new(v);
        return if p.is_absolute() {
            p.into()
        } else {
            xl_path.parent().unwrap_or(Path::new(".")).join(p)
        };
    }
    xl_path.with_extension("toml")
}

fn str_key(xl: &XlConfig, key: &str) -> Result<Option<String>, Refused> {
    match xl.get(key) {
        None => Ok(None),
        Some(v) => match v.as_str() {
            Some(s) => Ok(Some(s.to_string())),
            None => refuse(format!(
                "xl config line {}: {key} must be a string",
                xl.setting(key).map_or(0, |s| s.line)
            )),
        },
    }
}

fn num_key(xl: &XlConfig, key: &str) -> Result<Option<u64>, Refused> {
    match xl.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) => Ok(Some(n)),
            None => refuse(format!(
                "xl config line {}: {key} must be a number",
                xl.setting(key).map_or(0, |s| s.line)
            )),
        },
    }
}

/// The driver bound to host function `addr`, if any.
pub fn bound_driver(sysfs: &Path, addr: &str) -> Option<String> {
    let l = std::fs::read_link(sysfs.join("bus/pci/devices").join(addr).join("driver")).ok()?;
    Some(l.file_name()?.to_string_lossy().into_owned())
}

/// Step 1: the xl config alone.
pub fn check_xl(xl: &XlConfig) -> Result<(String, Option<String>), Refused> {
    if let Some(s) = xl.setting("pci") {
        return refuse(format!(
            "xl config line {}: `pci = [...]` is not allowed for a pvh-dm guest: it sends libxl down \
             the pciback/pcifront path (and xl 4.17 refuses passthrough for PVH). Remove it and list \
             the functions as [[pci.device]] in the guest TOML; pci-host-bridge passes them through.",
            s.line
        ));
    }
    match str_key(xl, "type")?.as_deref() {
        Some("pvh") => {}
        Some(t) => {
            return refuse(format!(
                "xl config: type = \"{t}\": pvh-dm runs PVH guests only (type = \"pvh\")"
            ))
        }
        None => {
            return refuse(
                "xl config: no `type`: xl would create a PV guest; pvh-dm needs type = \"pvh\"",
            )
        }
    }
    let name = match str_key(xl, "name")? {
        Some(n) if !n.is_empty() => n,
        _ => return refuse("xl config: no `name` (pvh-dm finds the domid by name)"),
    };
    if name.chars().any(|c| c.is_whitespace() || c == '/') {
        return refuse(format!(
            "xl config: name {name:?} contains whitespace or '/'"
        ));
    }
    Ok((name, str_key(xl, "kernel")?))
}

/// Build the plan (reads files and sysfs only; runs nothing).
pub fn build(opts: &Options) -> Result<Plan, Refused> {
    let mut warnings = Vec::new();
    let text = std::fs::read_to_string(&opts.xl_config).map_err(|e| {
        Refused(format!(
            "cannot read xl config {}: {e}",
            opts.xl_config.display()
        ))
    })?;
    let xl = XlConfig::parse(&text)
        .map_err(|e| Refused(format!("xl config {}: {e}", opts.xl_config.display())))?;
    let (name, kernel) = check_xl(&xl)?;

    // The guest TOML, and the tables from it.
    let dm_config = dm_config_path(&opts.xl_config, &xl, opts.dm_config.as_deref());
    if !dm_config.exists() {
        return refuse(format!(
            "no guest TOML {} (give --dm-config FILE, or `{DM_CONFIG_KEY} = \"FILE\"` in the xl config)",
            dm_config.display()
        ));
    }
    let guest = GuestConfig::load(&dm_config).map_err(|e| Refused(e.to_string()))?;
    if guest.transport == ioreq_server::transport::TransportKind::Sim {
        warnings.push(format!(
            "{}: transport = \"sim\": the device models serve xen-sim's domain (socket {}), not the domain xl creates",
            dm_config.display(),
            guest.sim.socket.display()
        ));
    }
    let vcpus = num_key(&xl, "vcpus")?.unwrap_or(1);
    let maxvcpus = num_key(&xl, "maxvcpus")?.unwrap_or(vcpus);
    if let Some(v) = guest.vcpus {
        if u64::from(v) != maxvcpus {
            warnings.push(format!(
                "{}: vcpus = {v} but the xl config gives the guest {maxvcpus} vCPUs; the tables list {maxvcpus}",
                dm_config.display()
            ));
        }
    }
    let maxvcpus = u32::try_from(maxvcpus)
        .ok()
        .filter(|v| (1..=128).contains(v))
        .ok_or_else(|| Refused(format!("xl config: {maxvcpus} vCPUs is out of range")))?;
    let inputs = pvh_acpi::Inputs::from_config(&guest, Some(maxvcpus))
        .map_err(|e| Refused(format!("{}: {e}", dm_config.display())))?;

    // Host functions.
    let mut devices = Vec::new();
    let mut passthrough = false;
    let mut intx = false;
    if let Some(pci) = &inputs.pci {
        let others = in_use_by_other_guests(&opts.run_dir);
        for d in &pci.devices {
            let addr = d.host.to_string();
            let what = format!("[[pci.device]] host = \"{addr}\" (slot {})", d.slot);
            if d.intx.is_some() {
                intx = true;
            }
            match d.backend {
                BackendKind::Snapshot => {
                    match &d.snapshot {
                        Some(s) if s.exists() => {}
                        Some(s) => {
                            return refuse(format!(
                                "{what}: snapshot file {} does not exist",
                                s.display()
                            ))
                        }
                        None => {
                            return refuse(format!(
                                "{what}: backend = \"snapshot\" needs snapshot = FILE"
                            ))
                        }
                    }
                    continue;
                }
                BackendKind::Sysfs | BackendKind::Vfio => {}
            }
            passthrough = true;
            let dir = opts.sysfs.join("bus/pci/devices").join(&addr);
            if !dir.exists() {
                return refuse(format!(
                    "{what}: no such host function ({} does not exist)",
                    dir.display()
                ));
            }
            if let Some((domid, name)) = others
                .iter()
                .find(|(a, _, _)| *a == addr)
                .map(|(_, d, n)| (d, n))
            {
                return refuse(format!(
                    "{what}: already passed through to guest {name} (domid {domid}, pvh-dm; `pvh-dm destroy {domid}` if that guest is stale)"
                ));
            }
            let drv = bound_driver(&opts.sysfs, &addr);
            match drv.as_deref() {
                None => {}
                Some(dr) if PARKING_DRIVERS.contains(&dr) => {}
                Some(dr) if opts.unbind_dom0_drivers => warnings.push(format!(
                    "{what}: dom0's driver {dr} is bound; pci-host-bridge will unbind it (--unbind-dom0-drivers)"
                )),
                Some(dr) => {
                    return refuse(format!(
                        "{what}: in use by dom0's driver {dr}. Unbind it (echo {addr} > {}/bus/pci/drivers/{dr}/unbind) \
                         or bind it to pciback/pci-stub, or pass --unbind-dom0-drivers to let pci-host-bridge unbind it",
                        opts.sysfs.display()
                    ))
                }
            }
            if d.backend == BackendKind::Sysfs
                && d.intx.as_deref() == Some("uio")
                && drv.as_deref() != Some("uio_pci_generic")
            {
                return refuse(format!(
                    "{what}: intx = \"uio\" needs the function bound to uio_pci_generic (it is bound to {})",
                    drv.as_deref().unwrap_or("no driver")
                ));
            }
            if d.backend == BackendKind::Vfio && drv.as_deref() != Some("vfio-pci") {
                return refuse(format!(
                    "{what}: backend = \"vfio\" needs the function bound to vfio-pci (it is bound to {})",
                    drv.as_deref().unwrap_or("no driver")
                ));
            }
            devices.push(addr);
        }
    }
    if intx && inputs.ioapic.is_none() {
        return refuse(format!(
            "{}: a [[pci.device]] forwards INTx but there is no [ioapic] section (the guest needs an IOAPIC for it)",
            dm_config.display()
        ));
    }
    if intx
        && inputs
            .pci
            .as_ref()
            .is_some_and(|p| p.ioapic_socket.is_none())
        && inputs.ioapic.as_ref().is_some_and(|i| i.socket.is_none())
    {
        return refuse(format!(
            "{}: a [[pci.device]] forwards INTx but neither [pci] ioapic_socket nor [ioapic] socket is set \
             (pci-host-bridge reaches the ioapic's pins through it)",
            dm_config.display()
        ));
    }
    if let Some(sock) = inputs.ioapic.as_ref().and_then(|i| i.socket.clone()) {
        if let Some((domid, name)) = ioapic_socket_users(&opts.run_dir)
            .into_iter()
            .find(|(p, _, _)| *p == sock)
            .map(|(_, d, n)| (d, n))
        {
            return refuse(format!(
                "{}: [ioapic] socket {} is already the ioapic socket of guest {name} (domid {domid}); give each \
                 guest its own (e.g. /run/pvh-dm/NAME-ioapic.sock)",
                dm_config.display(),
                sock.display()
            ));
        }
    }
    if inputs.ioapic.is_some() && !intx {
        warnings.push(format!(
            "{}: [ioapic] without a device that forwards INTx: ioapic is started anyway, because the MADT \
             declares the IOAPIC (drop [ioapic] to run without it)",
            dm_config.display()
        ));
    }

    // Kernel and ramdisk.
    let (kernel, kind) =
        match kernel {
            Some(k) => {
                let kind = kernel::classify(Path::new(&k))
                    .map_err(|e| Refused(format!("xl config: kernel {k}: {e}")))?;
                (k, kind)
            }
            // Without the table upgrade the kernel is xl's business (e.g. `firmware = ...`).
            None if opts.no_acpi_upgrade => (String::new(), KernelKind::Unknown),
            None => return refuse(
                "xl config: no `kernel`: the ACPI tables travel through a Linux kernel's initrd \
                 (a PVH guest boots its kernel directly; --no-acpi-upgrade leaves booting to xl)",
            ),
        };
    let ramdisk = str_key(&xl, "ramdisk")?.map(PathBuf::from);
    if let Some(r) = &ramdisk {
        if let Err(e) = std::fs::metadata(r) {
            return refuse(format!("xl config: ramdisk {}: {e}", r.display()));
        }
    }
    if !opts.no_acpi_upgrade {
        if !kind.is_linux() {
            return refuse(format!(
                "xl config: kernel {kernel} is not a Linux bzImage or vmlinux ({}): pvh-dm delivers the guest's \
                 ACPI tables through Linux's initrd table upgrade. For another guest OS the toolstack must add \
                 the tables (`pvh-acpi`); then pass --no-acpi-upgrade",
                match kind {
                    KernelKind::OtherElf => "an ELF without a Linux banner",
                    _ => "unknown format",
                }
            ));
        }
        if ramdisk.is_none() {
            return refuse(
                "xl config: no `ramdisk`: the guest's ACPI tables travel in front of the ramdisk (Linux's initrd \
                 table upgrade). Give the guest a ramdisk, or pass --no-acpi-upgrade and add the tables otherwise",
            );
        }
    }
    if let KernelKind::LinuxBzImage(Some(v)) = &kind {
        tracing::debug!(kernel = %kernel, version = %v, "guest kernel");
    }

    // Memory against the guest windows.
    let memory = num_key(&xl, "memory")?.unwrap_or(32);
    let maxmem = num_key(&xl, "maxmem")?.unwrap_or(memory).max(memory);
    let memory_bytes = maxmem.saturating_mul(1 << 20);
    if let Some(pci) = &inputs.pci {
        let mut windows = vec![("the ECAM window (ecam_base)", pci.ecam_base)];
        if pci.mmio_size > 0 {
            windows.push(("the BAR window (mmio_base)", pci.mmio_base));
        }
        let (what, lowest) = windows.iter().min_by_key(|w| w.1).copied().unwrap();
        if lowest < PVH_HOLE_START && memory_bytes > lowest {
            return refuse(format!(
                "xl config: {} = {maxmem} MiB puts guest RAM up to {:#x}, over {what} at {lowest:#x}: libxl leaves a PVH \
                 guest only the hole {PVH_HOLE_START:#x}-0xffffffff and fills everything below with RAM. Give the guest \
                 at most {} MiB, or move the windows",
                if maxmem > memory { "maxmem" } else { "memory" },
                memory_bytes.min(PVH_HOLE_START),
                lowest >> 20
            ));
        }
    }

    // Device models.
    let has_pci = inputs.pci.is_some();
    let mut dms = Vec::new();
    for name in crate::dm::ALL {
        let needed = match name {
            "ioapic" => inputs.ioapic.is_some(),
            "pci-host-bridge" => has_pci,
            _ => true,
        };
        if needed {
            let binary = crate::dm::find_binary(name, opts.dm_dir.as_deref())
                .map_err(|e| Refused(e.to_string()))?;
            dms.push(DmPlan { name, binary });
        }
    }

    let iommu_wrapper = if passthrough {
        if !opts.iommu_wrapper.exists() {
            return refuse(format!(
                "the guest passes devices through, so its domain needs an IOMMU context, which xl 4.17 never gives a PVH \
                 domain: the wrapper {} (built from scripts/xen-rig/cdf-iommu.c) does not exist (--iommu-wrapper PATH)",
                opts.iommu_wrapper.display()
            ));
        }
        Some(opts.iommu_wrapper.clone())
    } else {
        None
    };

    let tables = if opts.no_acpi_upgrade {
        None
    } else {
        let t = pvh_acpi::generate(&inputs)
            .map_err(|e| Refused(format!("{}: ACPI tables: {e}", dm_config.display())))?;
        warnings.extend(t.warnings.iter().cloned());
        Some(t)
    };

    for key in ["on_poweroff", "on_reboot", "on_crash", "on_watchdog"] {
        if let Some(v) = xl.get(key).and_then(|v| v.as_str()) {
            if v != "destroy" {
                warnings.push(format!(
                    "xl config: {key} = \"{v}\" is not acted on while pvh-dm supervises: it destroys the domain and exits \
                     with the reason (see `pvh-dm create --help`: exit codes)"
                ));
            }
        }
    }

    Ok(Plan {
        name,
        xl,
        xl_path: opts.xl_config.clone(),
        dm_config,
        guest,
        tables,
        ramdisk,
        dms,
        devices,
        iommu_wrapper,
        warnings,
        memory_bytes,
    })
}

/// Host functions in use by other pvh-dm guests: (address, domid, name).
pub fn in_use_by_other_guests(run: &Path) -> Vec<(String, u32, String)> {
    let mut out = Vec::new();
    for (_, st) in crate::runtime::list_with_staging(run) {
        if let Ok(st) = st {
            for d in st.devices {
                out.push((d, st.domid, st.name.clone()));
            }
        }
    }
    out
}

/// The `[ioapic] socket` paths of the other pvh-dm guests (from their guest TOMLs):
/// (path, domid, name).
pub fn ioapic_socket_users(run: &Path) -> Vec<(PathBuf, u32, String)> {
    let mut out = Vec::new();
    for (_, st) in crate::runtime::list_with_staging(run) {
        let Ok(st) = st else { continue };
        let Ok(g) = GuestConfig::load(&st.dm_config) else {
            continue;
        };
        if let Some(sock) = g
            .ioapic
            .as_ref()
            .and_then(|v| v.get("socket"))
            .and_then(|v| v.as_str())
        {
            out.push((PathBuf::from(sock), st.domid, st.name.clone()));
        }
    }
    out
}

/// A domain of this name must not exist yet (runs `xl domid NAME`).
pub fn check_name_free(xl: &crate::xl::Xl, name: &str) -> Result<(), Refused> {
    match xl.domid(name) {
        Ok(d) => refuse(format!(
            "a domain named {name} already exists (domid {d}){}",
            " (a pvh-dm guest whose supervisor was killed? `pvh-dm status`, `pvh-dm destroy`)"
        )),
        Err(_) => Ok(()),
    }
}

/// The IOMMU check (runs `xl info`; only for guests that pass devices through).
pub fn check_iommu(xl: &crate::xl::Xl) -> Result<(), Refused> {
    let info = xl
        .info()
        .map_err(|e| Refused(format!("checking for an IOMMU: {e}")))?;
    match crate::xl::iommu_enabled(&info) {
        Some(true) => Ok(()),
        Some(false) => refuse(format!(
            "the guest passes devices through but Xen has no IOMMU enabled (xl info virt_caps: {}; no hvm_directio). \
             Enable VT-d/AMD-Vi and check `xl dmesg | grep -i 'I/O virtualisation'`",
            info.get("virt_caps").map_or("", String::as_str)
        )),
        None => refuse("the guest passes devices through and `xl info` shows no virt_caps line: cannot tell whether Xen has an IOMMU"),
    }
}
