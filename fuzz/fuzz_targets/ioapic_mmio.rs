//! The IOAPIC's MMIO surface: arbitrary sequences of reads and writes of any size and offset,
//! register writes, EOIs and pin levels, with the invariants of `ioapic::check`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pvh_dm_fuzz::accesses(ioapic::check::mmio(data).ops);
});
