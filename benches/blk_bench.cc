// benches/blk_bench: virtio-blk requests per second through the device, and
// the CPU cost per request, so that end-to-end figures can later be split into
// device cost and VM cost.
//
// Setup: a 64 MiB raw image in /tmp, written once with non-zero data (so it
// sits in the page cache: the figures are for a hot cache, not for the disk)
// and unlinked at once (the device keeps its fd). 16 MiB of guest memory, a
// modern driver (virtio-device/testing TestDriver) with EVENT_IDX and
// INDIRECT_DESC, queue size 256.
// One benchmark iteration is one batch:
//   1. driver: for each of `batch` requests, write a random 4 KiB-aligned
//      sector into its header and post {header 16 B, data 4 KiB, status 1 B};
//   2. kick: the device pops every chain, preadv/pwritev's straight into or
//      out of guest memory, writes the status, publishes used and decides on
//      the interrupt (timed separately: wall and thread CPU time);
//   3. driver: reaps the used entries and checks each status byte.
// Counters:
//   req_per_s          requests per second, whole iteration (driver included)
//   dev_req_per_s      requests per second of device time (step 2 only)
//   dev_cpu_ns_per_req thread CPU time (user + system) in step 2 per request
//   dev_wall_ns_per_req wall time in step 2 per request
// BM_Preadv4K / BM_Pwritev4K are the floor: the same I/O as bare preadv(2) /
// pwritev(2) calls, with no ring and no device; BM_EmptyKick is the fixed
// cost of one kick with nothing posted, measurement included.
//
//   bazel run -c opt //benches:blk_bench
//   bazel run -c opt //benches:blk_bench -- --benchmark_filter=Read
#include <fcntl.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "virtio-device/blk.h"
#include "virtio-device/device_state.h"
#include "virtio-device/testing/test_driver.h"
#include "virtqueue/guest_memory.h"

