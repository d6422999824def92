//! Xen and Linux ABI used by the ioreq servers (x86_64, little endian), as pure data.
//!
//! Every number and layout here is checked against Debian's real headers by the layout test
//! (`tests/tests/abi_layout/`, compiling a C program against libxen-dev and linux-libc-dev),
//! and every DM op encoding against what Debian's libxendevicemodel sends
//! (`tests/tests/abi_wire.rs`). Sources are named per section; see ../shared/xen-abi.md.
//!
//! - the numbers and struct layouts, at the crate root, from Xen's public headers (`public`),
//!   Linux's privcmd and evtchn interfaces (`linux`) and the version-locked passthrough
//!   interface (`domctl`);
//! - [`dmop`]: DM ops as data and their exact byte encoding;
//! - [`passthrough`]: passthrough domctls/physdev ops as data, Xen 4.17 encodings;
//! - [`shutdown`]: the `SHUTDOWN_*` codes as one type ([`ShutdownReason`]), for devices and
//!   supervisors (its numbers are `public`'s, compared there).
//!
//! Both the device models (through `ioreq-server`) and xen-sim speak these bytes, so each side
//! depends on this crate rather than on the other. The crate forbids `unsafe_code`: encoding
//! and decoding are byte copies.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod domctl;
mod linux;
mod public;

pub mod dmop;
pub mod passthrough;
pub mod shutdown;

pub use domctl::*;
pub use linux::*;
pub use public::*;
pub use shutdown::ShutdownReason;
