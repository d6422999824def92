/*
 * nvme-virt: the NVMe admin commands the rig's dom0 needs to bring up an SR-IOV VF of QEMU's
 * emulated NVMe controller (the sequence of QEMU's docs/system/devices/nvme.rst, "SR-IOV",
 * which uses nvme-cli's `virt-mgmt` and `list-secondary`; the rig's rootfs has no nvme-cli).
 *
 *   nvme-virt DEV mgmt CNTLID RT ACT NR   Virtualization Management (admin opcode 0x1C):
 *                                         CDW10 = ACT[3:0] | RT[10:8] | CNTLID[31:16], CDW11 = NR
 *                                         RT 0 = VQ resources, 1 = VI resources;
 *                                         ACT 1 = primary flexible allocation, 7 = secondary
 *                                         offline, 8 = secondary assign, 9 = secondary online
 *   nvme-virt DEV seclist                 Identify (0x06) CNS 0x15, Secondary Controller List:
 *                                         prints each entry's SCID, PCID, SCS (bit 0 = online),
 *                                         VFN, NVQ, NVI (NVMe 1.4 figure 270: bytes 0-1, 2-3, 4,
 *                                         8-9, 10-11, 12-13)
 *
 * Goes through NVME_IOCTL_ADMIN_CMD on /dev/nvmeN (linux/nvme_ioctl.h). Built on the host with
 * `gcc -O2 -static`.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/nvme_ioctl.h>

static unsigned long num(const char *s)
{
    char *end;
    unsigned long v = strtoul(s, &end, 0);
    if (*s == 0 || *end != 0) {
        fprintf(stderr, "nvme-virt: not a number: %s\n", s);
        exit(2);
    }
    return v;
}

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: nvme-virt DEV mgmt CNTLID RT ACT NR | nvme-virt DEV seclist\n");
        return 2;
    }
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    struct nvme_admin_cmd c;
    memset(&c, 0, sizeof c);
    if (argc == 3 && strcmp(argv[2], "seclist") == 0) {
        static uint8_t buf[4096];
        c.opcode = 0x06;
        c.cdw10 = 0x15;
        c.addr = (uint64_t)(uintptr_t)buf;
        c.data_len = sizeof buf;
        int rc = ioctl(fd, NVME_IOCTL_ADMIN_CMD, &c);
        printf("seclist rc=%d entries=%u", rc, buf[0]);
        for (unsigned i = 0; rc == 0 && i < buf[0] && i < 8; i++) {
            const uint8_t *e = buf + 32 + 32 * i;
            printf(" [scid=%u pcid=%u online=%u vfn=%u nvq=%u nvi=%u]", le16(e), le16(e + 2), e[4] & 1,
                   le16(e + 8), le16(e + 10), le16(e + 12));
        }
        printf("\n");
        return rc == 0 ? 0 : 1;
    }
    if (argc == 7 && strcmp(argv[2], "mgmt") == 0) {
        unsigned long cntlid = num(argv[3]), rt = num(argv[4]), act = num(argv[5]), nr = num(argv[6]);
        c.opcode = 0x1c;
        c.cdw10 = (uint32_t)((act & 0xf) | (rt & 0x7) << 8 | (cntlid & 0xffff) << 16);
        c.cdw11 = (uint32_t)(nr & 0xffff);
        int rc = ioctl(fd, NVME_IOCTL_ADMIN_CMD, &c);
        printf("virt-mgmt cntlid=%lu rt=%lu act=%lu nr=%lu: rc=%d result=%#x\n", cntlid, rt, act, nr, rc, c.result);
        return rc == 0 ? 0 : 1;
    }
    fprintf(stderr, "nvme-virt: bad arguments\n");
    return 2;
}
