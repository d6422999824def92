//! A whole guest session of the bridge with every host access and every passthrough
//! hypercall going through the broker (over a real socketpair, the broker in another thread):
//! the bridge's start, pseudo-random guest access sequences and its stop must need nothing the
//! broker refuses, every invariant of `pci_host_bridge_testing` must still hold (checked on
//! the devices and the fake Xen the broker holds), and a worker that is gone without its
//! teardown must be handed back by the broker until nothing is left in Xen.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use common::*;
use ioreq_server::device::{Actions, Device};
use ioreq_server::executor::PassthroughExecutor;
use ioreq_server::seqpacket;
use pci_host_bridge::backend::snapshot::SnapshotDevice;
use pci_host_bridge::broker::{
    policy_for, Broker, BrokerChannel, BrokerClient, BrokerDevice, BrokerStats,
};
use pci_host_bridge::{HostDevice, PciConfig, PciHostBridge};
use pci_host_bridge_testing::{lock, run_random, Checker, XenLike, XenLikeConfig, XenState, DOMID};

/// What the broker thread ends with: its counters and the hand-back's failures.
type BrokerEnd = (BrokerStats, Vec<String>);

/// The worker's bridge over broker clients, its checker, the fake Xen's state, and the broker
/// thread (which serves until the worker's end of the socket closes, then hands back).
fn brokered(
    config: &PciConfig,
    devices: Vec<SnapshotDevice>,
    xen: XenLikeConfig,
) -> (
    PciHostBridge,
    Checker,
    Arc<Mutex<XenState>>,
    JoinHandle<BrokerEnd>,
) {
    let handles = config
        .devices
        .iter()
        .zip(&devices)
        .map(|(d, s)| (config.guest_address(d), s.handle()))
        .collect();
    let broker_config = config.clone();
    let (worker_end, broker_end) = seqpacket::pair().unwrap();
    let (tx, rx) = mpsc::channel();
    let broker = std::thread::spawn(move || {
        let (chan, state) = XenLike::new(xen).channel(DOMID);
        tx.send(state).unwrap();
        // The broker's policy from the bridge's own view, over the backends it keeps.
        let (policy, backends) = policy_for(
            &broker_config,
            DOMID,
            devices
                .into_iter()
                .map(|d| Box::new(d) as Box<dyn HostDevice>)
                .collect(),
        )
        .expect("policy");
        let mut broker = Broker::new(policy, Box::new(chan), backends).expect("broker");
        broker
            .serve(std::os::fd::AsFd::as_fd(&broker_end))
            .expect("serve until EOF");
        let stats = broker.stats();
        (stats, broker.hand_back())
    });
    let state = rx.recv().unwrap();
    let client = Arc::new(BrokerClient::new(worker_end));
    let backends = config
        .devices
        .iter()
        .map(|d| {
            Box::new(BrokerDevice::connect(client.clone(), d.host).expect("facts"))
                as Box<dyn HostDevice>
        })
        .collect();
    let mut bridge = PciHostBridge::with_backends(config, backends).expect("worker's bridge");
    bridge.set_executor(PassthroughExecutor::new(Box::new(BrokerChannel::new(
        client, DOMID,
    ))));
    let mut checker = Checker::new(handles, state.clone());
    let mut actions = Actions::new();
    bridge
        .start(&mut actions)
        .expect("start through the broker");
    checker.check_start(&bridge, 0, &[]).expect("start");
    checker.sync_logs();
    (bridge, checker, state, broker)
}

fn three() -> (PciConfig, Vec<SnapshotDevice>) {
    (
        PciConfig {
            devices: vec![dev_cfg(2, 0), dev_cfg(2, 1), dev_cfg(5, 0)],
            ..Default::default()
        },
        vec![
            snapshot("intel-82599-like-pf.json"),
            snapshot("intel-82599-like-vf.json"),
            snapshot("legacy-io-msi.json"),
        ],
    )
}

#[test]
fn a_whole_session_needs_nothing_the_broker_refuses() {
    for seed in 0..6u64 {
        let (config, devs) = three();
        let xen = XenLikeConfig {
            intremap: seed % 2 == 1,
            e2big_above: (seed % 3 == 2).then_some(40),
            frames_per_call: if seed % 4 == 3 { 16 } else { 64 },
            ..Default::default()
        };
        let (mut bridge, mut checker, state, broker) = brokered(&config, devs, xen);
        run_random(&mut bridge, &mut checker, 2000 + seed, 1500)
            .unwrap_or_else(|e| panic!("through the broker: {e}"));
        assert!(checker.maps > 0 && checker.device_writes > 0, "seed {seed}");
        checker
            .stop_and_check(&mut bridge)
            .unwrap_or_else(|e| panic!("seed {seed}: stop through the broker: {e}"));
        let calls = lock(&state).log.len();
        drop(bridge);
        let (stats, errs) = broker.join().expect("the broker ends at the worker's EOF");
        assert_eq!(
            stats.refused, 0,
            "seed {seed}: the bridge asked for something refused"
        );
        assert!(stats.executed > 100, "seed {seed}: {stats:?}");
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            lock(&state).log.len(),
            calls,
            "seed {seed}: after a clean teardown the broker has nothing to hand back"
        );
        assert!(lock(&state).leftovers().is_empty());
    }
}

#[test]
fn a_worker_gone_mid_session_is_handed_back_by_the_broker() {
    for seed in 0..4u64 {
        let (config, devs) = three();
        let (mut bridge, mut checker, state, broker) =
            brokered(&config, devs, XenLikeConfig::default());
        run_random(&mut bridge, &mut checker, 3000 + seed, 800).unwrap();
        assert!(
            !lock(&state).leftovers().is_empty(),
            "the session left something set up in Xen"
        );
        // The worker dies: no teardown, its end of the socket closes.
        drop(bridge);
        let (stats, errs) = broker.join().expect("broker");
        assert_eq!(stats.refused, 0);
        assert!(errs.is_empty(), "seed {seed}: hand-back failures: {errs:?}");
        let left = lock(&state).leftovers();
        assert!(
            left.is_empty(),
            "seed {seed}: left in Xen after the hand-back: {left:?}"
        );
    }
}

#[test]
fn a_recorded_real_device_needs_nothing_the_broker_refuses() {
    // A virtio-net function as a VM's sysfs showed it (read-only snapshot): PCIe and vendor
    // capabilities the hand-made fixtures do not have.
    for seed in 0..4u64 {
        let config = PciConfig {
            devices: vec![dev_cfg(2, 0)],
            ..Default::default()
        };
        let devs = vec![snapshot("real/virtio-net-1af4-1041.json")];
        let (mut bridge, mut checker, _state, broker) =
            brokered(&config, devs, XenLikeConfig::default());
        run_random(&mut bridge, &mut checker, 4000 + seed, 1500)
            .unwrap_or_else(|e| panic!("through the broker: {e}"));
        checker.stop_and_check(&mut bridge).unwrap();
        drop(bridge);
        let (stats, errs) = broker.join().expect("broker");
        assert_eq!(stats.refused, 0, "seed {seed}");
        assert!(errs.is_empty(), "{errs:?}");
    }
}
