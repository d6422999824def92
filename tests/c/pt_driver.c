/*
 * Test-only driver for tests/tests/abi_wire_passthrough/: calls Debian's
 * real libxenctrl (Xen 4.17) passthrough functions with fixed arguments,
 * under the LD_PRELOAD interposer tests/c/pt_interposer.c, which records the
 * domctl / physdev argument bytes the library hands to
 * IOCTL_PRIVCMD_HYPERCALL and plays a scripted hypervisor.
 *
 * Before each call it appends "CALL <label>" to $PT_DUMP and after it
 * "RESULT <label> <name> <value>" lines (always "rc", plus what the library
 * returned through pointers), so the Rust test can pair each recorded
 * hypercall with the call that made it. The Rust test knows the same labels,
 * arguments and scripts; keep both in step.
 *
 * Uninitialised bytes: libxenctrl 4.17 builds domctls in an uninitialised
 * stack variable (DECLARE_DOMCTL is `struct xen_domctl domctl`,
 * tools/libs/ctrl/xc_private.h:64) and sets only the members it uses, then
 * copies all sizeof(struct xen_domctl) bytes into the hypercall buffer. Right
 * before each call the driver paints 64 KiB of the stack below main() with
 * the byte $PT_CANARY, so bytes the library never wrote carry the canary. The
 * Rust test runs the driver twice with different canaries: a byte that
 * differs between the runs (and equals the canary each time) is proven
 * uninitialised; every other byte is compared.
 *
 * PHYSDEVOP_prepare_msix / PHYSDEVOP_release_msix: libxenctrl 4.17 has no
 * wrapper for them (`nm -D libxenctrl.so` has none, nothing in Xen 4.17's
 * tools/ issues them; in Linux it is xen-pciback that does, from the
 * kernel). For those the driver builds `struct physdev_pci_device` from
 * <xen/physdev.h> itself (designated initialiser: every byte defined) and
 * issues it through libxencall's xencall2(), the same path libxenctrl's
 * do_physdev_op takes, so the interposer records it like the others.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver_dump.h" /* dump, say() */

#include <xenctrl.h>
#include <xencall.h>
#include <xen/physdev.h>

#define DOM 0x1234 /* target domid; distinct bytes show byte order */

static unsigned char canary;

/* Fill the stack the next call's frames will occupy with the canary. */
static __attribute__((noinline)) void paint(void)
{
    unsigned char area[64 * 1024];
    memset(area, canary, sizeof(area));
    __asm__ volatile("" : : "r"(area) : "memory");
}

static void (*script)(const long *, int);
static int *getinfo_delta;

#define SCRIPT(...)                                                            \
    do {                                                                       \
        static const long s_[] = {__VA_ARGS__};                                \
        script(s_, (int)(sizeof(s_) / sizeof(s_[0])));                         \
    } while (0)

#define CALL(label, expr)                                                      \
    do {                                                                       \
        long rc_;                                                              \
        say("CALL %s\n", label);                                               \
        paint();                                                               \
        rc_ = (expr);                                                          \
        say("RESULT %s rc %ld\n", label, rc_);                                 \
        script(NULL, 0);                                                       \
    } while (0)

static long prepare_release_msix(xencall_handle *xcall, unsigned int cmd,
                                 uint16_t seg, uint8_t bus, uint8_t devfn)
{
    struct physdev_pci_device dev = {.seg = seg, .bus = bus, .devfn = devfn};
    void *buf = xencall_alloc_buffer(xcall, sizeof(dev));
    long rc;

    if (!buf)
        return -1;
    memcpy(buf, &dev, sizeof(dev));
    rc = xencall2(xcall, __HYPERVISOR_physdev_op, cmd, (uint64_t)(uintptr_t)buf);
    xencall_free_buffer(xcall, buf);
    return rc;
}

