/*
 * The part the two test-only LD_PRELOAD interposers share
 * (tests/c/dmop_interposer.c, tests/c/pt_interposer.c): a fake
 * /dev/xen/privcmd and the log both write. Never use it outside those tests.
 *
 * Each interposer includes it once, after defining
 *   INTERPOSER_NAME      its name, for error messages ("dmop_interposer")
 *   INTERPOSER_DUMP_ENV  the variable naming the log file ("DMOP_DUMP")
 * and then defines
 *   static int fake_ioctl(unsigned long req, void *arg);
 * which ioctl() below calls for every request on a fake fd.
 *
 * What it provides:
 * - open()/open64()/openat()/openat64()/__open_2()/__open64_2() of
 *   /dev/xen/privcmd or /proc/xen/privcmd return a fake fd (an empty memfd)
 *   and log "OPEN <path> fake"; /dev/xen/hypercall fails with ENOENT and logs
 *   "OPEN <path> ENOENT", so libxencall falls back to ordinary memory for its
 *   buffers. The real devices are never opened, even on a Xen dom0. Any other
 *   path goes to the real function.
 * - close() forgets a fake fd.
 * - ioctl() on a fake fd calls fake_ioctl(); on any other fd the real ioctl().
 * - say(): appends a formatted line to the file named by $INTERPOSER_DUMP_ENV
 *   (nothing when it is unset).
 * - hex(): bytes as lower-case hex.
 * - fake_restrict() / unexpected_ioctl(): the answers to
 *   IOCTL_PRIVCMD_RESTRICT (logged, 0) and to a request the interposer does
 *   not know (logged as UNEXPECTED, ENOTTY).
 */
#ifndef PRIVCMD_INTERPOSER_H
#define PRIVCMD_INTERPOSER_H

#if !defined(INTERPOSER_NAME) || !defined(INTERPOSER_DUMP_ENV)
#error "define INTERPOSER_NAME and INTERPOSER_DUMP_ENV before including privcmd_interposer.h"
#endif

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
#include <xen/sys/privcmd.h> /* what libxencall / libxendevicemodel are built with */

static int fake_ioctl(unsigned long req, void *arg);

#define MAX_FAKE 8
static int fake_fds[MAX_FAKE] = {-1, -1, -1, -1, -1, -1, -1, -1};

static void *real(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);
    if (!f) {
        fprintf(stderr, INTERPOSER_NAME ": no real %s\n", name);
        abort();
    }
    return f;
}

static void say(const char *fmt, ...)
{
    const char *path = getenv(INTERPOSER_DUMP_ENV);
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

/* One wrapper of the open family: PARAMS is its parameter list (ending in
 * `int flags, ...`), the rest the arguments before the mode to pass on. */
#define OPEN_WRAPPER(name, PARAMS, ...)                                        \
    int name PARAMS                                                            \
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
        return ((__typeof__(&name))real(#name))(__VA_ARGS__, mode);            \
    }
OPEN_WRAPPER(open, (const char *path, int flags, ...), path, flags)
OPEN_WRAPPER(open64, (const char *path, int flags, ...), path, flags)
OPEN_WRAPPER(openat, (int dirfd, const char *path, int flags, ...), dirfd, path, flags)
OPEN_WRAPPER(openat64, (int dirfd, const char *path, int flags, ...), dirfd, path,
             flags)

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

int ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    void *arg;

    va_start(ap, req);
    arg = va_arg(ap, void *);
    va_end(ap);

    if (!is_fake(fd))
        return ((int (*)(int, unsigned long, ...))real("ioctl"))(fd, req, arg);
    return fake_ioctl(req, arg);
}

static void hex(char *out, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
    out[2 * n] = 0;
}

static int fake_restrict(unsigned long req, void *arg)
{
    say("IOCTL %#lx RESTRICT %u\n", req, *(domid_t *)arg);
    return 0;
}

static int unexpected_ioctl(unsigned long req)
{
    say("IOCTL %#lx UNEXPECTED\n", req);
    errno = ENOTTY;
    return -1;
}

#endif /* PRIVCMD_INTERPOSER_H */
