//! xen-sim library.