int main(void)
{
    const char *path = getenv("PT_DUMP");
    const char *c = getenv("PT_CANARY");
    xc_interface *xch;
    xencall_handle *xcall;
    xc_dominfo_t info;
    int pirq;

    /* Refuse to talk to a real hypervisor. */
    script = (void (*)(const long *, int))dlsym(RTLD_DEFAULT, "pt_interposer_script");
    getinfo_delta = dlsym(RTLD_DEFAULT, "pt_interposer_getinfo_delta");
    if (!path || !c || !dlsym(RTLD_DEFAULT, "pt_interposer_loaded") || !script ||
        !getinfo_delta) {
        fprintf(stderr, "pt_driver: run only with PT_DUMP and PT_CANARY set and "
                        "LD_PRELOAD=libpt_interposer.so\n");
        return 2;
    }
    canary = (unsigned char)strtoul(c, NULL, 0);
    dump = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (dump < 0) {
        perror(path);
        return 2;
    }

    say("CALL open\n");
    xch = xc_interface_open(NULL, NULL, 0);
    xcall = xencall_open(NULL, 0);
    if (!xch || !xcall) {
        fprintf(stderr, "pt_driver: xc_interface_open/xencall_open failed: %m\n");
        return 1;
    }

    /* XEN_DOMCTL_getdomaininfo: libxenctrl 4.17 has no xc_domain_getinfo_single
     * (4.18 does); xc_domain_getinfolist is XEN_SYSCTL_getdomaininfolist. */
    CALL("getinfo", xc_domain_getinfo(xch, DOM, 1, &info));
    say("RESULT getinfo domid %u\nRESULT getinfo max_memkb %lu\n"
        "RESULT getinfo nr_pages %lu\nRESULT getinfo hvm %u\n",
        info.domid, info.max_memkb, info.nr_pages, info.hvm);
    /* Xen answers with the next domain when the one asked for is gone. */
    *getinfo_delta = 1;
    CALL("getinfo/gone", xc_domain_getinfo(xch, DOM, 1, &info));
    say("RESULT getinfo/gone domid %u\n", info.domid);
    *getinfo_delta = 0;

    /* XEN_DOMCTL_memory_mapping (each call starts with a getdomaininfo). */
    CALL("memory_mapping/add",
         xc_domain_memory_mapping(xch, DOM, 0xf0000, 0xe0000, 16, DPCI_ADD_MAPPING));
    CALL("memory_mapping/remove",
         xc_domain_memory_mapping(xch, DOM, 0xf0000, 0xe0000, 16, DPCI_REMOVE_MAPPING));
    /* Partial counts (Xen 4.17 x86 stops after 64 iterations and returns the
     * count done) and E2BIG (what Xen on Arm answers above 64 frames). */
    SCRIPT(64, 64, -E2BIG, -E2BIG, 10, 0, 0);
    CALL("memory_mapping/partial",
         xc_domain_memory_mapping(xch, DOM, 0xf1000, 0x3e1234, 200, DPCI_ADD_MAPPING));
    /* An error while adding: libxenctrl stops and removes the whole range. */
    SCRIPT(64, -EPERM, 0);
    CALL("memory_mapping/add_fails",
         xc_domain_memory_mapping(xch, DOM, 0xf1000, 0x3e1234, 200, DPCI_ADD_MAPPING));
    /* An error while removing: kept, the rest of that chunk is skipped. */
    SCRIPT(64, -EPERM, 0);
    CALL("memory_mapping/remove_fails",
         xc_domain_memory_mapping(xch, DOM, 0xf1000, 0x3e1234, 130, DPCI_REMOVE_MAPPING));
    /* E2BIG down to one frame: libxenctrl gives up. */
    SCRIPT(-E2BIG, -E2BIG);
    CALL("memory_mapping/e2big",
         xc_domain_memory_mapping(xch, DOM, 0xf1000, 0x3e1234, 3, DPCI_ADD_MAPPING));

    /* PHYSDEVOP_map_pirq for MSI (segment 0) and MSI-X (segment 1, an entry
     * and a 64-bit table base); index and pirq -1 as QEMU passes them
     * (XEN_PT_AUTO_ASSIGN / XEN_PT_UNASSIGNED_PIRQ). */
    pirq = -1;
    CALL("map_pirq_msi/msi", xc_physdev_map_pirq_msi(xch, DOM, -1, &pirq, 0x10, 0x03, 0, 0));
    say("RESULT map_pirq_msi/msi pirq %d\n", pirq);
    pirq = -1;
    CALL("map_pirq_msi/msix", xc_physdev_map_pirq_msi(xch, DOM, -1, &pirq, 0x11,
                                                      (0x0001 << 16) | 0x03, 5,
                                                      0xf0fe003000ull));
    say("RESULT map_pirq_msi/msix pirq %d\n", pirq);
    CALL("unmap_pirq", xc_physdev_unmap_pirq(xch, DOM, 0x77));

    /* XEN_DOMCTL_bind_pt_irq / unbind_pt_irq, PT_IRQ_TYPE_MSI. */
    CALL("update_msi_irq", xc_domain_update_msi_irq(xch, DOM, 0x31, 0x77, 0x12305, 0xfeb00000));
    CALL("unbind_msi_irq", xc_domain_unbind_msi_irq(xch, DOM, 0x31, 0x77, 0x12305));

    /* Device assignment. */
    CALL("assign_device", xc_assign_device(xch, DOM, 0x00010311, 0));
    CALL("test_assign_device", xc_test_assign_device(xch, DOM, 0x00010311));
    CALL("deassign_device", xc_deassign_device(xch, DOM, 0x00010311));
    CALL("deassign_device/dom_io", xc_deassign_device(xch, DOMID_IO, 0x00010311));

    /* Permissions and port mappings. */
    CALL("iomem_permission/1", xc_domain_iomem_permission(xch, DOM, 0x3fe000, 0x20, 1));
    CALL("iomem_permission/0", xc_domain_iomem_permission(xch, DOM, 0x3fe000, 0x20, 0));
    CALL("ioport_permission/1", xc_domain_ioport_permission(xch, DOM, 0xc000, 0x40, 1));
    CALL("ioport_permission/0", xc_domain_ioport_permission(xch, DOM, 0xc000, 0x40, 0));
    CALL("ioport_mapping/1", xc_domain_ioport_mapping(xch, DOM, 0xc000, 0xd000, 0x40, 1));
    CALL("ioport_mapping/0", xc_domain_ioport_mapping(xch, DOM, 0xc000, 0xd000, 0x40, 0));
    CALL("irq_permission/1", xc_domain_irq_permission(xch, DOM, 0x77, true));
    CALL("irq_permission/0", xc_domain_irq_permission(xch, DOM, 0x77, false));

    /* No libxenctrl wrapper: the header's struct through libxencall. */
    CALL("prepare_msix", prepare_release_msix(xcall, PHYSDEVOP_prepare_msix, 0x0001, 0x03, 0x11));
    CALL("release_msix", prepare_release_msix(xcall, PHYSDEVOP_release_msix, 0x0001, 0x03, 0x11));

    say("CALL close\n");
    xencall_close(xcall);
    xc_interface_close(xch);
    return 0;
}
