/*
 * Test-only LD_PRELOAD interposer for tests/tests/abi_wire_passthrough/.
 * Never use it outside that test.
 *
 * It makes Debian's real libxenctrl (and the libxencall, libxenforeignmemory
 * and libxendevicemodel that xc_interface_open opens) believe they talk to
 * /dev/xen/privcmd, without any Xen:
 * - open()/open64()/openat()/... of /dev/xen/privcmd or /proc/xen/privcmd
 *   return a fake fd (an empty memfd); /dev/xen/hypercall fails with ENOENT,
 *   so libxencall allocates its hypercall buffers as locked anonymous memory
 *   (tools/libs/call/linux.c alloc_pages_nobufdev). The real devices are never
 *   opened, even on a Xen dom0.
 * - ioctl() on a fake fd:
 *     IOCTL_PRIVCMD_HYPERCALL: logs op and arg[0..4]; for __HYPERVISOR_domctl
 *       the sizeof(struct xen_domctl) bytes arg[0] points at, for
 *       __HYPERVISOR_physdev_op the argument struct arg[1] points at (its size
 *       from the PHYSDEVOP_* cmd in arg[0]), before and after the fake
 *       hypervisor answered; then returns what the script says (below);
 *     IOCTL_PRIVCMD_DM_OP (only libxendevicemodel's probe at open, with no
 *       buffers, is expected) and IOCTL_PRIVCMD_RESTRICT: logged, return 0;
 *     IOCTL_PRIVCMD_UNIMPLEMENTED (libxenforeignmemory's probe at open):
 *       logged, fails with ENOTTY as privcmd does;
 *     anything else: logged as UNEXPECTED, fails with ENOTTY.
 * The fake hypervisor:
 *     XEN_DOMCTL_getdomaininfo: answers as Xen 4.17 does for an existing HVM
 *       domain (xen/common/domctl.c:375-405): fills u.getdomaininfo (domain =
 *       the one asked for plus pt_interposer_getinfo_delta, i.e. "the first
 *       domain >= the one asked for"), echoes it in domctl.domain, returns 0;
 *     XEN_DOMCTL_memory_mapping: returns the next value of the script set by
 *       pt_interposer_script() (>= 0 returned as is, < 0 as -1 with errno =
 *       -value), 0 when the script is used up;
 *     PHYSDEVOP_map_pirq: writes FAKE_PIRQ into pirq, returns 0;
 *     everything else: returns 0 and changes nothing.
 * The fake fds, the open family and the log are tests/c/privcmd_interposer.h,
 * shared with tests/c/dmop_interposer.c.
 * The log is appended to the file named by $PT_DUMP, one record per line
 * (tests/c/pt_driver.c writes its CALL/RESULT lines to the same file):
 *   OPEN <path> fake|ENOENT
 *   HCALL <op> <a0> <a1> <a2> <a3> <a4> <ret> <errno> <bytes in> <bytes out>
 *     (numbers in hex with 0x; bytes as hex, "-" when there is no buffer)
 *   IOCTL <request> DM_OP <dom> <num> | IOCTL <request> RESTRICT <dom>
 *   IOCTL <request> UNIMPLEMENTED | IOCTL <request> UNEXPECTED
 */
#define _GNU_SOURCE
#define INTERPOSER_NAME "pt_interposer"
#define INTERPOSER_DUMP_ENV "PT_DUMP"
#include "privcmd_interposer.h" /* open/close/ioctl, say(), hex() */

#include <xen/domctl.h>
#include <xen/physdev.h>
#include <xen/hvm/dm_op.h>

/* Outputs of the fake hypervisor (the Rust test reads them back). */
#define FAKE_PIRQ 0x3c
#define FAKE_TOT_PAGES 0x12345ull
#define FAKE_MAX_PAGES 0x40100ull
#define FAKE_SHARED_INFO 0xfeffeull

/* The driver checks for this symbol so it never runs against real Xen. */
int pt_interposer_loaded = 1;

/* Set by the driver before a call (see pt_interposer_script). */
int pt_interposer_getinfo_delta;
static long script[64];
static int script_len, script_pos;

void pt_interposer_script(const long *rets, int n)
{
    if (n < 0 || n > (int)(sizeof(script) / sizeof(script[0])))
        abort();
    if (n)
        memcpy(script, rets, n * sizeof(*rets));
    script_len = n;
    script_pos = 0;
}

