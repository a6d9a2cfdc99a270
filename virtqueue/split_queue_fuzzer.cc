// virtqueue/split_queue_fuzzer.cc: libFuzzer target for the device side of the
// split virtqueue.
//
// The input is read as a stream (zeros past its end):
//   header: flags, queue size, device maximum, ring addresses (or a legacy
//           base + alignment), misalignment bits, initial ring indices;
//   then a sequence of operations, each an opcode byte and its arguments:
//           driver-side writes (raw descriptors in the table or in an indirect
//           scratch table, well-formed direct and indirect chains through
//           DriverQueue, avail entries and indices, used_event, avail flags,
//           reaping used entries, the driver's notification decision)
//           interleaved with device operations (Pop and walk the whole chain,
//           writing into its writable buffers, Undo, AddUsed, batched AddUsed,
//           PushUsed/PublishUsed, Enable/DisableNotification,
//           NeedsNotification, HasAvailable, Reset, Activate).
// Guest memory is 1 MiB at 1 MiB (one region, two adjacent regions, or two
// regions with a hole between them), surrounded by guard pages, so any access
// outside it crashes. Invariants checked on every step: every descriptor
// handed out lies inside guest memory and keeps the readable-then-writable
// order, the chain's length and total size are bounded, a broken queue serves
// nothing, used.idx in memory matches next_used(), and at the end the device
// wrote nothing outside the rings (the rest of memory still holds a canary).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "base/fuzz_input.h"
#include "virtqueue/guest_memory.h"
#include "virtqueue/split_queue.h"
#include "virtqueue/testing/driver_queue.h"

