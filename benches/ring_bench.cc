// benches/ring_bench: the device side of a split virtqueue on the workloads of
// shared/bench/WORKLOADS.md, mirrored detail for detail so that the figures
// compare one to one with rust-vmm's virtio-queue measured there.
//
// Memory: 64 MiB at guest address 0, a fresh anonymous private mapping per
// benchmark run. Queue: size 256, desc 0x10000, avail 0x11000, used 0x12000.
// One benchmark iteration is one batch:
//   1. driver (not timed): rewrite the descriptors (and W4's tables), fill the
//      avail ring, W3: set used_event, publish avail.idx (release) + fence;
//   2. device (timed, manual timing): pop every chain, walk its descriptors
//      adding addr ^ len into a sink and summing writable lengths, add_used;
//      W3 wraps this in disable / process / enable-and-recheck and asks once
//      whether the driver must be notified;
//   3. driver (not timed): read used.idx (acquire), check every element.
// Counters: ns_per_chain = total device time / chains; median_ns_per_chain =
// median over batches of (batch device time / chains in the batch).
// A 0.5 s warm-up runs before timing; each benchmark times at least 2 s.
//
//   bazel run -c opt //benches:ring_bench
//   bazel run -c opt //benches:ring_bench -- --benchmark_filter=W2
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "benchmark/benchmark.h"
#include "virtqueue/guest_memory.h"
#include "virtqueue/split_queue.h"
#include "virtqueue/testing/driver_queue.h"

