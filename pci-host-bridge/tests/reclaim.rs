//! `pci-host-bridge reclaim`: a bridge died (SIGKILL) and its domain was destroyed, so Xen
//! holds the function quarantined in dom_io with the MSI-X preparation of the dead bridge;
//! a fresh bridge for the same config hands it back to dom0 — and refuses while the domain
//! still exists.

mod common;

use common::*;
use ioreq_server::executor::fake::FakeChannel;
use ioreq_server::executor::PassthroughExecutor;
use pci_host_bridge::backend::snapshot::{DeviceEventKind, SnapshotDevice};
use pci_host_bridge::{HostDevice, PciAddress, PciConfig, PciDeviceConfig, PciHostBridge};
use xen_abi::passthrough::PtOp;

const VF_HOST: PciAddress = PciAddress::new(0, 3, 2, 2);
const VF_SBDF: u32 = 0x0312;
const DOMID: u16 = 7;

type Log = std::sync::Arc<std::sync::Mutex<Vec<PtOp>>>;

fn bridge(
    dead: bool,
) -> (
    PciHostBridge,
    pci_host_bridge::backend::snapshot::SnapshotHandle,
    Log,
) {
    let dev = SnapshotDevice::open_at(&testdata("sriov-nic-vf.json"), Some(VF_HOST)).unwrap();
    let handle = dev.handle();
    // The function's Bus Master is on, as the dead bridge's guest left it.
    handle.poke_config(4, &[0x06, 0x00]);
    let config = PciConfig {
        devices: vec![PciDeviceConfig {
            host: VF_HOST,
            ..dev_cfg(3, 0)
        }],
        ..Default::default()
    };
    let mut b =
        PciHostBridge::with_backends(&config, vec![Box::new(dev) as Box<dyn HostDevice>]).unwrap();
    // Xen after the domain died: getdomaininfo answers ESRCH (no domain with that id or
    // above), deassign from the dead domain ESRCH, from DOMID_IO it works.
    let (chan, log) = FakeChannel::with_rule(
        DOMID,
        Box::new(move |op| match op {
            PtOp::GetDomainInfo if dead => Err(libc::ESRCH),
            PtOp::GetDomainInfo => Ok(4096),
            PtOp::DeassignDevice {
                from_dom_io: false, ..
            } => Err(libc::ESRCH),
            _ => Ok(0),
        }),
    );
    b.set_executor(PassthroughExecutor::new(Box::new(chan)));
    (b, handle, log)
}

#[test]
fn reclaim_hands_a_quarantined_function_back() {
    let (mut b, handle, log) = bridge(true);
    b.reclaim().unwrap();
    let ops: Vec<PtOp> = log.lock().unwrap().clone();
    assert!(
        ops.contains(&PtOp::ReleaseMsix { sbdf: VF_SBDF }),
        "{ops:?}"
    );
    assert_eq!(
        ops.last(),
        Some(&PtOp::DeassignDevice {
            sbdf: VF_SBDF,
            from_dom_io: true
        })
    );
    assert!(
        !ops.iter().any(|o| matches!(
            o,
            PtOp::MemoryMapping { .. } | PtOp::UnmapPirq { .. } | PtOp::IomemPermission { .. }
        )),
        "nothing of the dead guest's is asked for: {ops:?}"
    );
    let ev: Vec<DeviceEventKind> = handle.events().into_iter().map(|e| e.kind).collect();
    let bme_off = ev
        .iter()
        .position(
            |e| matches!(e, DeviceEventKind::ConfigWrite { offset: 4, data } if data[0] & 4 == 0),
        )
        .expect("Bus Master turned off");
    let reset = ev
        .iter()
        .position(|e| matches!(e, DeviceEventKind::Reset))
        .expect("reset");
    assert!(bme_off < reset, "{ev:?}");
    assert!(
        matches!(ev.last(), Some(DeviceEventKind::DisableDecode)),
        "{ev:?}"
    );
}

#[test]
fn reclaim_refuses_while_the_domain_exists() {
    let (mut b, handle, log) = bridge(false);
    let e = b.reclaim().unwrap_err().to_string();
    assert!(e.contains("still exists"), "{e}");
    assert_eq!(*log.lock().unwrap(), vec![PtOp::GetDomainInfo]);
    assert!(handle.events().is_empty());
}
