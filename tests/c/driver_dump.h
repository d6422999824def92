/*
 * The log writer the two test-only drivers share (tests/c/dmop_driver.c,
 * tests/c/pt_driver.c): say() appends one formatted line to the fd `dump`
 * (the driver opens it from $DMOP_DUMP / $PT_DUMP), aborting on a line too
 * long or a short write. Never use it outside those tests.
 */
#ifndef DRIVER_DUMP_H
#define DRIVER_DUMP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int dump = -1;

static void say(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line) || write(dump, line, n) != n)
        abort();
}

#endif /* DRIVER_DUMP_H */
