//! xen-sim binary (placeholder until the demo lands).
fn main() {}
