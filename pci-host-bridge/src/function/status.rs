//! The state of a [`PassthroughFunction`] as JSON for the status socket. Kept apart because
//! it is a report over all the other files' state, with a format of its own that tools read.

use serde_json::json;

use super::PassthroughFunction;
use crate::intx::Intx;

impl PassthroughFunction {
    /// Device state for the status socket.
    pub fn status(&self) -> serde_json::Value {
        let bars: Vec<_> = (0..6)
            .filter_map(|i| {
                self.bars.bar(i).map(|b| {
                    json!({
                        "index": i,
                        "kind": b.host.kind,
                        "prefetchable": b.host.prefetchable,
                        "size": b.host.size,
                        "guest": format!("{:#x}", b.guest),
                        "host": format!("{:#x}", b.host.host_addr),
                    })
                })
            })
            .collect();
        json!({
            "guest": self.guest.to_string(),
            "device": self.dev_name,
            "command": format!("{:#06x}", self.command()),
            "bars": bars,
            "rom": self.bars.rom().map(|r| json!({
                "size": r.host.size,
                "guest": format!("{:#x}", r.guest),
                "enabled": self.bars.rom_enabled(),
            })),
            "mappings": self.mapped,
            "capabilities": self.caps,
            "host": self.host.to_string(),
            "msi": self.msi_state(),
            "msix": self.msix_control(),
            "bound_vectors": self.bindings.bound().map(|(s, v)| json!({"slot": s, "vector": v})).collect::<Vec<_>>(),
            "binds_unbinds": self.bindings.counts(),
            "intx": self.intx.as_ref().map(Intx::status),
            "lifecycle": self.lifecycle,
            "last_refusal": self.last_refusal,
            "backend": self.dev.status(),
            "suppressed_warnings": self.warn.total_suppressed(),
        })
    }
}