namespace vmmkit::virtqueue {
namespace {

using ::vmmkit::virtqueue::testing::DriverQueue;

constexpr uint64_t kBase = 0x100000;
constexpr uint64_t kMemSize = 0x100000;
constexpr uint64_t kHalf = kMemSize / 2;
// Indirect tables written by the fuzzer: 64 KiB inside the first region in
// every memory layout.
constexpr uint64_t kScratch = kBase + 0x40000;
constexpr uint64_t kScratchBytes = 0x10000;
constexpr uint8_t kCanary = 0x5a;
constexpr int kMaxSteps = 4096;

// The input as a stream of little-endian integers, zeros past its end.
using Input = ::vmmkit::FuzzInput;

std::unique_ptr<GuestMemoryMmap> MustCreate(
    const std::vector<GuestMemoryMmap::RegionSpec>& regions) {
  auto mem = GuestMemoryMmap::Create(regions);
  if (!mem.ok()) {
    std::fprintf(stderr, "guest memory: %s\n", mem.status().ToString().c_str());
    std::abort();
  }
  return *std::move(mem);
}

// Created once: mapping 1 MiB per input would dominate the run time.
const GuestMemoryMmap& Memory(int layout) {
  static GuestMemoryMmap* const kMemories[3] = {
      MustCreate({{.guest_base = kBase, .size = kMemSize}}).release(),
      MustCreate({{.guest_base = kBase, .size = kHalf},
                  {.guest_base = kBase + kHalf, .size = kHalf}})
          .release(),
      MustCreate({{.guest_base = kBase, .size = kHalf},
                  {.guest_base = kBase + kHalf + 0x10000, .size = kHalf}})
          .release(),
  };
  return *kMemories[layout];
}

// A guest address for a buffer: mostly inside memory, sometimes just around
// it, sometimes near 2^64.
uint64_t PickAddr(Input& in) {
  const uint8_t sel = in.U8();
  const uint32_t v = in.U32();
  switch (sel % 4) {
    case 0:
    case 1:
      return kBase + v % kMemSize;
    case 2:
      return kBase - 0x1000 + v % (kMemSize + 0x12000);
    default:
      return ~uint64_t{0} - (v & 0xffff);
  }
}

uint32_t PickLen(Input& in) {
  const uint8_t sel = in.U8();
  const uint32_t v = in.U32();
  return (sel & 1) ? v : v % 0x2000;
}

struct Config {
  uint16_t size;
  uint16_t max_size;
  uint64_t desc, avail, used;
  bool legacy;
  uint32_t legacy_align;
  bool event_idx;
  bool indirect;
  Endian endian;
  uint16_t next_avail, next_used;
};

Config ReadConfig(Input& in, uint8_t flags) {
  Config c;
  c.endian = (flags & 1) ? Endian::kBig : Endian::kLittle;
  c.event_idx = (flags & 2) != 0;
  c.indirect = (flags & 4) == 0;
  c.legacy = (flags & 0x20) != 0;
  const uint8_t size_log = in.U8();
  const uint16_t raw_size = in.U16();
  c.size =
      (flags & 0x40) ? raw_size : static_cast<uint16_t>(1u << (size_log % 16));
  const uint16_t max = in.U16();
  c.max_size = max == 0 ? 32768 : max;
  c.desc = kBase + 16ull * in.U16();
  c.avail = kBase + 16ull * in.U16();
  c.used = kBase + 16ull * in.U16();
  const uint8_t odd = in.U8();
  if (odd & 0x01) c.desc += 8;
  if (odd & 0x02) c.avail += 1;
  if (odd & 0x04) c.used += 2;
  if (odd & 0x08) c.desc = ~uint64_t{0} - 15;
  if (odd & 0x10) c.avail = kBase - 16;
  if (odd & 0x20) c.used = kBase + kMemSize - 8;
  const uint8_t align = in.U8();
  c.legacy_align = (align & 0x80) ? align & 0x7f : 1u << (align % 16);
  c.next_avail = in.U16();
  c.next_used = in.U16();
  return c;
}

void Configure(SplitQueue& q, const Config& c) {
  q.set_size(c.size);
  q.set_event_idx(c.event_idx);
  q.set_indirect_allowed(c.indirect);
  q.set_endian(c.endian);
  q.set_next_avail(c.next_avail);
  q.set_next_used(c.next_used);
  if (c.legacy) {
    const bool pow2 =
        c.legacy_align != 0 && (c.legacy_align & (c.legacy_align - 1)) == 0;
    const absl::Status s = q.SetLegacyLayout(c.desc, c.legacy_align);
    VMMKIT_FUZZ_CHECK(s.ok() == pow2);
    if (s.ok()) {
      // The used ring is the first multiple of the alignment after the
      // available ring (all modulo 2^64; Activate() rejects a wrap).
      VMMKIT_FUZZ_CHECK(q.desc_table() == c.desc);
      VMMKIT_FUZZ_CHECK(q.avail_ring() == c.desc + DescTableBytes(c.size));
      VMMKIT_FUZZ_CHECK(q.used_ring() % c.legacy_align == 0);
      const uint64_t gap =
          q.used_ring() - (q.avail_ring() + AvailRingBytes(c.size));
      VMMKIT_FUZZ_CHECK(gap < c.legacy_align);
      if (c.desc % c.legacy_align == 0) {
        VMMKIT_FUZZ_CHECK(q.used_ring() - q.desc_table() +
                              UsedRingBytes(c.size) ==
                          SplitQueue::LegacyRingBytes(c.size, c.legacy_align));
      }
      return;
    }
  }
  q.set_desc_table(c.desc);
  q.set_avail_ring(c.avail);
  q.set_used_ring(c.used);
}

uint16_t FromQueue16(uint16_t raw, Endian e) {
  return e == Endian::kLittle ? raw : __builtin_bswap16(raw);
}

// Serves one fuzz input.
class Run {
 public:
  Run(const GuestMemory& mem, const Config& cfg)
      : mem_(mem), cfg_(cfg), q_(cfg.max_size) {}

