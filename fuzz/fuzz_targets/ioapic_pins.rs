//! The pin protocol as the device applies it: several sources per pin (wired-OR), asserts,
//! deasserts, EOIs (register and edge/level toggle) releasing the pin, mixed with MMIO.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pvh_dm_fuzz::accesses(ioapic::check::pins(data).ops);
});
