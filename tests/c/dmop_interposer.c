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
 * The log is appended to the file named by $DMOP_DUMP, one record per line
 * (tests/c/dmop_driver.c writes its CALL/RESULT lines to the same file):
 *   IOCTL <request hex> DM_OP <dom> <num>
 *   BUF <index> <size> <bytes in, hex> <bytes out, hex>
 *   IOCTL <request hex> RESTRICT <dom>
 *   IOCTL <request hex> UNEXPECTED
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
#include <xen/hvm/dm_op.h>
#include <xen/sys/privcmd.h> /* what libxendevicemodel itself is built with */

/* Outputs the fake hypervisor writes back (the Rust test reads them back). */
#define FAKE_SERVER_ID 0x0a0b
#define FAKE_BUFIOREQ_PORT 0x11223344u
#define FAKE_IOREQ_GFN 0x0102030405060708ull
#define FAKE_BUFIOREQ_GFN 0x1112131415161718ull
#define FAKE_NR_VCPUS 0x103u

/* The driver checks for this symbol so it never runs against real Xen. */
int dmop_interposer_loaded = 1;

#define MAX_FAKE 8
static int fake_fds[MAX_FAKE] = {-1, -1, -1, -1, -1, -1, -1, -1};

static void *real(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);
    if (!f) {
        fprintf(stderr, "dmop_interposer: no real %s\n", name);
        abort();
    }
    return f;
}

static void say(const char *fmt, ...)
{
    const char *path = getenv("DMOP_DUMP");
    char line[16384];
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
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
    out[2 * n] = 0;
}

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
    case IOCTL_PRIVCMD_DM_OP:
        return fake_dm_op(req, arg);
    case IOCTL_PRIVCMD_RESTRICT:
        say("IOCTL %#lx RESTRICT %u\n", req, *(domid_t *)arg);
        return 0;
    default:
        say("IOCTL %#lx UNEXPECTED\n", req);
        errno = ENOTTY;
        return -1;
    }
}
