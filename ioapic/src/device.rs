//! The IOAPIC as an ioreq-server [`Device`]: the MMIO window plus the pin inputs.
//!
//! Pin inputs come from other processes through `irq_line` (trigger/resample
//! eventfd pairs over the configured Unix socket). The device watches the listener, every
//! connection and every trigger eventfd ([`Device::event_fds`]); each wired-OR level change
//! drives the pin ([`Ioapic::set_asserted`]). When an EOI clears Remote IRR on a pin, every
//! contribution on it is released and every source on it gets its resample signal (the
//! irqfd/resamplefd contract; see the `irq_line` module docs for why the line is released).

use std::os::fd::RawFd;

use ioreq_server::device::{Action, Actions, ControlReply, Device, Range, Space};
use ioreq_server::socket_access::SocketAccess;
use irq_line::{IrqLineError, IrqLineServer, PinChange};
use serde_json::json;

use crate::chip::{Ioapic, IrqOutput, Msi};
use crate::config::{ConfigError, IoapicConfig};
use crate::regs::WINDOW_LEN;
use crate::snapshot::{Snapshot, SnapshotError};

/// Why the device cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The interrupt-source socket cannot be set up.
    #[error("ioapic.socket: {0}")]
    Socket(#[from] IrqLineError),
}

/// The IOAPIC device.
#[derive(Debug)]
pub struct IoapicDevice {
    ioapic: Ioapic,
    base: u64,
    lines: Option<IrqLineServer>,
}

/// Carries the state machine's effects out: MSIs become actions, EOIs release the pin's
/// sources and signal their resample eventfds.
struct Sink<'a> {
    actions: &'a mut Actions,
    lines: Option<&'a mut IrqLineServer>,
}

impl IrqOutput for Sink<'_> {
    fn inject(&mut self, _pin: u8, msi: Msi) {
        self.actions.push(Action::InjectMsi {
            addr: msi.addr,
            data: msi.data,
        });
    }

    fn eoi(&mut self, pin: u8, asserted: bool) -> bool {
        match self.lines.as_deref_mut() {
            Some(lines) => {
                lines.release_pin(pin);
                lines.level(pin)
            }
            None => asserted,
        }
    }
}

impl IoapicDevice {
    /// A reset IOAPIC as configured; binds the source socket if `socket` is set (a stale socket
    /// file is replaced, a live one is an error).
    pub fn new(config: &IoapicConfig) -> Result<IoapicDevice, DeviceError> {
        Self::with_access(config, SocketAccess::PRIVATE)
    }

    /// [`IoapicDevice::new`], the source socket bound with the mode, group and peer rule of
    /// `access` (the guest config's `[control] group`).
    pub fn with_access(
        config: &IoapicConfig,
        access: SocketAccess,
    ) -> Result<IoapicDevice, DeviceError> {
        config.validate()?;
        let ioapic =
            Ioapic::new(config.pins_u8(), config.version_enum(), config.id_u8()).map_err(|e| {
                ConfigError::Invalid {
                    field: "pins",
                    reason: e.to_string(),
                }
            })?;
        let lines = match &config.socket {
            Some(path) => Some(IrqLineServer::bind_with(
                path,
                usize::from(config.pins_u8()),
                access,
            )?),
            None => None,
        };
        Ok(IoapicDevice {
            ioapic,
            base: config.base,
            lines,
        })
    }

    /// A device from parts: a state machine, the window base and an optional source server
    /// (for example one built with [`IrqLineServer::from_listener`] or
    /// [`IrqLineServer::unbound`]). The server should serve `ioapic.pins()` pins.
    pub fn from_parts(ioapic: Ioapic, base: u64, lines: Option<IrqLineServer>) -> IoapicDevice {
        IoapicDevice {
            ioapic,
            base,
            lines,
        }
    }

    /// The state machine.
    pub fn ioapic(&self) -> &Ioapic {
        &self.ioapic
    }

    /// The window base.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The interrupt-source server, if any.
    pub fn lines(&self) -> Option<&IrqLineServer> {
        self.lines.as_ref()
    }

