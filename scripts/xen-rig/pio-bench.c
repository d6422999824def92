/*
 * pio-bench: scenario d of the Xen rig, run inside the PVH guest.
 *
 * Times N reads of PCI config space through configuration mechanism #1 (one write of 0xCF8,
 * then N reads of 0xCFC: Xen turns each into an IOREQ_TYPE_PCI_CONFIG request that
 * pci-host-bridge in dom0 answers) against N reads of an I/O port nobody claims (Xen's null
 * handler answers all-ones without leaving the hypervisor), in the same boot.
 *
 * Usage: pio-bench [N [UNCLAIMED_PORT [BUDGET_S]]]   (defaults 100000, 0x510, 0 = no budget)
 * With a budget, a calibration of 200 reads of each kind decides how many reads fit in
 * BUDGET_S seconds; the line then says n=<done> (asked <N>). The process pins itself to CPU 0
 * (the guest's clocksource may be an unsynchronised TSC under QEMU TCG).
 * Prints one line: RIG-BENCH n=... config_us=... unclaimed_us=... ratio=...
 * Built on the host with `gcc -O2 -static`.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/io.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    unsigned port = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 0) : 0x510;
    double budget = argc > 3 ? atof(argv[3]) : 0;
    long asked = n;
    cpu_set_t cpus;
    unsigned v = 0, id, junk;
    double t0, t1, t2, t3;
    long i;

    if (n <= 0 || ioperm(0xCF8, 8, 1) || ioperm(port, 4, 1)) {
        perror("RIG-BENCH ioperm");
        return 1;
    }
    CPU_ZERO(&cpus);
    CPU_SET(0, &cpus);
    sched_setaffinity(0, sizeof(cpus), &cpus);
    outl(0x80000000u, 0xCF8); /* enable, bus 0, device 0, function 0, register 0 */
    id = inl(0xCFC);
    junk = inl(port);
    if (budget > 0) {
        double c0 = now(), c1, c2;
        for (i = 0; i < 200; i++)
            v ^= inl(0xCFC);
        c1 = now();
        for (i = 0; i < 200; i++)
            v ^= inl(port);
        c2 = now();
        /* both loops of n reads plus the n/10 repeat must fit in the budget */
        double per = ((c1 - c0) * 1.1 + (c2 - c1)) / 200;
        if (per > 0 && budget / per < n)
            n = (long)(budget / per) / 100 * 100 + 100;
        printf("RIG-BENCH calibration: config_us=%.1f unclaimed_us=%.1f -> n=%ld\n",
               (c1 - c0) * 1e6 / 200, (c2 - c1) * 1e6 / 200, n);
        fflush(stdout);
    }

    t0 = now();
    for (i = 0; i < n; i++) {
        v ^= inl(0xCFC);
        /* the calibration can be far off on a loaded host: the config loop stops at 60 % of
         * the budget, and the other loops then use the count it reached */
        if (budget > 0 && i % 100 == 99 && now() - t0 > 0.6 * budget) {
            n = i + 1;
            break;
        }
    }
    t1 = now();
    for (i = 0; i < n; i++)
        v ^= inl(port);
    t2 = now();
    /* the config loop once more, so that a drift over time shows as a difference */
    for (i = 0; i < n / 10; i++)
        v ^= inl(0xCFC);
    t3 = now();

    printf("RIG-BENCH n=%ld asked=%ld id=%08x unclaimed_port=%#x reads_as=%08x "
           "config_us=%.2f unclaimed_us=%.2f ratio=%.2f config_again_us=%.2f total_s=%.1f (x=%x)\n",
           n, asked, id, port, junk, (t1 - t0) * 1e6 / n, (t2 - t1) * 1e6 / n,
           (t1 - t0) / (t2 - t1), (t3 - t2) * 1e6 / (n / 10 ? n / 10 : 1), t3 - t0, v);
    return 0;
}
