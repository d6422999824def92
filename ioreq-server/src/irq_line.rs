//! Interrupt-line protocol between an interrupt source and the IOAPIC (irqfd/resamplefd pairs).