    /// The interrupt-source server, if any, mutably (to adopt pre-connected streams).
    pub fn lines_mut(&mut self) -> Option<&mut IrqLineServer> {
        self.lines.as_mut()
    }

    /// The whole state machine state.
    pub fn snapshot(&self) -> Snapshot {
        self.ioapic.snapshot()
    }

    /// Replaces the state with `snapshot`, which must match this device's pin count and
    /// version. Connected sources stay connected; their contributions are not part of the
    /// snapshot (an input restored as asserted is released by the next EOI).
    pub fn restore(&mut self, snapshot: Snapshot) -> Result<(), SnapshotError> {
        let (pins, version) = (self.ioapic.pins(), self.ioapic.version().value());
        if snapshot.pins != pins {
            return Err(SnapshotError::Mismatch {
                field: "pins",
                found: snapshot.pins.into(),
                configured: pins.into(),
            });
        }
        if snapshot.version != version {
            return Err(SnapshotError::Mismatch {
                field: "version",
                found: snapshot.version.into(),
                configured: version.into(),
            });
        }
        self.ioapic = Ioapic::restore(snapshot)?;
        Ok(())
    }

    fn sink<'a>(actions: &'a mut Actions, lines: &'a mut Option<IrqLineServer>) -> Sink<'a> {
        Sink {
            actions,
            lines: lines.as_mut(),
        }
    }
}

impl Device for IoapicDevice {
    fn name(&self) -> &str {
        "ioapic"
    }

    fn ranges(&self) -> Vec<Range> {
        vec![Range::new(Space::Memory, self.base, WINDOW_LEN)]
    }

    fn read(&mut self, space: Space, addr: u64, size: u8, _actions: &mut Actions) -> u64 {
        if space != Space::Memory {
            return u64::MAX;
        }
        // Outside the window (never, per the loop's guarantee) the state machine answers
        // all-ones like any offset without a register.
        self.ioapic.mmio_read(addr.wrapping_sub(self.base), size)
    }

    fn write(&mut self, space: Space, addr: u64, size: u8, data: u64, actions: &mut Actions) {
        if space != Space::Memory {
            return;
        }
        let mut sink = Self::sink(actions, &mut self.lines);
        self.ioapic
            .mmio_write(addr.wrapping_sub(self.base), size, data, &mut sink);
    }

    fn event_fds(&self) -> Vec<RawFd> {
        self.lines
            .as_ref()
            .map(IrqLineServer::fds)
            .unwrap_or_default()
    }

    fn on_event(&mut self, fd: RawFd, actions: &mut Actions) {
        let Some(lines) = self.lines.as_mut() else {
            return;
        };
        let mut changes: Vec<PinChange> = Vec::new();
        lines.handle(fd, &mut changes);
        for change in changes {
            let mut sink = Self::sink(actions, &mut self.lines);
            self.ioapic
                .set_asserted(change.pin, change.level, &mut sink);
        }
    }

    /// `{"cmd":"snapshot"}` returns the whole state (for live migration);
    /// `{"cmd":"restore","snapshot":{...}}` replaces it, checked against the configuration.
    fn control(&mut self, cmd: &str, request: &serde_json::Value) -> ControlReply {
        match cmd {
            "snapshot" => Some(serde_json::to_value(self.snapshot()).map_err(|e| e.to_string())),
            "restore" => Some(
                serde_json::from_value::<Snapshot>(request["snapshot"].clone())
                    .map_err(|e| format!("bad snapshot: {e}"))
                    .and_then(|snap| self.restore(snap).map_err(|e| e.to_string()))
                    .map(|()| serde_json::Value::Null),
            ),
            _ => None,
        }
    }

