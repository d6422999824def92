//! ioapic library.
