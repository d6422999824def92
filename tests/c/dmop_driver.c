/*
 * Test-only driver for tests/tests/abi_wire.rs: calls Debian's real
 * libxendevicemodel with fixed arguments, under the LD_PRELOAD interposer
 * tests/c/dmop_interposer.c, which records the DM_OP buffers the library
 * sends. Before each call it appends "CALL <label>" to $DMOP_DUMP and after it
 * "RESULT <label> <name> <value>" for the values the library returned, so the
 * Rust test can pair each recorded DM_OP with the call that made it. The Rust
 * test knows the same labels and arguments; keep both in step.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver_dump.h" /* dump, say() */

#include <xendevicemodel.h>
#include <xen/sched.h>

#define DOM 0x1234 /* target domid; distinct bytes show byte order */
#define ID 0x0102  /* ioreq server id */

static int failed;

#define CALL(label, expr)                                                      \
    do {                                                                       \
        say("CALL %s\n", label);                                               \
        if ((expr) != 0) {                                                     \
            fprintf(stderr, "dmop_driver: %s failed: %m\n", label);            \
            failed = 1;                                                        \
        }                                                                      \
    } while (0)

int main(void)
{
    const char *path = getenv("DMOP_DUMP");
    xendevicemodel_handle *h;
    ioservid_t id;
    xen_pfn_t gfn, bufgfn;
    evtchn_port_t port;
    unsigned int vcpus;
    char label[64];

    /* Refuse to talk to a real hypervisor. */
    if (!path || !dlsym(RTLD_DEFAULT, "dmop_interposer_loaded")) {
        fprintf(stderr, "dmop_driver: run only with DMOP_DUMP set and "
                        "LD_PRELOAD=libdmop_interposer.so\n");
        return 2;
    }
    dump = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (dump < 0) {
        perror(path);
        return 2;
    }

    say("CALL open\n");
    h = xendevicemodel_open(NULL, 0);
    if (!h) {
        fprintf(stderr, "dmop_driver: xendevicemodel_open failed: %m\n");
        return 1;
    }

    CALL("restrict", xendevicemodel_restrict(h, DOM));

    for (int b = 0; b <= 2; b++) {
        snprintf(label, sizeof(label), "create_ioreq_server/%d", b);
        CALL(label, xendevicemodel_create_ioreq_server(h, DOM, b, &id));
        say("RESULT %s id %u\n", label, id);
    }

    CALL("get_ioreq_server_info/gfns",
         xendevicemodel_get_ioreq_server_info(h, DOM, ID, &gfn, &bufgfn, &port));
    say("RESULT get_ioreq_server_info/gfns bufioreq_port %u\n", port);
    CALL("get_ioreq_server_info/no_gfns",
         xendevicemodel_get_ioreq_server_info(h, DOM, ID, NULL, NULL, &port));
    say("RESULT get_ioreq_server_info/no_gfns bufioreq_port %u\n", port);
    /* Only both pointers NULL means no_gfns. */
    CALL("get_ioreq_server_info/ioreq_gfn_only",
         xendevicemodel_get_ioreq_server_info(h, DOM, ID, &gfn, NULL, NULL));

    /* One CALL per library call, alike but for their arguments, on purpose: the
     * Rust test knows each by its label and arguments. */
    CALL("map_io_range/port",
         xendevicemodel_map_io_range_to_ioreq_server(h, DOM, ID, 0, 0xb000, 0xb00f));
    CALL("map_io_range/memory",
         xendevicemodel_map_io_range_to_ioreq_server(h, DOM, ID, 1, 0xfec00000,
                                                     0x1fec000ff));
    CALL("map_pcidev",
         xendevicemodel_map_pcidev_to_ioreq_server(h, DOM, ID, 0x0001, 0x02, 0x1f, 7));
    CALL("unmap_io_range/port",
         xendevicemodel_unmap_io_range_from_ioreq_server(h, DOM, ID, 0, 0xcf8, 0xcff));
    CALL("unmap_io_range/memory",
         xendevicemodel_unmap_io_range_from_ioreq_server(h, DOM, ID, 1, 0xfee00000,
                                                         0xfeefffff));
    CALL("unmap_pcidev",
         xendevicemodel_unmap_pcidev_from_ioreq_server(h, DOM, ID, 0, 0, 3, 0));

    CALL("set_ioreq_server_state/0", xendevicemodel_set_ioreq_server_state(h, DOM, ID, 0));
    CALL("set_ioreq_server_state/1", xendevicemodel_set_ioreq_server_state(h, DOM, ID, 1));
    CALL("set_ioreq_server_state/2", xendevicemodel_set_ioreq_server_state(h, DOM, ID, 2));
    CALL("destroy_ioreq_server", xendevicemodel_destroy_ioreq_server(h, DOM, ID));

    CALL("set_pci_intx_level/1", xendevicemodel_set_pci_intx_level(h, DOM, 0, 0, 3, 1, 1));
    CALL("set_pci_intx_level/0",
         xendevicemodel_set_pci_intx_level(h, DOM, 0x0102, 0x03, 0x1f, 3, 0));
    CALL("set_isa_irq_level/1", xendevicemodel_set_isa_irq_level(h, DOM, 9, 1));
    CALL("set_isa_irq_level/0", xendevicemodel_set_isa_irq_level(h, DOM, 15, 0));
    CALL("inject_msi/low", xendevicemodel_inject_msi(h, DOM, 0xfee01000, 0x4031));
    CALL("inject_msi/high",
         xendevicemodel_inject_msi(h, DOM, 0x0000000123456789ull, 0x89abcdef));

    static const unsigned int reasons[] = {SHUTDOWN_poweroff, SHUTDOWN_reboot,
                                           SHUTDOWN_suspend,  SHUTDOWN_crash,
                                           SHUTDOWN_watchdog, SHUTDOWN_soft_reset};
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
        snprintf(label, sizeof(label), "shutdown/%u", reasons[i]);
        CALL(label, xendevicemodel_shutdown(h, DOM, reasons[i]));
    }

    CALL("nr_vcpus", xendevicemodel_nr_vcpus(h, DOM, &vcpus));
    say("RESULT nr_vcpus vcpus %u\n", vcpus);

    say("CALL close\n");
    if (xendevicemodel_close(h) != 0) {
        fprintf(stderr, "dmop_driver: xendevicemodel_close failed: %m\n");
        failed = 1;
    }
    return failed;
}