    fn status(&self) -> serde_json::Value {
        let pins: Vec<_> = (0..self.ioapic.pins())
            .filter_map(|pin| {
                let e = self.ioapic.entry(pin)?;
                let asserted = self.ioapic.is_asserted(pin);
                // Only pins the guest set up or that something drives.
                (!e.masked() || asserted || e.remote_irr()).then(|| {
                    json!({
                        "pin": pin,
                        "vector": e.vector(),
                        "level": e.is_level(),
                        "masked": e.masked(),
                        "remote_irr": e.remote_irr(),
                        "destination": e.destination(),
                        "asserted": asserted,
                    })
                })
            })
            .collect();
        json!({
            "base": format!("{:#x}", self.base),
            "pins": self.ioapic.pins(),
            "version": format!("{:#x}", self.ioapic.version().value()),
            "id": self.ioapic.id(),
            "socket": self.lines.as_ref().and_then(|l| l.path()).map(|p| p.display().to_string()),
            "sources": self.lines.as_ref().map(|l| l.sources()).unwrap_or_default(),
            "active_pins": pins,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::*;
    use irq_line::IrqLine;
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    const BASE: u64 = DEFAULT_BASE;

    fn device_with_lines() -> IoapicDevice {
        let ioapic = Ioapic::new(24, crate::chip::Version::V20, 0).unwrap();
        IoapicDevice::from_parts(ioapic, BASE, Some(IrqLineServer::unbound(24).unwrap()))
    }

    fn write_reg(d: &mut IoapicDevice, index: u8, value: u32, actions: &mut Actions) {
        d.write(Space::Memory, BASE + IOREGSEL, 4, index.into(), actions);
        d.write(Space::Memory, BASE + IOWIN, 4, value.into(), actions);
    }

    fn program_level(d: &mut IoapicDevice, pin: u8, vector: u8, actions: &mut Actions) {
        write_reg(d, REG_REDTBL + 2 * pin + 1, 0x0100_0000, actions); // destination 1
        let low = u32::from(vector) | (RTE_TRIGGER_LEVEL | RTE_POLARITY) as u32;
        write_reg(d, REG_REDTBL + 2 * pin, low, actions);
    }

    /// Calls on_event on every fd (non-blocking) until `done` or 5 s pass.
    fn pump(
        d: &mut IoapicDevice,
        actions: &mut Actions,
        mut done: impl FnMut(&IoapicDevice, &Actions) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done(d, actions) {
            assert!(Instant::now() < deadline, "timed out");
            for fd in d.event_fds() {
                d.on_event(fd, actions);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn connect(d: &mut IoapicDevice, pin: u8) -> IrqLine {
        let (a, b) = UnixStream::pair().unwrap();
        d.lines_mut().unwrap().adopt(b).unwrap();
        let t = std::thread::spawn(move || IrqLine::register_on(a, pin, Duration::from_secs(5)));
        let mut actions = Actions::new();
        pump(d, &mut actions, |_, _| t.is_finished());
        t.join().unwrap().unwrap()
    }

    fn msis(actions: &mut Actions) -> Vec<(u64, u32)> {
        actions
            .drain()
            .map(|a| match a {
                Action::InjectMsi { addr, data } => (addr, data),
                other => panic!("unexpected action {other:?}"),
            })
            .collect()
    }

    #[test]
    fn ranges_and_name() {
        let d = IoapicDevice::new(&IoapicConfig::default()).unwrap();
        assert_eq!(d.name(), "ioapic");
        assert_eq!(
            d.ranges(),
            vec![Range {
                space: Space::Memory,
                start: 0xFEC0_0000,
                end: 0xFEC0_00FF
            }]
        );
        assert!(d.event_fds().is_empty());
    }

    #[test]
    fn level_pin_through_a_source_with_eoi_and_resample() {
        let mut d = device_with_lines();
        let mut actions = Actions::new();
        program_level(&mut d, 16, 0x41, &mut actions);
        assert!(actions.is_empty());
        let mut line = connect(&mut d, 16);

        line.assert().unwrap();
        pump(&mut d, &mut actions, |_, a| !a.is_empty());
        assert_eq!(msis(&mut actions), vec![(0xFEE0_1000, 0x41)]);
        assert!(d.ioapic().entry(16).unwrap().remote_irr());

        // The guest EOIs: Remote IRR clears, the line is released, the source is resampled.
        d.write(Space::Memory, BASE + EOI, 4, 0x41, &mut actions);
        assert!(
            actions.is_empty(),
            "released line: no re-delivery before the source re-checks"
        );
        assert!(!d.ioapic().entry(16).unwrap().remote_irr());
        assert!(line.wait_resample(Some(Duration::from_secs(5))).unwrap());

        // Still pending at the device: the source asserts again and the next MSI goes out.
        line.assert().unwrap();
        pump(&mut d, &mut actions, |_, a| !a.is_empty());
        assert_eq!(msis(&mut actions), vec![(0xFEE0_1000, 0x41)]);

        // The 0x11 way (mask + edge, then level) also EOIs and resamples.
        let low = d.ioapic().entry(16).unwrap().low();
        write_reg(
            &mut d,
            REG_REDTBL + 32,
            (low | RTE_MASK as u32) & !(RTE_TRIGGER_LEVEL as u32),
            &mut actions,
        );
        write_reg(&mut d, REG_REDTBL + 32, low, &mut actions);
        assert!(actions.is_empty());
        assert!(line.wait_resample(Some(Duration::from_secs(5))).unwrap());
        let status = d.status();
        assert_eq!(status["sources"][0]["pin"], 16);
    }

    #[test]
    fn two_sources_share_a_pin() {
        let mut d = device_with_lines();
        let mut actions = Actions::new();
        program_level(&mut d, 20, 0x50, &mut actions);
        let mut a = connect(&mut d, 20);
        let mut b = connect(&mut d, 20);
        a.assert().unwrap();
        b.assert().unwrap();
        pump(&mut d, &mut actions, |d, _| {
            d.lines().unwrap().sources().iter().all(|s| s.asserted)
        });
        assert_eq!(msis(&mut actions).len(), 1, "one MSI until EOI");
        a.deassert().unwrap();
        pump(&mut d, &mut actions, |d, _| {
            d.lines()
                .unwrap()
                .sources()
                .iter()
                .filter(|s| s.asserted)
                .count()
                == 1
        });
        assert!(d.ioapic().is_asserted(20), "b still holds the line");
        d.write(Space::Memory, BASE + EOI, 4, 0x50, &mut actions);
        assert!(a.wait_resample(Some(Duration::from_secs(5))).unwrap());
        assert!(b.wait_resample(Some(Duration::from_secs(5))).unwrap());
        assert!(!d.ioapic().is_asserted(20));
        // A source that goes away withdraws its contribution.
        b.assert().unwrap();
        pump(&mut d, &mut actions, |d, _| d.ioapic().is_asserted(20));
        assert_eq!(msis(&mut actions).len(), 1);
        drop(b);
        pump(&mut d, &mut actions, |d, _| !d.ioapic().is_asserted(20));
    }

    #[test]
    fn config_with_socket_binds_it() {
        let dir = std::env::temp_dir().join(format!("ioapic-dev-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ioapic.sock");
        let config = IoapicConfig {
            socket: Some(path.clone()),
            pins: 4,
            ..IoapicConfig::default()
        };
        let mut d = IoapicDevice::new(&config).unwrap();
        assert_eq!(d.event_fds().len(), 1, "the listener");
        let p = path.clone();
        let t = std::thread::spawn(move || IrqLine::connect(p, 4));
        let mut actions = Actions::new();
        pump(&mut d, &mut actions, |_, _| t.is_finished());
        assert!(t.join().unwrap().is_err(), "pin 4 of 4 is refused");
        drop(d);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn restore_checks_the_configuration() {
        let mut d = device_with_lines();
        let mut s = d.snapshot();
        d.restore(s.clone()).unwrap();
        s.pins = 23;
        assert!(matches!(
            d.restore(s.clone()),
            Err(SnapshotError::Mismatch { field: "pins", .. })
        ));
        s.pins = 24;
        s.version = 0x11;
        assert!(matches!(
            d.restore(s),
            Err(SnapshotError::Mismatch {
                field: "version",
                ..
            })
        ));
    }

    #[test]
    fn non_memory_spaces_are_ignored() {
        let mut d = device_with_lines();
        let mut actions = Actions::new();
        assert_eq!(d.read(Space::Port, 0, 4, &mut actions), u64::MAX);
        d.write(Space::PciConfig, 0, 4, 0, &mut actions);
        assert!(actions.is_empty());
        d.on_event(9999, &mut actions);
    }
}
