/*
 * Shim for the ABI tests (tests/c/abi_layout.c). Linux's uapi <xen/privcmd.h>
 * (Debian: linux-libc-dev, /usr/include/xen/privcmd.h) includes
 * <xen/interface/xen.h>, a kernel-internal path that is not installed under
 * /usr/include. Userspace gets the same definitions (domid_t, xen_pfn_t) from
 * Xen's public <xen/xen.h> (Debian: libxen-dev), so forward to it.
 */
#include <xen/xen.h>