  void ActivateFromConfig() {
    if (q_.ready()) {
      // Re-binding the same configuration is allowed and keeps the indices.
      const uint16_t avail = q_.next_avail(), used = q_.next_used();
      VMMKIT_FUZZ_CHECK(q_.Activate(mem_).ok());
      VMMKIT_FUZZ_CHECK(q_.next_avail() == avail && q_.next_used() == used);
      VMMKIT_FUZZ_CHECK(!q_.broken());
      undoable_ = 0;
      return;
    }
    Configure(q_, cfg_);
    const bool valid = q_.Validate(mem_).ok();
    const absl::Status s = q_.Activate(mem_);
    VMMKIT_FUZZ_CHECK(s.ok() == valid);
    VMMKIT_FUZZ_CHECK(q_.ready() == s.ok());
    undoable_ = 0;
    popped_.clear();
    drv_.reset();
    if (!s.ok()) return;
    // Every area of an active queue is inside one region.
    VMMKIT_FUZZ_CHECK(
        mem_.HostPointer(q_.desc_table(), DescTableBytes(q_.size())));
    VMMKIT_FUZZ_CHECK(
        mem_.HostPointer(q_.avail_ring(), AvailRingBytes(q_.size())));
    VMMKIT_FUZZ_CHECK(
        mem_.HostPointer(q_.used_ring(), UsedRingBytes(q_.size())));
    VMMKIT_FUZZ_CHECK(q_.size() >= 1 && q_.size() <= 32768 &&
                      (q_.size() & (q_.size() - 1)) == 0 &&
                      q_.size() <= q_.max_size());
    AddArea(q_.desc_table(), DescTableBytes(q_.size()));
    AddArea(q_.avail_ring(), AvailRingBytes(q_.size()));
    AddArea(q_.used_ring(), UsedRingBytes(q_.size()));
    drv_.emplace(mem_,
                 DriverQueue::Layout{.size = q_.size(),
                                     .desc = q_.desc_table(),
                                     .avail = q_.avail_ring(),
                                     .used = q_.used_ring()},
                 q_.endian());
    drv_->set_event_idx(q_.event_idx());
    drv_->SetAvailIdx(q_.next_avail());
  }

  void Step(Input& in) {
    const uint8_t op = in.U8();
    switch (op % 24) {
      case 0: {  // raw descriptor in the queue's table
        const uint16_t index = in.U16();
        const uint64_t addr = PickAddr(in);
        const uint32_t len = PickLen(in);
        const uint16_t flags = in.U16();
        const uint16_t next = in.U16();
        if (drv_) drv_->WriteDesc(index % q_.size(), addr, len, flags, next);
        break;
      }
      case 1: {  // raw descriptor in the indirect scratch table
        const uint16_t index = in.U16();
        const uint64_t addr = PickAddr(in);
        const uint32_t len = PickLen(in);
        const uint16_t flags = in.U16();
        const uint16_t next = in.U16();
        if (drv_) {
          drv_->WriteDescAt(kScratch, index % (kScratchBytes / 16), addr, len,
                            flags, next);
        }
        break;
      }
      case 2: {  // an indirect descriptor pointing into the scratch table
        const uint16_t index = in.U16();
        const uint16_t offset = in.U16();
        const uint32_t len = in.U8() % 2 ? in.U32() : 16u * (in.U8() % 64);
        const uint16_t flags = in.U16();
        if (drv_) {
          drv_->WriteDesc(index % q_.size(), kScratch + offset % kScratchBytes,
                          len, static_cast<uint16_t>(flags | kDescFIndirect),
                          in.U16());
        }
        break;
      }
      case 3: {  // publish any head
        const uint16_t head = in.U16();
        if (drv_) drv_->Publish(head);
        break;
      }
      case 4: {  // any avail index
        const uint16_t idx = in.U16();
        if (drv_) drv_->SetAvailIdx(idx);
        break;
      }
      case 5: {
        const uint16_t e = in.U16();
        if (drv_) drv_->SetUsedEvent(e);
        break;
      }
      case 6: {
        const bool on = in.U8() & 1;
        if (drv_) drv_->SetNoInterrupt(on);
        break;
      }
      case 7: {  // a well-formed direct chain
        const int n = in.U8() % 8 + 1;
        std::vector<DriverQueue::Buffer> bufs;
        for (int i = 0; i < n; ++i) {
          const uint64_t addr = kBase + in.U32() % (kMemSize - 0x1000);
          bufs.push_back({.addr = addr,
                          .len = in.U16() % 0x1000u,
                          .writable = i >= n / 2});
        }
        if (drv_) (void)drv_->AddChain(bufs);
        break;
      }
      case 8: {  // a well-formed indirect chain
        const int n = in.U8() % 16 + 1;
        const uint64_t table = kScratch + 16ull * (in.U8() % 64);
        std::vector<DriverQueue::Buffer> bufs;
        for (int i = 0; i < n; ++i) {
          const uint64_t addr = kBase + in.U32() % (kMemSize - 0x1000);
          bufs.push_back({.addr = addr,
                          .len = in.U16() % 0x1000u,
                          .writable = i >= n / 2});
        }
        if (drv_) (void)drv_->AddIndirectChain(table, bufs);
        break;
      }
      case 9:
      case 10:
        PopAndWalk();
        break;
      case 11:  // give the last chain back
        if (undoable_ > 0 && !popped_.empty()) {
          q_.Undo();
          --undoable_;
          popped_.pop_back();
        }
        break;
      case 12: {  // complete the oldest chain (or any head at all)
        const uint32_t len = in.U32();
        const uint16_t any = in.U16();
        uint16_t head = any;
        if (!popped_.empty() && (any & 0x8000) == 0) {
          head = popped_.front();
          popped_.erase(popped_.begin());
        }
        q_.AddUsed(head, len);
        undoable_ = 0;
        CheckUsedIdx();
        break;
      }
      case 13: {  // complete everything popped, in one batch
        std::vector<UsedElement> elems;
        for (uint16_t h : popped_) elems.push_back({h, in.U8()});
        popped_.clear();
        q_.AddUsed(elems);
        undoable_ = 0;
        CheckUsedIdx();
        break;
      }
      case 14: {
        const uint16_t head = in.U16();
        q_.PushUsed(head, in.U32());
        undoable_ = 0;
        break;
      }
      case 15:
        q_.PublishUsed();
        CheckUsedIdx();
        break;
      case 16:
        q_.DisableNotification();
        break;
      case 17: {
        const bool more = q_.EnableNotification();
        if (!q_.ready() || q_.broken()) VMMKIT_FUZZ_CHECK(!more);
        break;
      }
      case 18: {
        const bool notify = q_.NeedsNotification();
        if (!q_.ready()) VMMKIT_FUZZ_CHECK(!notify);
        break;
      }
      case 19: {
        const bool has = q_.HasAvailable();
        if (!q_.ready() || q_.broken()) VMMKIT_FUZZ_CHECK(!has);
        break;
      }
      case 20:
        q_.Reset();
        VMMKIT_FUZZ_CHECK(!q_.ready() && !q_.broken());
        VMMKIT_FUZZ_CHECK(q_.size() == q_.max_size());
        VMMKIT_FUZZ_CHECK(q_.next_avail() == 0 && q_.next_used() == 0);
        VMMKIT_FUZZ_CHECK(!q_.Pop().has_value());
        drv_.reset();
        popped_.clear();
        undoable_ = 0;
        break;
      case 21:
        ActivateFromConfig();
        break;
      case 22:  // the driver reaps what the device published
        if (drv_) {
          const uint16_t pending = drv_->PendingUsed();
          const std::optional<VirtqUsedElem> e = drv_->PopUsed();
          VMMKIT_FUZZ_CHECK(e.has_value() == (pending != 0));
        }
        break;
      case 23:
        if (drv_) (void)drv_->ShouldNotify();
        break;
    }
  }

