//! The device with real sockets and eventfds: arbitrary bytes from an unregistered peer as
//! protocol messages, trigger writes (any count), DEASSERT frames, guest MMIO and EOIs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pvh_dm_fuzz::accesses(ioapic::check::device_protocol(data).ops);
});