/* hex(), or "-" when there is no buffer. */
static void hex_or_dash(char *out, const void *p, size_t n)
{
    if (!p)
        strcpy(out, "-");
    else
        hex(out, p, n);
}

/* The size of the argument struct of a physdev op (0: not one we know). */
static size_t physdev_arg_size(uint64_t cmd)
{
    switch (cmd) {
    case PHYSDEVOP_map_pirq:
        return sizeof(struct physdev_map_pirq);
    case PHYSDEVOP_unmap_pirq:
        return sizeof(struct physdev_unmap_pirq);
    case PHYSDEVOP_prepare_msix:
    case PHYSDEVOP_release_msix:
        return sizeof(struct physdev_pci_device);
    default:
        return 0;
    }
}

/* The fake hypervisor: returns the hypercall's value (negative errno). */
static long fake_xen(uint64_t op, const __u64 *arg, void *buf)
{
    if (op == __HYPERVISOR_domctl) {
        struct xen_domctl *d = buf;
        switch (d->cmd) {
        case XEN_DOMCTL_getdomaininfo: {
            struct xen_domctl_getdomaininfo *g = &d->u.getdomaininfo;
            memset(g, 0, sizeof(*g));
            g->domain = d->domain + pt_interposer_getinfo_delta;
            g->flags = XEN_DOMINF_hvm_guest | XEN_DOMINF_hap | XEN_DOMINF_running;
            g->tot_pages = FAKE_TOT_PAGES;
            g->max_pages = FAKE_MAX_PAGES;
            g->shared_info_frame = FAKE_SHARED_INFO;
            g->nr_online_vcpus = 2;
            g->max_vcpu_id = 1;
            d->domain = g->domain;
            return 0;
        }
        case XEN_DOMCTL_memory_mapping:
            return script_pos < script_len ? script[script_pos++] : 0;
        default:
            return 0;
        }
    }
    if (op == __HYPERVISOR_physdev_op) {
        if (arg[0] == PHYSDEVOP_map_pirq)
            ((struct physdev_map_pirq *)buf)->pirq = FAKE_PIRQ;
        return 0;
    }
    return -ENOSYS;
}

static int fake_hypercall(unsigned long req, privcmd_hypercall_t *h)
{
    char in[2 * 4096 + 2], out[2 * 4096 + 2];
    void *buf = NULL;
    size_t size = 0;
    long ret;
    int err = 0;

    if (h->op == __HYPERVISOR_domctl) {
        buf = (void *)(uintptr_t)h->arg[0];
        size = sizeof(struct xen_domctl);
    } else if (h->op == __HYPERVISOR_physdev_op) {
        size = physdev_arg_size(h->arg[0]);
        buf = size ? (void *)(uintptr_t)h->arg[1] : NULL;
    }
    hex_or_dash(in, buf, size);
    ret = fake_xen(h->op, h->arg, buf);
    hex_or_dash(out, buf, size);
    if (ret < 0) {
        err = (int)-ret;
        ret = -1;
    }
    say("HCALL %#llx %#llx %#llx %#llx %#llx %#llx %ld %d %s %s\n",
        (unsigned long long)h->op, (unsigned long long)h->arg[0],
        (unsigned long long)h->arg[1], (unsigned long long)h->arg[2],
        (unsigned long long)h->arg[3], (unsigned long long)h->arg[4], ret,
        err, in, out);
    (void)req;
    if (ret < 0)
        errno = err;
    return (int)ret;
}

static int fake_ioctl(unsigned long req, void *arg)
{
    switch (req) {
    case IOCTL_PRIVCMD_HYPERCALL:
        return fake_hypercall(req, arg);
    case IOCTL_PRIVCMD_DM_OP: {
        privcmd_dm_op_t *op = arg;
        say("IOCTL %#lx DM_OP %u %u\n", req, op->dom, op->num);
        return 0;
    }
    case IOCTL_PRIVCMD_RESTRICT:
        return fake_restrict(req, arg);
    case IOCTL_PRIVCMD_UNIMPLEMENTED:
        /* libxenforeignmemory's probe at open for the errno of an ioctl
         * privcmd does not implement: answered as privcmd does. */
        say("IOCTL %#lx UNIMPLEMENTED\n", req);
        errno = ENOTTY;
        return -1;
    default:
        return unexpected_ioctl(req);
    }
}
