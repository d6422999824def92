/*
 * rig-xc: the one libxenctrl call the rig's dom0 may need to make itself, to keep going when a
 * device model did not hand a function back.
 *
 *   rig-xc dequarantine SBDF   XEN_DOMCTL_deassign_device from DOMID_IO (what libxl does in
 *                              libxl_pci.c:904 when a device stops being assignable): Xen moves
 *                              the function of a dead domain to dom_io ("quarantine",
 *                              xen/drivers/passthrough/pci.c:849-859); this gives it back to dom0.
 *
 * The rig calls it only after it has judged and reported the device model's own hand-back, and
 * says so. SBDF is seg<<16 | bus<<8 | devfn. Built on the host against libxen-dev 4.17 (dynamic:
 * dom0's xen-utils-4.17 brings the same libxenctrl.so.4.17).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xenctrl.h>

int main(int argc, char **argv)
{
    if (argc != 3 || strcmp(argv[1], "dequarantine") != 0) {
        fprintf(stderr, "usage: rig-xc dequarantine SBDF\n");
        return 2;
    }
    uint32_t sbdf = (uint32_t)strtoul(argv[2], 0, 0);
    xc_interface *xch = xc_interface_open(0, 0, 0);
    if (!xch) {
        perror("xc_interface_open");
        return 1;
    }
    int rc = xc_deassign_device(xch, DOMID_IO, sbdf);
    int err = errno;
    printf("rig-xc dequarantine sbdf=%#x: rc=%d%s%s\n", sbdf, rc, rc ? " " : "", rc ? strerror(err) : "");
    xc_interface_close(xch);
    return rc == 0 ? 0 : 1;
}
