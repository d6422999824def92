/*
 * Test-only LD_PRELOAD interposer for tests/tests/abi_wire.rs. Never use it
 * outside that test.
 *
 * It makes Debian's real libxendevicemodel (and the libxencall it opens
 * first) believe it talks to /dev/xen/privcmd, without any Xen:
 * - open()/open64()/openat()/... of /dev/xen/privcmd or /proc/xen/privcmd
 *   return a fake fd (an empty memfd); /dev/xen/hypercall fails with ENOENT so
 *   libxencall falls back to ordinary memory for its (unused) buffers. The real
 *   devices are never opened, even on a Xen dom0.
 * - ioctl() on a fake fd:
 *     IOCTL_PRIVCMD_DM_OP: logs dom, num and every buffer's bytes (hex) as they
 *       arrive, fills plausible outputs (create -> server id, get_info -> port
 *       and gfns, nr_vcpus -> a count), logs the bytes again, returns 0;
 *     IOCTL_PRIVCMD_RESTRICT: logs the domid, returns 0;
 *     anything else: logged as UNEXPECTED, fails with ENOTTY.
 * The fake fds, the open family and the log are tests/c/privcmd_interposer.h,
 * shared with tests/c/pt_interposer.c.
 * The log is appended to the file named by $DMOP_DUMP, one record per line
 * (tests/c/dmop_driver.c writes its CALL/RESULT lines to the same file):
 *   IOCTL <request hex> DM_OP <dom> <num>
 *   BUF <index> <size> <bytes in, hex> <bytes out, hex>
 *   IOCTL <request hex> RESTRICT <dom>
 *   IOCTL <request hex> UNEXPECTED
 */
#define _GNU_SOURCE
#define INTERPOSER_NAME "dmop_interposer"
#define INTERPOSER_DUMP_ENV "DMOP_DUMP"
#include "privcmd_interposer.h" /* open/close/ioctl, say(), hex() */

#include <xen/hvm/dm_op.h>

/* Outputs the fake hypervisor writes back (the Rust test reads them back). */
#define FAKE_SERVER_ID 0x0a0b
#define FAKE_BUFIOREQ_PORT 0x11223344u
#define FAKE_IOREQ_GFN 0x0102030405060708ull
#define FAKE_BUFIOREQ_GFN 0x1112131415161718ull
#define FAKE_NR_VCPUS 0x103u

/* The driver checks for this symbol so it never runs against real Xen. */
int dmop_interposer_loaded = 1;

static int fake_dm_op(unsigned long req, privcmd_dm_op_t *op)
{
    char in[8193], out[8193];

    say("IOCTL %#lx DM_OP %u %u\n", req, op->dom, op->num);
    for (unsigned int i = 0; i < op->num; i++) {
        const privcmd_dm_op_buf_t *b = &op->ubufs[i];
        if (b->size > 4096) { /* the kernel's dm_op_buf_max_size */
            errno = E2BIG;
            return -1;
        }
        hex(in, b->uptr, b->size);
        if (i == 0 && b->size >= sizeof(struct xen_dm_op)) {
            struct xen_dm_op *d = b->uptr;
            switch (d->op) {
            case XEN_DMOP_create_ioreq_server:
                d->u.create_ioreq_server.id = FAKE_SERVER_ID;
                break;
            case XEN_DMOP_get_ioreq_server_info:
                d->u.get_ioreq_server_info.bufioreq_port = FAKE_BUFIOREQ_PORT;
                if (!(d->u.get_ioreq_server_info.flags & XEN_DMOP_no_gfns)) {
                    d->u.get_ioreq_server_info.ioreq_gfn = FAKE_IOREQ_GFN;
                    d->u.get_ioreq_server_info.bufioreq_gfn = FAKE_BUFIOREQ_GFN;
                }
                break;
            case XEN_DMOP_nr_vcpus:
                d->u.nr_vcpus.vcpus = FAKE_NR_VCPUS;
                break;
            }
        }
        hex(out, b->uptr, b->size);
        say("BUF %u %zu %s %s\n", i, b->size, in, out);
    }
    return 0;
}

static int fake_ioctl(unsigned long req, void *arg)
{
    switch (req) {
    case IOCTL_PRIVCMD_DM_OP:
        return fake_dm_op(req, arg);
    case IOCTL_PRIVCMD_RESTRICT:
        return fake_restrict(req, arg);
    default:
        return unexpected_ioctl(req);
    }
}