namespace vmmkit::virtqueue {
namespace {

using testing::DriverQueue;
using Clock = std::chrono::steady_clock;

constexpr uint16_t kQueueSize = 256;
constexpr uint64_t kDesc = 0x10000;
constexpr uint64_t kAvail = 0x11000;
constexpr uint64_t kUsed = 0x12000;
constexpr uint64_t kMemory = 64ull << 20;

enum class Workload { kW1, kW2, kW3, kW4 };
enum class Publish { kEachAddUsed, kOncePerBatch };

struct Shape {
  int descs_per_chain;  // main-table descriptors per chain (L)
  uint32_t used_len;    // expected used length per chain
};

Shape ShapeOf(Workload w) {
  switch (w) {
    case Workload::kW1:
      return {1, 4096};
    case Workload::kW2:
    case Workload::kW3:
      return {3, 4097};
    case Workload::kW4:
      return {1, 16384};
  }
  return {1, 0};
}

uint64_t Base(int slot) { return 0x100000 + uint64_t(slot) * 0x10000; }

// Step 1: the driver lays out one batch and publishes it.
void DriverPost(DriverQueue& drv, Workload w, int batch, uint16_t used_before) {
  const Shape shape = ShapeOf(w);
  for (int s = 0; s < batch; ++s) {
    const uint64_t base = Base(s);
    switch (w) {
      case Workload::kW1:
        drv.WriteDesc(s, base + 0x1000, 4096, kDescFWrite, 0);
        break;
      case Workload::kW2:
      case Workload::kW3: {
        const uint16_t i = static_cast<uint16_t>(3 * s);
        drv.WriteDesc(i, base, 16, kDescFNext, i + 1);
        drv.WriteDesc(i + 1, base + 0x1000, 4096, kDescFNext | kDescFWrite,
                      i + 2);
        drv.WriteDesc(i + 2, base + 0x2000, 1, kDescFWrite, 0);
        break;
      }
      case Workload::kW4: {
        const uint64_t table = 0x20000 + 64ull * s;
        drv.WriteDesc(s, table, 64, kDescFIndirect, 0);
        for (uint32_t i = 0; i < 4; ++i) {
          drv.WriteDescAt(table, i, base + 0x1000ull * (i + 1), 4096,
                          kDescFWrite | (i < 3 ? kDescFNext : 0),
                          static_cast<uint16_t>(i + 1));
        }
        break;
      }
    }
  }
  const uint16_t avail = drv.avail_idx();
  for (int n = 0; n < batch; ++n) {
    drv.SetAvailEntry(static_cast<uint16_t>(avail + n),
                      static_cast<uint16_t>(n * shape.descs_per_chain));
  }
  if (w == Workload::kW3) drv.SetUsedEvent(used_before);
  drv.SetAvailIdx(static_cast<uint16_t>(avail + batch));  // release + fence
}

// Step 2: the device. Returns the number of notifications it decided on.
template <Publish P>
inline int DeviceProcess(SplitQueue& q, uint64_t& sink_out) {
  uint64_t sink = sink_out;
  int chains = 0;
  while (std::optional<DescriptorChain> chain = q.Pop()) {
    uint32_t written = 0;
    Descriptor d;
    while (chain->Next(d)) {
      sink += d.addr ^ d.len;
      if (d.writable()) written += d.len;
    }
    if constexpr (P == Publish::kEachAddUsed) {
      q.AddUsed(chain->head(), written);
    } else {
      q.PushUsed(chain->head(), written);
    }
    ++chains;
  }
  if constexpr (P == Publish::kOncePerBatch) q.PublishUsed();
  sink_out = sink;
  return chains;
}

template <Publish P>
[[gnu::noinline]] int DeviceBatch(SplitQueue& q, Workload w, uint64_t& sink) {
  if (w != Workload::kW3) {
    DeviceProcess<P>(q, sink);
    return 0;
  }
  do {
    q.DisableNotification();
    DeviceProcess<P>(q, sink);
  } while (q.EnableNotification());
  return q.NeedsNotification() ? 1 : 0;
}

// Step 3: the driver checks what came back.
void DriverCheck(DriverQueue& drv, Workload w, int batch, uint16_t used_before,
                 benchmark::State& state) {
  const Shape shape = ShapeOf(w);
  const uint16_t used = drv.used_idx();
  if (static_cast<uint16_t>(used - used_before) != batch) {
    state.SkipWithError("used.idx does not cover the batch");
    return;
  }
  for (int n = 0; n < batch; ++n) {
    std::optional<VirtqUsedElem> e = drv.PopUsed();
    if (!e || e->id != static_cast<uint32_t>(n * shape.descs_per_chain) ||
        e->len != shape.used_len) {
      state.SkipWithError("wrong used element");
      return;
    }
  }
}

template <Workload W, Endian E, Publish P>
void BM_Ring(benchmark::State& state) {
  auto mem_or = GuestMemoryMmap::Create({{.guest_base = 0, .size = kMemory}});
  if (!mem_or.ok()) {
    state.SkipWithError("cannot map guest memory");
    return;
  }
  std::unique_ptr<GuestMemoryMmap> mem = *std::move(mem_or);
  DriverQueue drv(
      *mem, {.size = kQueueSize, .desc = kDesc, .avail = kAvail, .used = kUsed},
      E);
  drv.set_event_idx(W == Workload::kW3);
  SplitQueue q(kQueueSize);
  drv.ConfigureDevice(q);
  q.set_event_idx(W == Workload::kW3);
  if (!q.Activate(*mem).ok()) {
    state.SkipWithError("queue does not activate");
    return;
  }
  const Shape shape = ShapeOf(W);
  const int batch = kQueueSize / shape.descs_per_chain;
  uint64_t sink = 0;

  auto one_batch = [&](double* seconds, int* notifications) {
    const uint16_t used_before = q.next_used();
    DriverPost(drv, W, batch, used_before);
    const Clock::time_point t0 = Clock::now();
    const int n = DeviceBatch<P>(q, W, sink);
    const Clock::time_point t1 = Clock::now();
    benchmark::DoNotOptimize(sink);
    DriverCheck(drv, W, batch, used_before, state);
    *seconds = std::chrono::duration<double>(t1 - t0).count();
    *notifications = n;
  };

  // Warm-up, 0.5 s, untimed.
  const Clock::time_point warm_end =
      Clock::now() + std::chrono::milliseconds(500);
  while (Clock::now() < warm_end) {
    double s;
    int n;
    one_batch(&s, &n);
  }

  std::vector<double> per_batch;
  double total = 0;
  int64_t chains = 0;
  int64_t notifications = 0;
  int64_t batches = 0;
  for (auto _ : state) {
    double s;
    int n;
    one_batch(&s, &n);
    state.SetIterationTime(s);
    per_batch.push_back(s);
    total += s;
    chains += batch;
    notifications += n;
    ++batches;
  }
  if (W == Workload::kW3 && notifications != batches) {
    state.SkipWithError("W3 must notify exactly once per batch");
  }
  std::sort(per_batch.begin(), per_batch.end());
  const double median = per_batch.empty() ? 0 : per_batch[per_batch.size() / 2];
  state.counters["ns_per_chain"] = chains ? total * 1e9 / chains : 0;
  state.counters["median_ns_per_chain"] = median * 1e9 / batch;
  state.counters["chains"] = static_cast<double>(chains);
  state.SetItemsProcessed(chains);
}

#define VMMKIT_RING_BENCH(W, E, P)                       \
  BENCHMARK(BM_Ring<Workload::W, Endian::E, Publish::P>) \
      ->Name("ring/" #W "/" #E "/" #P)                   \
      ->UseManualTime()                                  \
      ->MinTime(2.0)                                     \
      ->Unit(benchmark::kMicrosecond)

VMMKIT_RING_BENCH(kW1, kLittle, kEachAddUsed);
VMMKIT_RING_BENCH(kW2, kLittle, kEachAddUsed);
VMMKIT_RING_BENCH(kW3, kLittle, kEachAddUsed);
VMMKIT_RING_BENCH(kW4, kLittle, kEachAddUsed);
VMMKIT_RING_BENCH(kW1, kLittle, kOncePerBatch);
VMMKIT_RING_BENCH(kW2, kLittle, kOncePerBatch);
VMMKIT_RING_BENCH(kW3, kLittle, kOncePerBatch);
VMMKIT_RING_BENCH(kW4, kLittle, kOncePerBatch);
VMMKIT_RING_BENCH(kW1, kBig, kEachAddUsed);
VMMKIT_RING_BENCH(kW2, kBig, kEachAddUsed);
VMMKIT_RING_BENCH(kW3, kBig, kEachAddUsed);
VMMKIT_RING_BENCH(kW4, kBig, kEachAddUsed);

}  // namespace
}  // namespace vmmkit::virtqueue

BENCHMARK_MAIN();
