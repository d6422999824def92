//! Helpers several of the `tests` crate's test files share; each includes it with
//! `mod common;` and uses what it needs.
#![allow(dead_code)]

use std::process::Command;

use ioreq_server::shared::IoreqPage;
use ioreq_server::transport::sim::SimTransport;
use ioreq_server::transport::Transport;
use xen_abi::dmop::{DmOp, IoRange, Space};

/// Run `cmd`, which must succeed (its stderr is the failure message), and parse its stdout
/// as JSON.
pub fn json_of(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A device model played by hand on `t`: an ioreq server (no buffered ioreqs) created,
/// its ioreq page mapped, enabled, vCPU 0's event channel bound, and `start..=end` of `space`
/// claimed. The page and the bound local port.
pub fn bare_ioreq_server(
    t: &mut SimTransport,
    space: Space,
    start: u64,
    end: u64,
) -> (IoreqPage, u32) {
    let id = t
        .dm_op(&DmOp::CreateIoreqServer { handle_bufioreq: 0 })
        .unwrap()
        .id
        .unwrap();
    let page = IoreqPage::new(t.map_resource(id, 1, 1).unwrap(), 1).unwrap();
    t.dm_op(&DmOp::SetIoreqServerState { id, enabled: true })
        .unwrap();
    let port = t.bind_interdomain(page.read(0).vp_eport).unwrap();
    t.dm_op(&DmOp::MapIoRange(IoRange {
        id,
        space,
        start,
        end,
    }))
    .unwrap();
    (page, port)
}