  // Nothing outside the rings and the scratch table changed.
  void CheckCanary() const {
    static uint8_t canary[4096];
    if (canary[0] != kCanary) std::memset(canary, kCanary, sizeof(canary));
    for (const MemoryRegion& r : mem_.regions()) {
      const uint64_t rb = r.guest_base, re = r.guest_base + r.size;
      std::vector<std::pair<uint64_t, uint64_t>> areas;
      auto clip = [&](uint64_t lo, uint64_t hi) {
        lo = std::max(lo, rb);
        hi = std::min(hi, re);
        if (lo < hi) areas.push_back({lo, hi});
      };
      for (const auto& [lo, hi] : areas_) clip(lo, hi);
      clip(kScratch, kScratch + kScratchBytes);
      std::sort(areas.begin(), areas.end());
      uint64_t cursor = rb;
      auto check = [&](uint64_t lo, uint64_t hi) {
        for (uint64_t a = lo; a < hi; a += sizeof(canary)) {
          const uint64_t n = std::min<uint64_t>(sizeof(canary), hi - a);
          VMMKIT_FUZZ_CHECK(std::memcmp(r.host + (a - rb), canary, n) == 0);
        }
      };
      for (const auto& [lo, hi] : areas) {
        if (lo > cursor) check(cursor, lo);
        cursor = std::max(cursor, hi);
      }
      check(cursor, re);
    }
  }

 private:
  void AddArea(uint64_t addr, uint64_t bytes) {
    areas_.push_back({addr, addr + bytes});
  }