namespace vmmkit::virtio {
namespace {

using testing::TestDriver;
using virtqueue::GuestMemoryMmap;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kImageBytes = 64ull << 20;
constexpr uint32_t kIoBytes = 4096;
constexpr uint64_t kIoBlocks = kImageBytes / kIoBytes;

// A 64 MiB image in /tmp filled with data, already unlinked; the path stays
// valid until Create() has opened it.
class BenchImage {
 public:
  BenchImage() {
    path_ = "/tmp/vmmkit-blk-bench-XXXXXX";
    fd_ = mkstemp(path_.data());
    if (fd_ < 0) {
      std::perror("mkstemp");
      std::abort();
    }
    std::vector<uint8_t> chunk(1 << 20);
    for (uint64_t off = 0; off < kImageBytes; off += chunk.size()) {
      for (size_t i = 0; i < chunk.size(); ++i) {
        chunk[i] = static_cast<uint8_t>((off + i) * 31 + 7);
      }
      if (pwrite(fd_, chunk.data(), chunk.size(), static_cast<off_t>(off)) !=
          static_cast<ssize_t>(chunk.size())) {
        std::perror("pwrite");
        std::abort();
      }
    }
  }
  ~BenchImage() {
    Unlink();
    close(fd_);
  }
  const std::string& path() const { return path_; }
  int fd() const { return fd_; }
  void Unlink() {
    if (!unlinked_) unlink(path_.c_str());
    unlinked_ = true;
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool unlinked_ = false;
};

uint64_t XorShift(uint64_t& s) {
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

int64_t ThreadCpuNs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

void Die(const absl::Status& s, const char* what) {
  std::fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
  std::abort();
}

// Random 4 KiB reads (type kBlkTIn) or writes (kBlkTOut), `batch` per kick.
void BM_Blk4K(benchmark::State& state, uint32_t type) {
  const int batch = static_cast<int>(state.range(0));
  BenchImage image;
  auto blk_or = BlockDevice::Create({.path = image.path()});
  if (!blk_or.ok()) Die(blk_or.status(), "BlockDevice::Create");
  std::unique_ptr<BlockDevice> blk = *std::move(blk_or);
  image.Unlink();
  auto mem_or = GuestMemoryMmap::Create({{.guest_base = 0, .size = 16 << 20}});
  if (!mem_or.ok()) Die(mem_or.status(), "GuestMemoryMmap::Create");
  std::unique_ptr<GuestMemoryMmap> memory = *std::move(mem_or);
  DeviceState dev(*blk, *memory);
  TestDriver drv(dev, *memory);
  if (absl::Status s = drv.Start(
          Features::Of({kFEventIdx, kFIndirectDesc, kBlkFFlush, kBlkFSegMax,
                        kBlkFSizeMax, kBlkFBlkSize, kBlkFConfigWce}));
      !s.ok()) {
    Die(s, "TestDriver::Start");
  }

  struct Slot {
    uint64_t header, data, status;
  };
  std::vector<Slot> slots(batch);
  for (Slot& s : slots) {
    s.header = drv.Alloc(16);
    s.data = drv.Alloc(kIoBytes);
    s.status = drv.Alloc(1);
    const BlkReqHeader h{type, 0, 0};  // little-endian: a modern driver
    if (!memory->WriteObj(s.header, h).ok()) std::abort();
  }
  const bool write = type == kBlkTOut;

  uint64_t rng = 0x9e3779b97f4a7c15ull;
  int64_t device_wall_ns = 0;
  int64_t device_cpu_ns = 0;
  uint64_t requests = 0;
  for (auto _ : state) {
    for (const Slot& s : slots) {
      const uint64_t sector = (XorShift(rng) % kIoBlocks) * (kIoBytes / 512);
      if (!memory->WriteObj(s.header + 8, sector).ok() ||
          !memory->WriteObj(s.status, uint8_t{0xff}).ok()) {
        std::abort();
      }
      if (!drv.queue(0)
               .AddChain({{s.header, 16, false},
                          {s.data, kIoBytes, /*writable=*/!write},
                          {s.status, 1, true}})
               .ok()) {
        std::abort();
      }
    }
    const int64_t cpu0 = ThreadCpuNs();
    const Clock::time_point t0 = Clock::now();
    drv.Kick(0);
    const Clock::time_point t1 = Clock::now();
    const int64_t cpu1 = ThreadCpuNs();
    device_wall_ns +=
        std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
    device_cpu_ns += cpu1 - cpu0;
    for (int i = 0; i < batch; ++i) {
      std::optional<virtqueue::VirtqUsedElem> used = drv.queue(0).PopUsed();
      if (!used.has_value()) {
        state.SkipWithError("a request was not completed");
        return;
      }
    }
    for (const Slot& s : slots) {
      absl::StatusOr<uint8_t> status = memory->ReadObj<uint8_t>(s.status);
      if (!status.ok() || *status != kBlkSOk) {
        state.SkipWithError("a request failed");
        return;
      }
    }
    requests += batch;
  }
  const double n = static_cast<double>(requests);
  state.counters["req_per_s"] =
      benchmark::Counter(n, benchmark::Counter::kIsRate);
  state.counters["dev_req_per_s"] =
      device_wall_ns > 0 ? n * 1e9 / static_cast<double>(device_wall_ns) : 0;
  state.counters["dev_cpu_ns_per_req"] =
      n > 0 ? static_cast<double>(device_cpu_ns) / n : 0;
  state.counters["dev_wall_ns_per_req"] =
      n > 0 ? static_cast<double>(device_wall_ns) / n : 0;
  state.SetBytesProcessed(static_cast<int64_t>(requests) * kIoBytes);
}

void BM_Blk4KRead(benchmark::State& state) { BM_Blk4K(state, kBlkTIn); }
void BM_Blk4KWrite(benchmark::State& state) { BM_Blk4K(state, kBlkTOut); }

// The floor: the same random 4 KiB reads (writes) as bare preadv(2)
// (pwritev(2)) calls, with no ring and no device.
void BM_Bare4K(benchmark::State& state, bool write) {
  const int batch = static_cast<int>(state.range(0));
  BenchImage image;
  image.Unlink();
  std::vector<uint8_t> buffers(size_t{kIoBytes} * batch, 0x5a);
  uint64_t rng = 0x9e3779b97f4a7c15ull;
  int64_t cpu_ns = 0;
  uint64_t requests = 0;
  for (auto _ : state) {
    const int64_t cpu0 = ThreadCpuNs();
    for (int i = 0; i < batch; ++i) {
      iovec v{buffers.data() + size_t{kIoBytes} * i, kIoBytes};
      const off_t offset =
          static_cast<off_t>((XorShift(rng) % kIoBlocks) * kIoBytes);
      const ssize_t n = write ? pwritev(image.fd(), &v, 1, offset)
                              : preadv(image.fd(), &v, 1, offset);
      if (n != kIoBytes) {
        state.SkipWithError(write ? "pwritev" : "preadv");
        return;
      }
    }
    cpu_ns += ThreadCpuNs() - cpu0;
    requests += batch;
  }
  const double n = static_cast<double>(requests);
  state.counters["req_per_s"] =
      benchmark::Counter(n, benchmark::Counter::kIsRate);
  state.counters["cpu_ns_per_req"] =
      n > 0 ? static_cast<double>(cpu_ns) / n : 0;
  state.SetBytesProcessed(static_cast<int64_t>(requests) * kIoBytes);
}
void BM_Preadv4K(benchmark::State& state) { BM_Bare4K(state, false); }
void BM_Pwritev4K(benchmark::State& state) { BM_Bare4K(state, true); }

// What a kick costs with nothing posted (Notify, ProcessQueue, an empty Pop)
// plus the two clock reads around it: the fixed part of each batch.
void BM_EmptyKick(benchmark::State& state) {
  BenchImage image;
  auto blk_or = BlockDevice::Create({.path = image.path()});
  if (!blk_or.ok()) Die(blk_or.status(), "BlockDevice::Create");
  std::unique_ptr<BlockDevice> blk = *std::move(blk_or);
  image.Unlink();
  auto mem_or = GuestMemoryMmap::Create({{.guest_base = 0, .size = 16 << 20}});
  if (!mem_or.ok()) Die(mem_or.status(), "GuestMemoryMmap::Create");
  std::unique_ptr<GuestMemoryMmap> memory = *std::move(mem_or);
  DeviceState dev(*blk, *memory);
  TestDriver drv(dev, *memory);
  if (absl::Status s = drv.Start(Features::Of({kFEventIdx})); !s.ok()) {
    Die(s, "TestDriver::Start");
  }
  int64_t cpu_ns = 0;
  int64_t kicks = 0;
  for (auto _ : state) {
    const int64_t cpu0 = ThreadCpuNs();
    const Clock::time_point t0 = Clock::now();
    drv.Kick(0);
    benchmark::DoNotOptimize(Clock::now() - t0);
    cpu_ns += ThreadCpuNs() - cpu0;
    ++kicks;
  }
  state.counters["cpu_ns_per_kick"] =
      kicks > 0 ? static_cast<double>(cpu_ns) / static_cast<double>(kicks) : 0;
}

BENCHMARK(BM_Blk4KRead)->Arg(32)->Arg(1)->UseRealTime()->MinTime(2.0);
BENCHMARK(BM_Blk4KWrite)->Arg(32)->UseRealTime()->MinTime(2.0);
BENCHMARK(BM_Preadv4K)->Arg(32)->UseRealTime()->MinTime(2.0);
BENCHMARK(BM_Pwritev4K)->Arg(32)->UseRealTime()->MinTime(2.0);
BENCHMARK(BM_EmptyKick)->UseRealTime()->MinTime(1.0);

}  // namespace
}  // namespace vmmkit::virtio

BENCHMARK_MAIN();
