//! pm-trap library.