  void CheckUsedIdx() {
    if (!q_.ready()) return;
    absl::StatusOr<uint16_t> raw = mem_.LoadAcquire16(q_.used_ring() + 2);
    VMMKIT_FUZZ_CHECK(raw.ok());
    VMMKIT_FUZZ_CHECK(FromQueue16(*raw, q_.endian()) == q_.next_used());
  }

  void PopAndWalk() {
    const bool was_broken = q_.broken();
    std::optional<DescriptorChain> chain = q_.Pop();
    if (!chain.has_value()) {
      if (was_broken) VMMKIT_FUZZ_CHECK(q_.broken());  // broken until Reset
      if (q_.broken()) VMMKIT_FUZZ_CHECK(!q_.HasAvailable());
      return;
    }
    VMMKIT_FUZZ_CHECK(q_.ready());
    VMMKIT_FUZZ_CHECK(!was_broken && !q_.broken());
    VMMKIT_FUZZ_CHECK(chain->head() < q_.size());
    uint64_t total = 0;
    uint32_t n = 0;
    bool seen_writable = false;
    Descriptor d;
    while (chain->Next(d)) {
      VMMKIT_FUZZ_CHECK(mem_.Contains(d.addr, d.len));
      if (d.writable()) {
        seen_writable = true;
      } else {
        VMMKIT_FUZZ_CHECK(!seen_writable);
      }
      total += d.len;
      ++n;
      // The main chain (at most size) plus one indirect table (at most 65536).
      VMMKIT_FUZZ_CHECK(n <= q_.size() + 65536u);
      // The buffer is readable through GuestMemory at both ends, and a
      // writable one is writable (with the canary, so that the final check
      // still holds; the buffer may overlap the rings, as a guest may make
      // it).
      uint8_t bytes[2];
      if (d.len > 0) {
        VMMKIT_FUZZ_CHECK(mem_.Read(d.addr, absl::MakeSpan(bytes, 1)).ok());
        VMMKIT_FUZZ_CHECK(
            mem_.Read(d.addr + d.len - 1, absl::MakeSpan(bytes, 1)).ok());
        if (d.writable()) {
          VMMKIT_FUZZ_CHECK(
              mem_.Fill(d.addr, std::min<uint64_t>(d.len, 16), kCanary).ok());
          VMMKIT_FUZZ_CHECK(mem_.Fill(d.addr + d.len - 1, 1, kCanary).ok());
        }
      }
    }
    VMMKIT_FUZZ_CHECK(total <= UINT32_MAX);
    VMMKIT_FUZZ_CHECK(n == chain->count());
    VMMKIT_FUZZ_CHECK(chain->ok() == (chain->error() == QueueError::kNone));
    VMMKIT_FUZZ_CHECK(chain->status().ok() == chain->ok());
    VMMKIT_FUZZ_CHECK(!chain->Next(d));  // stays finished
    if (!chain->ok()) {
      VMMKIT_FUZZ_CHECK(chain->error() != QueueError::kAvailIndexJump &&
                        chain->error() != QueueError::kHeadOutOfRange);
      VMMKIT_FUZZ_CHECK(QueueErrorName(chain->error()) != nullptr);
    }
    // A chain error never breaks the queue.
    VMMKIT_FUZZ_CHECK(!q_.broken());
    popped_.push_back(chain->head());
    ++undoable_;
  }

  const GuestMemory& mem_;
  const Config cfg_;
  SplitQueue q_;
  std::optional<DriverQueue> drv_;
  std::vector<uint16_t> popped_;
  uint32_t undoable_ = 0;
  std::vector<std::pair<uint64_t, uint64_t>> areas_;
};

}  // namespace
}  // namespace vmmkit::virtqueue

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ::vmmkit::virtqueue;  // NOLINT
  Input in(data, size);
  const uint8_t flags = in.U8();
  const GuestMemory& mem = Memory(((flags >> 3) & 3) % 3);
  for (const MemoryRegion& r : mem.regions()) {
    std::memset(r.host, kCanary, r.size);
  }
  const Config cfg = ReadConfig(in, flags);
  Run run(mem, cfg);
  run.ActivateFromConfig();
  for (int steps = 0; steps < kMaxSteps && !in.done(); ++steps) run.Step(in);
  run.CheckCanary();
  return 0;
}
