/*
 * bar-peek: reads a 32-bit register of a PCI BAR through its sysfs resource file, inside the
 * rig's PVH guest (scenario g: after dom0 stops the pci-host-bridge, the guest's next read of
 * the passed-through function's BAR must not reach the device).
 *
 *   bar-peek RESOURCE OFFSET                 one read, prints "bar-peek OFFSET=VALUE"
 *   bar-peek RESOURCE OFFSET watch SECONDS   reads every 100 ms for at most SECONDS; prints the
 *                                            first value and every change with the time since
 *                                            start; stops early once the value has read
 *                                            0xffffffff for 3 s; last line:
 *                                            "bar-peek done reads=N first=V last=V changes=N
 *                                             ones_after=S|never device_after_ones=N"
 *                                            (device_after_ones: reads that returned something
 *                                            other than all-ones after the first all-ones read)
 *
 * NVMe CSTS is at BAR0 + 0x1c. Built on the host with `gcc -O2 -static`.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 5) {
        fprintf(stderr, "usage: bar-peek RESOURCE OFFSET [watch SECONDS]\n");
        return 2;
    }
    unsigned long off = strtoul(argv[2], 0, 0);
    int fd = open(argv[1], O_RDWR | O_SYNC);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    long pg = sysconf(_SC_PAGESIZE);
    unsigned long base = off & ~(unsigned long)(pg - 1);
    volatile uint8_t *m = mmap(0, pg, PROT_READ, MAP_SHARED, fd, (off_t)base);
    if (m == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    volatile uint32_t *r = (volatile uint32_t *)(m + (off - base));
    if (argc == 3) {
        printf("bar-peek %#lx=%#x\n", off, *r);
        return 0;
    }
    double limit = atof(argv[4]), t0 = now(), ones_at = -1;
    uint32_t first = *r, last = first;
    unsigned long reads = 1, changes = 0, device_after_ones = 0;
    printf("bar-peek t=0.0 %#lx=%#x\n", off, first);
    fflush(stdout);
    if (first == 0xffffffffu)
        ones_at = 0;
    while (now() - t0 < limit) {
        usleep(100000);
        uint32_t v = *r;
        reads++;
        double t = now() - t0;
        if (v != last) {
            changes++;
            printf("bar-peek t=%.1f %#lx=%#x\n", t, off, v);
            fflush(stdout);
        }
        if (v == 0xffffffffu && ones_at < 0)
            ones_at = t;
        if (v != 0xffffffffu && ones_at >= 0)
            device_after_ones++;
        last = v;
        if (ones_at >= 0 && v == 0xffffffffu && t - ones_at >= 3)
            break;
    }
    printf("bar-peek done reads=%lu first=%#x last=%#x changes=%lu ones_after=", reads, first, last, changes);
    if (ones_at >= 0)
        printf("%.1fs", ones_at);
    else
        printf("never");
    printf(" device_after_ones=%lu\n", device_after_ones);
    return 0;
}
