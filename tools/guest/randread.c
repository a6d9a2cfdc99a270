/*
 * tools/guest/randread.c: 4 KiB random reads from a block device at a given
 * queue depth, for the test guest's "randread" check (tools/guest/init), in
 * place of fio (whose Debian package pulls in dozens of shared libraries).
 * Built static by tools/guest-image.
 *
 *   randread DEVICE QUEUE_DEPTH SECONDS
 *
 * Opens DEVICE (a block device, or a regular file) with O_DIRECT, keeps
 * QUEUE_DEPTH reads of 4096 bytes in flight through Linux native AIO
 * (io_setup/io_submit/io_getevents, the engine fio calls libaio; the same
 * engine at depth 1 for QD1), each at a 4 KiB-aligned offset drawn uniformly
 * over the whole device by xorshift64* with a fixed seed (so every run, under
 * every VMM, reads the same offsets), for SECONDS seconds of CLOCK_MONOTONIC.
 * Prints one line:
 *
 *   VMMKIT randread dev=<DEVICE> qd=<n> bs=4096 ios=<completed> usecs=<elapsed>
 *     iops=<ios per second, integer> errors=<failed reads>
 *
 * and exits 0, or prints "randread: <why>" on stderr and exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 4096
#define MAX_QD 256

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t next_random(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545f4914f6cdd1dull;
}

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int fail(const char* what) {
  fprintf(stderr, "randread: %s: %s\n", what, strerror(errno));
  return 1;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: randread DEVICE QUEUE_DEPTH SECONDS\n");
    return 1;
  }
  const char* dev = argv[1];
  const long qd = strtol(argv[2], NULL, 10);
  const long secs = strtol(argv[3], NULL, 10);
  if (qd < 1 || qd > MAX_QD || secs < 1 || secs > 3600) {
    fprintf(stderr, "randread: QUEUE_DEPTH must be 1..%d, SECONDS 1..3600\n",
            MAX_QD);
    return 1;
  }
  const int fd = open(dev, O_RDONLY | O_DIRECT);
  if (fd < 0) return fail(dev);
  uint64_t size = 0;
  struct stat st;
  if (fstat(fd, &st) != 0) return fail("fstat");
  if (S_ISREG(st.st_mode)) {
    size = (uint64_t)st.st_size; /* a file: for trying it out on a host */
  } else if (ioctl(fd, BLKGETSIZE64, &size) != 0) {
    return fail("BLKGETSIZE64");
  }
  const uint64_t blocks = size / BLOCK;
  if (blocks == 0) {
    fprintf(stderr, "randread: %s is smaller than %d bytes\n", dev, BLOCK);
    return 1;
  }
  unsigned char* buf = NULL;
  if (posix_memalign((void**)&buf, BLOCK, (size_t)qd * BLOCK) != 0) {
    fprintf(stderr, "randread: out of memory\n");
    return 1;
  }
  aio_context_t ctx = 0;
  if (syscall(SYS_io_setup, qd, &ctx) != 0) return fail("io_setup");

  static struct iocb cbs[MAX_QD];
  struct iocb* ptrs[MAX_QD];
  for (long i = 0; i < qd; ++i) {
    memset(&cbs[i], 0, sizeof(cbs[i]));
    cbs[i].aio_fildes = (uint32_t)fd;
    cbs[i].aio_lio_opcode = IOCB_CMD_PREAD;
    cbs[i].aio_buf = (uint64_t)(uintptr_t)(buf + i * BLOCK);
    cbs[i].aio_nbytes = BLOCK;
    cbs[i].aio_data = (uint64_t)i;
  }
  const uint64_t t0 = now_us(), end = t0 + (uint64_t)secs * 1000000u;
  uint64_t ios = 0, errors = 0;
  long in_flight = 0;
  int stopping = 0;
  /* Fill the queue, then resubmit each completed slot until the time is up. */
  for (long i = 0; i < qd; ++i) {
    cbs[i].aio_offset = (int64_t)((next_random() % blocks) * BLOCK);
    ptrs[i] = &cbs[i];
  }
  if (syscall(SYS_io_submit, ctx, qd, ptrs) != qd) return fail("io_submit");
  in_flight = qd;
  struct io_event events[MAX_QD];
  while (in_flight > 0) {
    const long n = syscall(SYS_io_getevents, ctx, 1, qd, events, NULL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("io_getevents");
    }
    in_flight -= n;
    long resubmit = 0;
    if (!stopping && now_us() >= end) stopping = 1;
    for (long e = 0; e < n; ++e) {
      if (events[e].res == BLOCK) {
        ++ios;
      } else {
        ++errors;
      }
      if (!stopping) {
        struct iocb* cb = &cbs[events[e].data];
        cb->aio_offset = (int64_t)((next_random() % blocks) * BLOCK);
        ptrs[resubmit++] = cb;
      }
    }
    if (resubmit > 0) {
      if (syscall(SYS_io_submit, ctx, resubmit, ptrs) != resubmit) {
        return fail("io_submit");
      }
      in_flight += resubmit;
    }
  }
  const uint64_t us = now_us() - t0;
  syscall(SYS_io_destroy, ctx);
  close(fd);
  printf(
      "VMMKIT randread dev=%s qd=%ld bs=%d ios=%llu usecs=%llu iops=%llu "
      "errors=%llu\n",
      strrchr(dev, '/') ? strrchr(dev, '/') + 1 : dev, qd, BLOCK,
      (unsigned long long)ios, (unsigned long long)us,
      (unsigned long long)(us ? ios * 1000000u / us : 0),
      (unsigned long long)errors);
  return errors == 0 ? 0 : 1;
}
