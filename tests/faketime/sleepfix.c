#define _GNU_SOURCE
#include <time.h>
#include <errno.h>
#include <unistd.h>
#include <sys/syscall.h>
/* libfaketime with FAKETIME_DONT_FAKE_MONOTONIC=1 shifts absolute monotonic deadlines
   and makes clock_nanosleep fail with EINVAL: monotonic time is real, so pass it through. */
int clock_nanosleep(clockid_t clk, int flags, const struct timespec *req, struct timespec *rem) {
    long r = syscall(SYS_clock_nanosleep, clk, flags, req, rem);
    return r == 0 ? 0 : errno;
}
