/*
 * Test-only LD_PRELOAD interposer for tests/tests/abi_wire_passthrough.rs.
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
 * The log is appended to the file named by $PT_DUMP, one record per line
 * (tests/c/pt_driver.c writes its CALL/RESULT lines to the same file):
 *   OPEN <path> fake|ENOENT
 *   HCALL <op> <a0> <a1> <a2> <a3> <a4> <ret> <errno> <bytes in> <bytes out>
 *     (numbers in hex with 0x; bytes as hex, "-" when there is no buffer)
 *   IOCTL <request> DM_OP <dom> <num> | IOCTL <request> RESTRICT <dom>
 *   IOCTL <request> UNIMPLEMENTED | IOCTL <request> UNEXPECTED
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <xen/xen.h>
#include <xen/domctl.h>
#include <xen/physdev.h>
#include <xen/hvm/dm_op.h>
#include <xen/sys/privcmd.h> /* what libxencall itself is built with */

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

#define MAX_FAKE 8
static int fake_fds[MAX_FAKE] = {-1, -1, -1, -1, -1, -1, -1, -1};

static void *real(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);
    if (!f) {
        fprintf(stderr, "pt_interposer: no real %s\n", name);
        abort();
    }
    return f;
}

static void say(const char *fmt, ...)
{
    const char *path = getenv("PT_DUMP");
    char line[4096];
    va_list ap;
    int fd, n;

    if (!path)
        return;
    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line))
        abort();
    fd = ((int (*)(const char *, int, ...))real("open"))(
        path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, line, n) != n)
        abort();
    ((int (*)(int))real("close"))(fd);
}

static int is_fake(int fd)
{
    for (int i = 0; i < MAX_FAKE; i++)
        if (fd >= 0 && fake_fds[i] == fd)
            return 1;
    return 0;
}

/* Returns -2 if path is not ours, else the fake fd or -1/errno. */
static int fake_open(const char *path)
{
    if (strcmp(path, "/dev/xen/hypercall") == 0) {
        say("OPEN %s ENOENT\n", path);
        errno = ENOENT;
        return -1;
    }
    if (strcmp(path, "/dev/xen/privcmd") != 0 &&
        strcmp(path, "/proc/xen/privcmd") != 0)
        return -2;
    for (int i = 0; i < MAX_FAKE; i++)
        if (fake_fds[i] < 0) {
            int fd = memfd_create("fake-privcmd", MFD_CLOEXEC);
            if (fd < 0)
                abort();
            fake_fds[i] = fd;
            say("OPEN %s fake\n", path);
            return fd;
        }
    abort();
}

static int needs_mode(int flags)
{
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;
}

#define OPEN_WRAPPER(name)                                                     \
    int name(const char *path, int flags, ...)                                 \
    {                                                                          \
        mode_t mode = 0;                                                       \
        int fd = fake_open(path);                                              \
        if (fd != -2)                                                          \
            return fd;                                                         \
        if (needs_mode(flags)) {                                               \
            va_list ap;                                                        \
            va_start(ap, flags);                                               \
            mode = va_arg(ap, mode_t);                                         \
            va_end(ap);                                                        \
        }                                                                      \
        return ((int (*)(const char *, int, ...))real(#name))(path, flags,     \
                                                              mode);           \
    }
OPEN_WRAPPER(open)
OPEN_WRAPPER(open64)

#define OPENAT_WRAPPER(name)                                                   \
    int name(int dirfd, const char *path, int flags, ...)                      \
    {                                                                          \
        mode_t mode = 0;                                                       \
        int fd = fake_open(path);                                              \
        if (fd != -2)                                                          \
            return fd;                                                         \
        if (needs_mode(flags)) {                                               \
            va_list ap;                                                        \
            va_start(ap, flags);                                               \
            mode = va_arg(ap, mode_t);                                         \
            va_end(ap);                                                        \
        }                                                                      \
        return ((int (*)(int, const char *, int, ...))real(#name))(            \
            dirfd, path, flags, mode);                                         \
    }
OPENAT_WRAPPER(openat)
OPENAT_WRAPPER(openat64)

/* _FORTIFY_SOURCE variants. */
int __open_2(const char *path, int flags)
{
    int fd = fake_open(path);
    return fd != -2 ? fd : ((int (*)(const char *, int))real("__open_2"))(path, flags);
}
int __open64_2(const char *path, int flags)
{
    int fd = fake_open(path);
    return fd != -2 ? fd : ((int (*)(const char *, int))real("__open64_2"))(path, flags);
}

int close(int fd)
{
    for (int i = 0; i < MAX_FAKE; i++)
        if (fd >= 0 && fake_fds[i] == fd)
            fake_fds[i] = -1;
    return ((int (*)(int))real("close"))(fd);
}

static void hex(char *out, const void *p, size_t n)
{
    const unsigned char *b = p;
    if (!p) {
        strcpy(out, "-");
        return;
    }
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
    out[2 * n] = 0;
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
    hex(in, buf, size);
    ret = fake_xen(h->op, h->arg, buf);
    hex(out, buf, size);
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

int ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    void *arg;

    va_start(ap, req);
    arg = va_arg(ap, void *);
    va_end(ap);

    if (!is_fake(fd))
        return ((int (*)(int, unsigned long, ...))real("ioctl"))(fd, req, arg);

    switch (req) {
    case IOCTL_PRIVCMD_HYPERCALL:
        return fake_hypercall(req, arg);
    case IOCTL_PRIVCMD_DM_OP: {
        privcmd_dm_op_t *op = arg;
        say("IOCTL %#lx DM_OP %u %u\n", req, op->dom, op->num);
        return 0;
    }
    case IOCTL_PRIVCMD_RESTRICT:
        say("IOCTL %#lx RESTRICT %u\n", req, *(domid_t *)arg);
        return 0;
    case IOCTL_PRIVCMD_UNIMPLEMENTED:
        /* libxenforeignmemory's probe at open for the errno of an ioctl
         * privcmd does not implement: answered as privcmd does. */
        say("IOCTL %#lx UNIMPLEMENTED\n", req);
        errno = ENOTTY;
        return -1;
    default:
        say("IOCTL %#lx UNEXPECTED\n", req);
        errno = ENOTTY;
        return -1;
    }
}
