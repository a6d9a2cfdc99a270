#include "virtqueue/split_queue.h"

#include <cstdint>
#include <cstring>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "base/status.h"
#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "virtqueue/guest_memory.h"
#include "virtqueue/testing/driver_queue.h"

namespace vmmkit::virtqueue {
namespace {

using ::testing::ElementsAre;
using ::testing::Values;
using ::vmmkit::testing::StatusIs;
using ::vmmkit::virtqueue::testing::DriverQueue;

// Guest memory: two adjacent 512 KiB regions, [0x10000, 0x90000) and
// [0x90000, 0x110000), with guard pages around each.
constexpr uint64_t kMemBase = 0x10000;
constexpr uint64_t kRegionSize = 0x80000;
constexpr uint64_t kBoundary = kMemBase + kRegionSize;
constexpr uint64_t kMemEnd = kMemBase + 2 * kRegionSize;
// The default queue and where its rings live.
constexpr uint16_t kSize = 256;
constexpr uint64_t kDesc = 0x10000;
constexpr uint64_t kAvail = 0x11000;
constexpr uint64_t kUsed = 0x12000;
// Data buffers and indirect tables.
constexpr uint64_t kData = 0x20000;
constexpr uint64_t kTable = 0x60000;
// What the rest of guest memory holds, so that a stray write shows.
constexpr uint8_t kCanary = 0xa5;

constexpr uint16_t R = 0;
constexpr uint16_t W = kDescFWrite;
constexpr uint16_t N = kDescFNext;
constexpr uint16_t I = kDescFIndirect;

constexpr uint64_t kMax64 = ~uint64_t{0};

std::string EndianName(Endian e) { return e == Endian::kLittle ? "LE" : "BE"; }

DriverQueue::Layout DefaultLayout(uint16_t size = kSize) {
  return {.size = size, .desc = kDesc, .avail = kAvail, .used = kUsed};
}

std::vector<GuestMemoryMmap::RegionSpec> DefaultRegions() {
  return {{.guest_base = kMemBase, .size = kRegionSize},
          {.guest_base = kBoundary, .size = kRegionSize}};
}

// Loads / stores an integer of `bytes` bytes in byte order `e`, byte by byte,
// independently of DriverQueue and of the host's byte order.
uint64_t RawLoad(const GuestMemory& mem, uint64_t addr, int bytes, Endian e) {
  uint8_t b[8] = {};
  EXPECT_OK(mem.Read(addr, absl::MakeSpan(b, bytes)));
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) {
    const int shift = e == Endian::kLittle ? 8 * i : 8 * (bytes - 1 - i);
    v |= uint64_t{b[i]} << shift;
  }
  return v;
}
void RawStore(const GuestMemory& mem, uint64_t addr, int bytes, uint64_t v,
              Endian e) {
  uint8_t b[8];
  for (int i = 0; i < bytes; ++i) {
    const int shift = e == Endian::kLittle ? 8 * i : 8 * (bytes - 1 - i);
    b[i] = static_cast<uint8_t>(v >> shift);
  }
  EXPECT_OK(mem.Write(addr, absl::MakeConstSpan(b, bytes)));
}

// A guest memory, a driver and a device queue on it.
class Harness {
 public:
  absl::Status Init(
      Endian endian,
      std::vector<GuestMemoryMmap::RegionSpec> regions = DefaultRegions(),
      DriverQueue::Layout layout = DefaultLayout(), uint16_t max_size = kSize) {
    endian_ = endian;
    VMMKIT_ASSIGN_OR_RETURN(mem, GuestMemoryMmap::Create(regions));
    if (mem->total_size() <= (16u << 20)) {
      for (const MemoryRegion& r : mem->regions()) {
        std::memset(r.host, kCanary, r.size);
      }
    }
    q = SplitQueue(max_size);
    drv.emplace(*mem, layout, endian);  // zeroes the three ring areas
    drv->ConfigureDevice(q);
    return absl::OkStatus();
  }

  absl::Status Activate() { return q.Activate(*mem); }

  // Remembers all of guest memory.
  void Snapshot() {
    snapshot_.clear();
    for (const MemoryRegion& r : mem->regions()) {
      snapshot_.emplace_back(r.host, r.host + r.size);
    }
  }
  // Nothing changed since Snapshot() except, optionally, the used ring at
  // `used` (the only area a device writes).
  ::testing::AssertionResult UntouchedExcept(uint64_t used, uint64_t bytes) {
    for (size_t i = 0; i < snapshot_.size(); ++i) {
      const MemoryRegion& r = mem->regions()[i];
      for (uint64_t off = 0; off < r.size; ++off) {
        const uint64_t gpa = r.guest_base + off;
        if (gpa >= used && gpa - used < bytes) continue;
        if (r.host[off] != snapshot_[i][off]) {
          return ::testing::AssertionFailure() << absl::StrFormat(
                     "guest byte 0x%x changed from 0x%02x to 0x%02x", gpa,
                     snapshot_[i][off], r.host[off]);
        }
      }
    }
    return ::testing::AssertionSuccess();
  }
  ::testing::AssertionResult UntouchedExceptUsedRing() {
    return UntouchedExcept(drv->layout().used,
                           UsedRingBytes(drv->layout().size));
  }
  ::testing::AssertionResult Untouched() { return UntouchedExcept(0, 0); }

  uint64_t Load(uint64_t addr, int bytes) const {
    return RawLoad(*mem, addr, bytes, endian_);
  }
  void Store(uint64_t addr, int bytes, uint64_t v) const {
    RawStore(*mem, addr, bytes, v, endian_);
  }
  uint16_t UsedFlags() const { return Load(drv->layout().used, 2); }
  uint16_t UsedIdx() const { return Load(drv->layout().used + 2, 2); }
  VirtqUsedElem UsedElem(uint16_t slot) const {
    const uint64_t e = drv->layout().used + 4 + 8ull * slot;
    return {static_cast<uint32_t>(Load(e, 4)),
            static_cast<uint32_t>(Load(e + 4, 4))};
  }
  uint16_t AvailEvent() const {
    return Load(drv->layout().used + 4 + 8ull * drv->layout().size, 2);
  }

  Endian endian_ = Endian::kLittle;
  std::unique_ptr<GuestMemoryMmap> mem;
  std::optional<DriverQueue> drv;
  SplitQueue q{kSize};

 private:
  std::vector<std::vector<uint8_t>> snapshot_;
};

struct Walked {
  std::vector<Descriptor> descs;
  QueueError error;
  uint32_t count;
};

// Walks the rest of a chain, checking what every chain promises.
Walked WalkAll(DescriptorChain& chain, const GuestMemory& mem) {
  Walked w;
  Descriptor d;
  bool seen_writable = false;
  while (chain.Next(d)) {
    EXPECT_TRUE(mem.Contains(d.addr, d.len))
        << absl::StrFormat("0x%x+0x%x", d.addr, d.len);
    if (d.writable()) seen_writable = true;
    EXPECT_TRUE(d.writable() || !seen_writable) << "readable after writable";
    w.descs.push_back(d);
  }
  EXPECT_FALSE(chain.Next(d)) << "a finished chain stays finished";
  w.error = chain.error();
  w.count = chain.count();
  EXPECT_EQ(w.count, w.descs.size());
  EXPECT_EQ(chain.ok(), w.error == QueueError::kNone);
  return w;
}

MATCHER_P3(Desc, addr, len, flags, "") {
  return arg.addr == addr && arg.len == len && arg.flags == flags;
}

// ---------------------------------------------------------------------------
// Every test runs in both byte orders.

class SplitQueueTest : public ::testing::TestWithParam<Endian> {
 protected:
  void SetUp() override { ASSERT_OK(h_.Init(GetParam())); }
  Endian endian() const { return GetParam(); }
  Harness h_;
};

INSTANTIATE_TEST_SUITE_P(Endians, SplitQueueTest,
                         Values(Endian::kLittle, Endian::kBig),
                         [](const auto& info) {
                           return EndianName(info.param);
                         });

// ---- Validate / Activate.

TEST_P(SplitQueueTest, ValidateAcceptsEveryPowerOfTwoUpTo32768) {
  // The descriptor table of 32768 entries fills the first region; the rings
  // go into the second.
  const DriverQueue::Layout big = {
      .size = 32768, .desc = kMemBase, .avail = kBoundary, .used = 0xa1000};
  for (uint32_t size = 1; size <= 32768; size *= 2) {
    SCOPED_TRACE(size);
    DriverQueue::Layout layout = big;
    layout.size = static_cast<uint16_t>(size);
    DriverQueue drv(*h_.mem, layout, endian());
    SplitQueue q(32768);
    drv.ConfigureDevice(q);
    ASSERT_OK(q.Validate(*h_.mem));
    EXPECT_FALSE(q.ready());
    ASSERT_OK(q.Activate(*h_.mem));
    EXPECT_TRUE(q.ready());
    // The last descriptor and the last ring slot are usable.
    const uint16_t last = static_cast<uint16_t>(size - 1);
    drv.WriteDesc(last, kData, 8, W, 0);
    for (uint32_t i = 0; i < size; ++i) drv.Publish(last);
    for (uint32_t i = 0; i < size; ++i) {
      std::optional<DescriptorChain> chain = q.Pop();
      ASSERT_TRUE(chain.has_value());
      ASSERT_EQ(chain->head(), last);
      Walked w = WalkAll(*chain, *h_.mem);
      EXPECT_THAT(w.descs, ElementsAre(Desc(kData, 8u, W)));
      q.PushUsed(chain->head(), 8);
    }
    q.PublishUsed();
    EXPECT_FALSE(q.Pop().has_value());
    EXPECT_EQ(drv.used_idx(), static_cast<uint16_t>(size));
  }
}

TEST_P(SplitQueueTest, ValidateDoesNotChangeTheQueue) {
  ASSERT_OK(h_.q.Validate(*h_.mem));
  EXPECT_FALSE(h_.q.ready());
  EXPECT_FALSE(h_.q.Pop().has_value());
  EXPECT_EQ(h_.q.desc_table(), kDesc);
  EXPECT_EQ(h_.q.avail_ring(), kAvail);
  EXPECT_EQ(h_.q.used_ring(), kUsed);
  EXPECT_EQ(h_.q.size(), kSize);
  EXPECT_EQ(h_.q.endian(), endian());
}

TEST_P(SplitQueueTest, ExactAlignmentsAreAccepted) {
  // 16 / 2 / 4, and nothing stricter.
  DriverQueue::Layout layout = {
      .size = 16, .desc = 0x30010, .avail = 0x31002, .used = 0x32004};
  DriverQueue drv(*h_.mem, layout, endian());
  SplitQueue q(kSize);
  drv.ConfigureDevice(q);
  ASSERT_OK(q.Activate(*h_.mem));
  ASSERT_OK_AND_ASSIGN(uint16_t head, drv.AddChain({{kData, 4, false}}));
  std::optional<DescriptorChain> chain = q.Pop();
  ASSERT_TRUE(chain.has_value());
  EXPECT_EQ(chain->head(), head);
  q.AddUsed(head, 0);
  EXPECT_EQ(drv.used_idx(), 1);
}

TEST_P(SplitQueueTest, RingsAtTheEdgesOfMemoryAreAccepted) {
  // The descriptor table ends at the last byte of the first region, the
  // used ring starts the second, the available ring ends at the last byte of
  // memory.
  const uint16_t size = 64;
  const DriverQueue::Layout layout = {.size = size,
                                      .desc = kBoundary - DescTableBytes(size),
                                      .avail = kMemEnd - AvailRingBytes(size),
                                      .used = kBoundary};
  DriverQueue drv(*h_.mem, layout, endian());
  SplitQueue q(kSize);
  drv.ConfigureDevice(q);
  ASSERT_OK(q.Activate(*h_.mem));
  ASSERT_OK_AND_ASSIGN(uint16_t head, drv.AddChain({{kData, 4, false}}));
  std::optional<DescriptorChain> chain = q.Pop();
  ASSERT_TRUE(chain.has_value());
  q.AddUsed(head, 4);
  EXPECT_FALSE(q.EnableNotification());
  EXPECT_TRUE(q.NeedsNotification());
  EXPECT_EQ(drv.PopUsed()->id, head);
}

TEST_P(SplitQueueTest, SizeAboveDeviceMaximumIsRejected) {
  SplitQueue q(128);
  EXPECT_EQ(q.size(), 128);  // a fresh queue offers its maximum
  q.set_desc_table(kDesc);
  q.set_avail_ring(kAvail);
  q.set_used_ring(kUsed);
  q.set_size(256);
  EXPECT_THAT(q.Validate(*h_.mem),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(q.Activate(*h_.mem),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_FALSE(q.ready());
  q.set_size(128);
  EXPECT_OK(q.Activate(*h_.mem));
}

TEST_P(SplitQueueTest, ActivateKeepsTheRingIndices) {
  h_.q.set_next_avail(10);
  h_.q.set_next_used(20);
  h_.drv->SetAvailIdx(10);
  ASSERT_OK(h_.Activate());
  EXPECT_EQ(h_.q.next_avail(), 10);
  EXPECT_EQ(h_.q.next_used(), 20);
  ASSERT_OK_AND_ASSIGN(uint16_t head, h_.drv->AddChain({{kData, 1, false}}));
  std::optional<DescriptorChain> chain = h_.q.Pop();
  ASSERT_TRUE(chain.has_value());
  EXPECT_EQ(chain->head(), head);
  EXPECT_EQ(h_.q.next_avail(), 11);
  h_.q.AddUsed(head, 0);
  EXPECT_EQ(h_.UsedIdx(), 21);
  EXPECT_EQ(h_.UsedElem(20).id, head);
}

// ---- Configuration errors: each leaves the queue not ready and memory as
// it was.

struct ConfigCase {
  std::string name;
  std::function<void(SplitQueue&)> configure;  // on top of the default layout
  uint16_t max_size;
  absl::StatusCode code;
};

class ConfigErrorTest
    : public ::testing::TestWithParam<std::tuple<ConfigCase, Endian>> {};

TEST_P(ConfigErrorTest, IsRejected) {
  const auto& [c, endian] = GetParam();
  Harness h;
  ASSERT_OK(h.Init(endian, DefaultRegions(), DefaultLayout(), c.max_size));
  c.configure(h.q);
  h.Snapshot();
  EXPECT_THAT(h.q.Validate(*h.mem), StatusIs(c.code));
  EXPECT_THAT(h.q.Activate(*h.mem), StatusIs(c.code));
  EXPECT_FALSE(h.q.ready());
  EXPECT_FALSE(h.q.broken());
  // Nothing is served or written by a queue that is not ready.
  ASSERT_OK_AND_ASSIGN(uint16_t head, h.drv->AddChain({{kData, 8, false}}));
  h.Snapshot();
  EXPECT_FALSE(h.q.Pop().has_value());
  EXPECT_FALSE(h.q.HasAvailable());
  h.q.AddUsed(head, 8);
  h.q.DisableNotification();
  EXPECT_FALSE(h.q.EnableNotification());
  EXPECT_FALSE(h.q.NeedsNotification());
  EXPECT_TRUE(h.Untouched());
}

const ConfigCase kConfigCases[] = {
    {"SizeZero", [](SplitQueue& q) { q.set_size(0); }, kSize,
     absl::StatusCode::kInvalidArgument},
    {"SizeNotPowerOfTwo", [](SplitQueue& q) { q.set_size(100); }, kSize,
     absl::StatusCode::kInvalidArgument},
    {"SizeOneBelowPowerOfTwo", [](SplitQueue& q) { q.set_size(255); }, kSize,
     absl::StatusCode::kInvalidArgument},
    {"SizeAboveDeviceMax", [](SplitQueue& q) { q.set_size(512); }, kSize,
     absl::StatusCode::kInvalidArgument},
    {"SizeAbove32768", [](SplitQueue& q) { q.set_size(0xffff); }, 0xffff,
     absl::StatusCode::kInvalidArgument},
    {"SizeAbove32768NotPowerOfTwo", [](SplitQueue& q) { q.set_size(0x8001); },
     0xffff, absl::StatusCode::kInvalidArgument},
    {"DescMisaligned", [](SplitQueue& q) { q.set_desc_table(kDesc + 8); },
     kSize, absl::StatusCode::kInvalidArgument},
    {"AvailMisaligned", [](SplitQueue& q) { q.set_avail_ring(kAvail + 1); },
     kSize, absl::StatusCode::kInvalidArgument},
    {"UsedMisaligned", [](SplitQueue& q) { q.set_used_ring(kUsed + 2); }, kSize,
     absl::StatusCode::kInvalidArgument},
    {"DescOutsideMemory", [](SplitQueue& q) { q.set_desc_table(kMemEnd); },
     kSize, absl::StatusCode::kOutOfRange},
    {"DescBelowMemory", [](SplitQueue& q) { q.set_desc_table(0); }, kSize,
     absl::StatusCode::kOutOfRange},
    {"DescCrossingEndOfMemory",
     [](SplitQueue& q) {
       q.set_desc_table(kMemEnd - DescTableBytes(kSize) + 16);
     },
     kSize, absl::StatusCode::kOutOfRange},
    {"DescWrapsAround2To64",
     [](SplitQueue& q) { q.set_desc_table(kMax64 - 15); }, kSize,
     absl::StatusCode::kOutOfRange},
    {"AvailOutsideMemory",
     [](SplitQueue& q) { q.set_avail_ring(kMemBase - 0x1000); }, kSize,
     absl::StatusCode::kOutOfRange},
    {"AvailCrossingEndOfMemory",
     [](SplitQueue& q) { q.set_avail_ring(kMemEnd - 6); }, kSize,
     absl::StatusCode::kOutOfRange},
    {"AvailWrapsAround2To64",
     [](SplitQueue& q) { q.set_avail_ring(kMax64 - 1); }, kSize,
     absl::StatusCode::kOutOfRange},
    {"UsedOutsideMemory",
     [](SplitQueue& q) { q.set_used_ring(kMemEnd + 0x1000); }, kSize,
     absl::StatusCode::kOutOfRange},
    {"UsedCrossingRegions",
     // Inside guest memory, but across the two regions' mappings.
     [](SplitQueue& q) { q.set_used_ring(kBoundary - 8); }, kSize,
     absl::StatusCode::kOutOfRange},
    {"DescCrossingRegions",
     [](SplitQueue& q) { q.set_desc_table(kBoundary - 16); }, kSize,
     absl::StatusCode::kOutOfRange},
};

INSTANTIATE_TEST_SUITE_P(Cases, ConfigErrorTest,
                         ::testing::Combine(::testing::ValuesIn(kConfigCases),
                                            Values(Endian::kLittle,
                                                   Endian::kBig)),
                         [](const auto& info) {
                           return std::get<0>(info.param).name + "_" +
                                  EndianName(std::get<1>(info.param));
                         });

// ---- Legacy layout.

TEST_P(SplitQueueTest, LegacyLayoutWithAlign4096) {
  // virtio 0.9.5 / Linux vring_init(): desc at the base, avail right after,
  // used at the next 4096 boundary; vring_size() bytes in all.
  struct Expect {
    uint16_t size;
    uint64_t used_offset;
    uint64_t ring_bytes;
  };
  const Expect cases[] = {
      {1, 0x1000, 0x1000 + 6 + 8},       {16, 0x1000, 0x1000 + 6 + 128},
      {128, 0x1000, 0x1000 + 6 + 1024},  {256, 0x2000, 0x2000 + 6 + 2048},
      {1024, 0x5000, 0x5000 + 6 + 8192},  // 16384 + 2054 -> 20480
  };
  const uint64_t base = 0x40000;
  for (const Expect& e : cases) {
    SCOPED_TRACE(e.size);
    SplitQueue q(1024);
    q.set_size(e.size);
    q.set_endian(endian());
    ASSERT_OK(q.SetLegacyLayout(base, 4096));
    EXPECT_EQ(q.desc_table(), base);
    EXPECT_EQ(q.avail_ring(), base + 16ull * e.size);
    EXPECT_EQ(q.used_ring(), base + e.used_offset);
    EXPECT_EQ(SplitQueue::LegacyRingBytes(e.size, 4096), e.ring_bytes);
    // The driver's view of the same layout matches, and a chain goes through.
    const DriverQueue::Layout layout =
        DriverQueue::LegacyLayout(e.size, base, 4096);
    EXPECT_EQ(layout.desc, q.desc_table());
    EXPECT_EQ(layout.avail, q.avail_ring());
    EXPECT_EQ(layout.used, q.used_ring());
    DriverQueue drv(*h_.mem, layout, endian());
    ASSERT_OK(q.Activate(*h_.mem));
    // Indirect, so that a queue of one entry can carry two buffers.
    const DriverQueue::Buffer bufs[] = {{kData, 16, false},
                                        {kData + 16, 32, true}};
    ASSERT_OK_AND_ASSIGN(uint16_t head, drv.AddIndirectChain(kTable, bufs));
    std::optional<DescriptorChain> chain = q.Pop();
    ASSERT_TRUE(chain.has_value());
    Walked w = WalkAll(*chain, *h_.mem);
    EXPECT_THAT(w.descs,
                ElementsAre(Desc(kData, 16u, N), Desc(kData + 16, 32u, W)));
    q.AddUsed(head, 32);
    std::optional<VirtqUsedElem> used = drv.PopUsed();
    ASSERT_TRUE(used.has_value());
    EXPECT_EQ(used->id, head);
    EXPECT_EQ(used->len, 32u);
  }
}

TEST_P(SplitQueueTest, LegacyLayoutWithOtherAlignments) {
  // size 8: descriptors 128 bytes, avail 6 + 16 = 22, so the used ring would
  // start at 150 without alignment.
  struct Expect {
    uint32_t align;
    uint64_t used_offset;
    bool valid;  // the used ring must still be 4-aligned
  };
  const Expect cases[] = {{1, 150, false},     {2, 150, false},
                          {4, 152, true},      {64, 192, true},
                          {256, 256, true},    {8192, 8192, true},
                          {1u << 31, 0, false}};  // the base is not aligned
  const uint64_t base = 0x40000;
  for (const Expect& e : cases) {
    SCOPED_TRACE(e.align);
    SplitQueue q(kSize);
    q.set_size(8);
    ASSERT_OK(q.SetLegacyLayout(base, e.align));
    EXPECT_EQ(q.desc_table(), base);
    EXPECT_EQ(q.avail_ring(), base + 128);
    if (e.align == (1u << 31)) {
      EXPECT_EQ(q.used_ring(), uint64_t{1} << 31);  // next multiple of 2^31
      EXPECT_THAT(q.Validate(*h_.mem), StatusIs(absl::StatusCode::kOutOfRange));
      continue;
    }
    EXPECT_EQ(q.used_ring(), base + e.used_offset);
    EXPECT_EQ(q.used_ring() % e.align, 0u);
    if (e.valid) {
      EXPECT_OK(q.Validate(*h_.mem));
    } else {
      EXPECT_THAT(q.Validate(*h_.mem),
                  StatusIs(absl::StatusCode::kInvalidArgument));
    }
  }
}

TEST_P(SplitQueueTest, LegacyLayoutRejectsAlignmentsThatAreNotPowersOfTwo) {
  for (uint32_t align : {0u, 3u, 6u, 100u, 4095u, 4097u, 0x80000001u}) {
    SCOPED_TRACE(align);
    EXPECT_THAT(h_.q.SetLegacyLayout(0x40000, align),
                StatusIs(absl::StatusCode::kInvalidArgument));
    // The addresses are left as they were.
    EXPECT_EQ(h_.q.desc_table(), kDesc);
    EXPECT_EQ(h_.q.avail_ring(), kAvail);
    EXPECT_EQ(h_.q.used_ring(), kUsed);
  }
}

TEST_P(SplitQueueTest, LegacyLayoutNearTheTopOfTheAddressSpaceIsRejected) {
  // The used ring's address wraps past 2^64; Activate() must refuse it.
  for (uint64_t base :
       {kMax64 - 0xfff, kMax64 - 0x3fff, uint64_t{0xfffff000}}) {
    SCOPED_TRACE(base);
    ASSERT_OK(h_.q.SetLegacyLayout(base, 4096));
    EXPECT_THAT(h_.q.Activate(*h_.mem),
                StatusIs(absl::StatusCode::kOutOfRange));
    EXPECT_FALSE(h_.q.ready());
  }
}

// ---- Popping chains.

TEST_P(SplitQueueTest, PopsADirectChainReadableFirst) {
  ASSERT_OK(h_.Activate());
  ASSERT_OK_AND_ASSIGN(uint16_t head,
                       h_.drv->AddChain({{kData, 16, false},
                                         {kData + 0x100, 100, false},
                                         {kData + 0x1000, 512, true},
                                         {kData + 0x2000, 1, true}}));
  EXPECT_TRUE(h_.q.HasAvailable());
  std::optional<DescriptorChain> chain = h_.q.Pop();
  ASSERT_TRUE(chain.has_value());
  EXPECT_EQ(chain->head(), head);
  Walked w = WalkAll(*chain, *h_.mem);
  EXPECT_EQ(w.error, QueueError::kNone);
  EXPECT_OK(chain->status());
  // Flags are handed out as they were (NEXT included), in host order.
  EXPECT_THAT(w.descs,
              ElementsAre(Desc(kData, 16u, N), Desc(kData + 0x100, 100u, N),
                          Desc(kData + 0x1000, 512u, W | N),
                          Desc(kData + 0x2000, 1u, W)));
  EXPECT_FALSE(w.descs[1].writable());
  EXPECT_TRUE(w.descs[2].writable());
  EXPECT_EQ(w.count, 4u);
  EXPECT_FALSE(h_.q.HasAvailable());
  EXPECT_FALSE(h_.q.Pop().has_value());
}

TEST_P(SplitQueueTest, PopsAnIndirectChain) {
  ASSERT_OK(h_.Activate());
  const DriverQueue::Buffer bufs[] = {{kData, 16, false},
                                      {kData + 0x10, 32, false},
                                      {kData + 0x100, 4096, true},
                                      {kData + 0x2000, 7, true}};
  ASSERT_OK_AND_ASSIGN(uint16_t head, h_.drv->AddIndirectChain(kTable, bufs));
  std::optional<DescriptorChain> chain = h_.q.Pop();
  ASSERT_TRUE(chain.has_value());
  EXPECT_EQ(chain->head(), head);
  Walked w = WalkAll(*chain, *h_.mem);
  EXPECT_EQ(w.error, QueueError::kNone);
  EXPECT_THAT(w.descs,
              ElementsAre(Desc(kData, 16u, N), Desc(kData + 0x10, 32u, N),
                          Desc(kData + 0x100, 4096u, W | N),
                          Desc(kData + 0x2000, 7u, W)));
  // The INDIRECT descriptor itself is not handed out.
  EXPECT_EQ(w.count, 4u);
  h_.q.AddUsed(head, 4103);
  std::optional<VirtqUsedElem> used = h_.drv->PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->id, head);
  EXPECT_EQ(used->len, 4103u);
}

TEST_P(SplitQueueTest, DirectDescriptorsThenAnIndirectTable) {
  ASSERT_OK(h_.Activate());
  h_.drv->WriteDesc(3, kData, 8, R | N, 7);
  h_.drv->WriteDesc(7, kTable, 32, I, 0);
  h_.drv->WriteDescAt(kTable, 0, kData + 8, 8, R | N, 1);
  h_.drv->WriteDescAt(kTable, 1, kData + 16, 8, W, 0);
  h_.drv->Publish(3);
  std::optional<DescriptorChain> chain = h_.q.Pop();
  ASSERT_TRUE(chain.has_value());
  Walked w = WalkAll(*chain, *h_.mem);
  EXPECT_EQ(w.error, QueueError::kNone);
  EXPECT_THAT(w.descs, ElementsAre(Desc(kData, 8u, N), Desc(kData + 8, 8u, N),
                                   Desc(kData + 16, 8u, W)));
}

TEST_P(SplitQueueTest, RangeForVisitsTheChain) {
  ASSERT_OK(h_.Activate());
  ASSERT_OK(
      h_.drv->AddChain({{kData, 1, false}, {kData + 1, 2, true}}).status());
  std::optional<DescriptorChain> chain = h_.q.Pop();
  ASSERT_TRUE(chain.has_value());
  std::vector<uint32_t> lens;
  uint32_t written = 0;
  for (const Descriptor& d : *chain) {
    lens.push_back(d.len);
    if (d.writable()) written += d.len;
  }
  EXPECT_THAT(lens, ElementsAre(1u, 2u));
  EXPECT_EQ(written, 2u);
  EXPECT_TRUE(chain->ok());
  EXPECT_EQ(chain->begin(), chain->end());  // nothing left
}

TEST_P(SplitQueueTest, ChainsAreIndependentOfEachOther) {
  ASSERT_OK(h_.Activate());
  ASSERT_OK_AND_ASSIGN(uint16_t a, h_.drv->AddChain({{kData, 1, false}}));
  ASSERT_OK_AND_ASSIGN(uint16_t b, h_.drv->AddChain({{kData + 8, 2, true}}));
  std::optional<DescriptorChain> ca = h_.q.Pop();
  std::optional<DescriptorChain> cb = h_.q.Pop();
  ASSERT_TRUE(ca.has_value() && cb.has_value());
  EXPECT_EQ(ca->head(), a);
  EXPECT_EQ(cb->head(), b);
  // Walked in the other order, and completed in the other order.
  EXPECT_THAT(WalkAll(*cb, *h_.mem).descs, ElementsAre(Desc(kData + 8, 2u, W)));
  EXPECT_THAT(WalkAll(*ca, *h_.mem).descs, ElementsAre(Desc(kData, 1u, R)));
  h_.q.AddUsed(b, 2);
  h_.q.AddUsed(a, 0);
  EXPECT_EQ(h_.drv->PopUsed()->id, b);
  EXPECT_EQ(h_.drv->PopUsed()->id, a);
}

TEST_P(SplitQueueTest, ChainOfExactlyQueueSizeDescriptors) {
  ASSERT_OK(h_.Activate());
  for (uint16_t i = 0; i < kSize; ++i) {
    const bool last = i == kSize - 1;
    h_.drv->WriteDesc(i, kData + 16ull * i, 16, last ? W : R | N,
                      static_cast<uint16_t>(last ? 0 : i + 1));
  }
  h_.drv->Publish(0);
  std::optional<DescriptorChain> chain = h_.q.Pop();
  ASSERT_TRUE(chain.has_value());
  Walked w = WalkAll(*chain, *h_.mem);
  EXPECT_EQ(w.error, QueueError::kNone);
  EXPECT_EQ(w.count, kSize);
}

TEST_P(SplitQueueTest, BuffersAtTheEdgesOfMemory) {
  ASSERT_OK(h_.Activate());
  // Zero length, the last bytes of memory, across the two regions (inside
  // guest memory, so allowed: the device copies with Read/Write), and an
  // empty buffer right at the end.
  ASSERT_OK(h_.drv
                ->AddChain({{kData, 0, false},
                            {kBoundary - 8, 16, false},
                            {kMemBase, 1, false},
                            {kMemEnd - 16, 16, true},
                            {kMemEnd, 0, true}})
                .status());
  std::optional<DescriptorChain> chain = h_.q.Pop();
  ASSERT_TRUE(chain.has_value());
  Walked w = WalkAll(*chain, *h_.mem);
  EXPECT_EQ(w.error, QueueError::kNone);
  EXPECT_EQ(w.count, 5u);
}

TEST_P(SplitQueueTest, DeviceReadsAndWritesTheQueueByteOrder) {
  ASSERT_OK(h_.Activate());
  // Lay out descriptor 5 and the avail ring byte by byte, not via DriverQueue.
  const uint64_t d = kDesc + 16 * 5;
  h_.Store(d, 8, kData + 0x0304);
  h_.Store(d + 8, 4, 0x0102);
  h_.Store(d + 12, 2, W);
  h_.Store(d + 14, 2, 0);
  h_.Store(kAvail + 4, 2, 5);
  h_.Store(kAvail + 2, 2, 1);
  std::optional<DescriptorChain> chain = h_.q.Pop();
  ASSERT_TRUE(chain.has_value());
  EXPECT_EQ(chain->head(), 5);
  EXPECT_THAT(WalkAll(*chain, *h_.mem).descs,
              ElementsAre(Desc(kData + 0x0304, 0x0102u, W)));
  h_.q.AddUsed(5, 0x01020304);
  EXPECT_EQ(h_.UsedIdx(), 1);
  EXPECT_EQ(h_.UsedElem(0).id, 5u);
  EXPECT_EQ(h_.UsedElem(0).len, 0x01020304u);
  ASSERT_OK_AND_ASSIGN(uint8_t first, h_.mem->ReadObj<uint8_t>(kUsed + 8));
  EXPECT_EQ(first, endian() == Endian::kLittle ? 0x04 : 0x01);
  ASSERT_OK_AND_ASSIGN(uint8_t idx_lo, h_.mem->ReadObj<uint8_t>(kUsed + 2));
  EXPECT_EQ(idx_lo, endian() == Endian::kLittle ? 1 : 0);
}

TEST_P(SplitQueueTest, UndoReturnsTheSameChainAgain) {
  ASSERT_OK(h_.Activate());
  ASSERT_OK_AND_ASSIGN(uint16_t a, h_.drv->AddChain({{kData, 1, false}}));
  ASSERT_OK_AND_ASSIGN(uint16_t b, h_.drv->AddChain({{kData, 2, false}}));
  std::optional<DescriptorChain> first = h_.q.Pop();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->head(), a);
  h_.q.Undo();
  EXPECT_EQ(h_.q.next_avail(), 0);
  std::optional<DescriptorChain> again = h_.q.Pop();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->head(), a);
  EXPECT_THAT(WalkAll(*again, *h_.mem).descs, ElementsAre(Desc(kData, 1u, R)));
  std::optional<DescriptorChain> second = h_.q.Pop();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->head(), b);
  // Two back, then both again.
  h_.q.Undo();
  h_.q.Undo();
  EXPECT_EQ(h_.q.Pop()->head(), a);
  EXPECT_EQ(h_.q.Pop()->head(), b);
  EXPECT_FALSE(h_.q.Pop().has_value());
}

TEST_P(SplitQueueTest, UndoOnAQueueThatIsNotReadyDoesNothing) {
  h_.q.Undo();
  EXPECT_EQ(h_.q.next_avail(), 0);
  EXPECT_FALSE(h_.q.Pop().has_value());
}

TEST_P(SplitQueueTest, HasAvailable) {
  EXPECT_FALSE(h_.q.HasAvailable());  // not ready
  ASSERT_OK(h_.drv->AddChain({{kData, 1, false}}).status());
  EXPECT_FALSE(h_.q.HasAvailable());  // still not ready
  ASSERT_OK(h_.Activate());
  EXPECT_TRUE(h_.q.HasAvailable());
  EXPECT_TRUE(h_.q.HasAvailable());  // does not consume
  EXPECT_TRUE(h_.q.Pop().has_value());
  EXPECT_FALSE(h_.q.HasAvailable());
  ASSERT_OK(h_.drv->AddChain({{kData, 1, false}}).status());
  ASSERT_OK(h_.drv->AddChain({{kData, 1, false}}).status());
  EXPECT_TRUE(h_.q.HasAvailable());
  EXPECT_TRUE(h_.q.Pop().has_value());
  EXPECT_TRUE(h_.q.HasAvailable());  // one seen but not yet popped
  EXPECT_TRUE(h_.q.Pop().has_value());
  EXPECT_FALSE(h_.q.HasAvailable());
}

TEST_P(SplitQueueTest, AvailIndexMovingByExactlyTheQueueSizeIsFine) {
  ASSERT_OK(h_.Activate());
  h_.drv->WriteDesc(100, kData, 8, R, 0);
  for (int i = 0; i < kSize; ++i) h_.drv->Publish(100);
  for (int i = 0; i < kSize; ++i) {
    std::optional<DescriptorChain> chain = h_.q.Pop();
    ASSERT_TRUE(chain.has_value()) << i;
    EXPECT_EQ(chain->head(), 100);
  }
  EXPECT_FALSE(h_.q.Pop().has_value());
  EXPECT_FALSE(h_.q.broken());
}

// ---- The used ring.

TEST_P(SplitQueueTest, AddUsedWritesTheElementThenTheIndex) {
  ASSERT_OK(h_.Activate());
  ASSERT_OK_AND_ASSIGN(uint16_t head, h_.drv->AddChain({{kData, 8, true}}));
  std::optional<DescriptorChain> chain = h_.q.Pop();
  ASSERT_TRUE(chain.has_value());
  h_.Snapshot();
  h_.q.AddUsed(head, 123);
  EXPECT_EQ(h_.q.next_used(), 1);
  EXPECT_EQ(h_.UsedIdx(), 1);
  EXPECT_EQ(h_.UsedElem(0).id, head);
  EXPECT_EQ(h_.UsedElem(0).len, 123u);
  EXPECT_EQ(h_.UsedFlags(), 0);
  EXPECT_TRUE(h_.UntouchedExceptUsedRing());
  std::optional<VirtqUsedElem> used = h_.drv->PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->id, head);
  EXPECT_EQ(used->len, 123u);
}

TEST_P(SplitQueueTest, PushUsedIsInvisibleUntilPublishUsed) {
  ASSERT_OK(h_.Activate());
  h_.q.PushUsed(7, 70);
  h_.q.PushUsed(9, 90);
  EXPECT_EQ(h_.q.next_used(), 2);
  EXPECT_EQ(h_.UsedIdx(), 0);
  EXPECT_EQ(h_.drv->PendingUsed(), 0);
  EXPECT_EQ(h_.UsedElem(0).id, 7u);  // written, not yet published
  EXPECT_EQ(h_.UsedElem(1).len, 90u);
  h_.q.PublishUsed();
  EXPECT_EQ(h_.UsedIdx(), 2);
  EXPECT_EQ(h_.drv->PendingUsed(), 2);
}

TEST_P(SplitQueueTest, BatchAddUsed) {
  ASSERT_OK(h_.Activate());
  std::vector<UsedElement> elems;
  for (int i = 0; i < 3; ++i) {
    ASSERT_OK_AND_ASSIGN(uint16_t head, h_.drv->AddChain({{kData, 8, true}}));
    ASSERT_TRUE(h_.q.Pop().has_value());
    elems.push_back({head, static_cast<uint32_t>(10 + i)});
  }
  h_.q.AddUsed(elems);
  EXPECT_EQ(h_.UsedIdx(), 3);
  for (int i = 0; i < 3; ++i) {
    std::optional<VirtqUsedElem> used = h_.drv->PopUsed();
    ASSERT_TRUE(used.has_value());
    EXPECT_EQ(used->id, elems[i].head);
    EXPECT_EQ(used->len, elems[i].len);
  }
  EXPECT_FALSE(h_.drv->PopUsed().has_value());
  h_.q.AddUsed(absl::Span<const UsedElement>());  // an empty batch is fine
  EXPECT_EQ(h_.UsedIdx(), 3);
}

TEST_P(SplitQueueTest, IndicesWrapAt2To16) {
  h_.q.set_next_avail(65534);
  h_.q.set_next_used(65534);
  h_.drv->SetAvailIdx(65534);
  ASSERT_OK(h_.Activate());
  std::vector<uint16_t> heads;
  for (int i = 0; i < 4; ++i) {
    ASSERT_OK_AND_ASSIGN(uint16_t head,
                         h_.drv->AddChain({{kData + 8ull * i, 8, true}}));
    heads.push_back(head);
  }
  EXPECT_EQ(h_.drv->avail_idx(), 2);  // wrapped on the driver side
  for (int i = 0; i < 4; ++i) {
    std::optional<DescriptorChain> chain = h_.q.Pop();
    ASSERT_TRUE(chain.has_value()) << i;
    EXPECT_EQ(chain->head(), heads[i]);
    EXPECT_THAT(WalkAll(*chain, *h_.mem).descs,
                ElementsAre(Desc(kData + 8ull * i, 8u, W)));
    h_.q.AddUsed(chain->head(), static_cast<uint32_t>(i));
  }
  EXPECT_FALSE(h_.q.Pop().has_value());
  EXPECT_FALSE(h_.q.broken());
  EXPECT_EQ(h_.q.next_avail(), 2);
  EXPECT_EQ(h_.q.next_used(), 2);
  EXPECT_EQ(h_.UsedIdx(), 2);
  // Slots 65534 % 256 = 254, 255, then 0 and 1.
  const uint16_t slots[] = {254, 255, 0, 1};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(h_.UsedElem(slots[i]).id, heads[i]);
    EXPECT_EQ(h_.UsedElem(slots[i]).len, static_cast<uint32_t>(i));
  }
}

TEST_P(SplitQueueTest, AvailIndexJumpIsMeasuredModulo2To16) {
  // next_avail 65530, avail.idx 4: ten chains, which is fine.
  h_.q.set_next_avail(65530);
  h_.drv->SetAvailIdx(65530);
  ASSERT_OK(h_.Activate());
  h_.drv->WriteDesc(1, kData, 8, R, 0);
  for (int i = 0; i < 10; ++i) h_.drv->Publish(1);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(h_.q.Pop().has_value()) << i;
  EXPECT_FALSE(h_.q.Pop().has_value());
  EXPECT_FALSE(h_.q.broken());
}

// ---- Notification suppression without event idx.

TEST_P(SplitQueueTest, DisableAndEnableNotificationToggleNoNotify) {
  ASSERT_OK(h_.Activate());
  EXPECT_EQ(h_.UsedFlags(), 0);
  h_.Snapshot();
  h_.q.DisableNotification();
  EXPECT_EQ(h_.UsedFlags(), kUsedFNoNotify);
  EXPECT_TRUE(h_.UntouchedExcept(kUsed, 2));  // only used.flags changed
  ASSERT_OK(h_.drv->AddChain({{kData, 1, false}}).status());
  EXPECT_FALSE(h_.drv->ShouldNotify());
  EXPECT_TRUE(h_.q.EnableNotification());  // that chain arrived meanwhile
  EXPECT_EQ(h_.UsedFlags(), 0);
  ASSERT_OK(h_.drv->AddChain({{kData, 1, false}}).status());
  EXPECT_TRUE(h_.drv->ShouldNotify());
  // Other bits of used.flags are left alone.
  h_.Store(kUsed, 2, 0x8000);
  h_.q.DisableNotification();
  EXPECT_EQ(h_.UsedFlags(), 0x8001);
  h_.q.EnableNotification();
  EXPECT_EQ(h_.UsedFlags(), 0x8000);
}

TEST_P(SplitQueueTest, EnableNotificationReportsChainsThatArrivedMeanwhile) {
  ASSERT_OK(h_.Activate());
  EXPECT_FALSE(h_.q.EnableNotification());  // nothing there
  h_.q.DisableNotification();
  ASSERT_OK(h_.drv->AddChain({{kData, 1, false}}).status());
  EXPECT_TRUE(h_.q.EnableNotification());
  std::optional<DescriptorChain> chain = h_.q.Pop();
  ASSERT_TRUE(chain.has_value());
  // Popped but not completed: nothing new is available.
  EXPECT_FALSE(h_.q.EnableNotification());
  // A chain seen (avail.idx read) but not yet popped still counts.
  ASSERT_OK(h_.drv->AddChain({{kData, 1, false}}).status());
  ASSERT_OK(h_.drv->AddChain({{kData, 1, false}}).status());
  ASSERT_TRUE(h_.q.Pop().has_value());
  EXPECT_TRUE(h_.q.EnableNotification());
}

TEST_P(SplitQueueTest, NoInterruptIsHonoured) {
  ASSERT_OK(h_.Activate());
  EXPECT_TRUE(h_.q.NeedsNotification());
  EXPECT_TRUE(h_.q.NeedsNotification());  // no state without event idx
  h_.drv->SetNoInterrupt(true);
  EXPECT_FALSE(h_.q.NeedsNotification());
  ASSERT_OK(h_.drv->AddChain({{kData, 1, false}}).status());
  std::optional<DescriptorChain> chain = h_.q.Pop();
  ASSERT_TRUE(chain.has_value());
  h_.q.AddUsed(chain->head(), 0);
  EXPECT_FALSE(h_.q.NeedsNotification());
  h_.drv->SetNoInterrupt(false);
  EXPECT_TRUE(h_.q.NeedsNotification());
}

// ---- Notification suppression with event idx.

class EventIdxTest : public SplitQueueTest {
 protected:
  void SetUp() override {
    SplitQueueTest::SetUp();
    h_.q.set_event_idx(true);
    h_.drv->set_event_idx(true);
    ASSERT_OK(h_.Activate());
  }
  // Publishes, pops and completes one chain.
  void RoundTrip() {
    ASSERT_OK(h_.drv->AddChain({{kData, 1, false}}).status());
    std::optional<DescriptorChain> chain = h_.q.Pop();
    ASSERT_TRUE(chain.has_value());
    h_.q.AddUsed(chain->head(), 0);
  }
};

INSTANTIATE_TEST_SUITE_P(Endians, EventIdxTest,
                         Values(Endian::kLittle, Endian::kBig),
                         [](const auto& info) {
                           return EndianName(info.param);
                         });

TEST_P(EventIdxTest, EnableNotificationWritesAvailEvent) {
  for (int i = 0; i < 3; ++i) {
    ASSERT_OK(h_.drv->AddChain({{kData, 1, false}}).status());
    ASSERT_TRUE(h_.q.Pop().has_value());
  }
  h_.Snapshot();
  EXPECT_FALSE(h_.q.EnableNotification());
  EXPECT_EQ(h_.AvailEvent(), 3);
  EXPECT_EQ(h_.UsedFlags(), 0);  // flags are not used with event idx
  EXPECT_TRUE(h_.UntouchedExcept(kUsed + 4 + 8 * kSize, 2));
  // Disabling leaves avail_event behind: the driver sees no reason to notify
  // once it has passed it.
  h_.q.DisableNotification();
  EXPECT_EQ(h_.AvailEvent(), 3);
  EXPECT_EQ(h_.UsedFlags(), 0);
  EXPECT_TRUE(h_.UntouchedExcept(kUsed + 4 + 8 * kSize, 2));
}

TEST_P(EventIdxTest, DriverNotifiesOnlyWhenPassingAvailEvent) {
  EXPECT_FALSE(h_.q.EnableNotification());  // avail_event = 0
  ASSERT_OK(h_.drv->AddChain({{kData, 1, false}}).status());
  EXPECT_TRUE(h_.drv->ShouldNotify());  // avail.idx 0 -> 1 passes 0
  ASSERT_OK(h_.drv->AddChain({{kData, 1, false}}).status());
  EXPECT_FALSE(h_.drv->ShouldNotify());  // 1 -> 2 does not
  ASSERT_TRUE(h_.q.Pop().has_value());
  ASSERT_TRUE(h_.q.Pop().has_value());
  EXPECT_FALSE(h_.q.EnableNotification());  // avail_event = 2
  EXPECT_EQ(h_.AvailEvent(), 2);
  ASSERT_OK(h_.drv->AddChain({{kData, 1, false}}).status());
  EXPECT_TRUE(h_.drv->ShouldNotify());
}

TEST_P(EventIdxTest, EnableNotificationReportsChainsThatArrivedMeanwhile) {
  h_.q.DisableNotification();
  ASSERT_OK(h_.drv->AddChain({{kData, 1, false}}).status());
  EXPECT_TRUE(h_.q.EnableNotification());
  EXPECT_EQ(h_.AvailEvent(), 0);
  ASSERT_TRUE(h_.q.Pop().has_value());
  EXPECT_FALSE(h_.q.EnableNotification());
  EXPECT_EQ(h_.AvailEvent(), 1);
}

TEST_P(EventIdxTest, NeedsNotificationFollowsUsedEvent) {
  // The first decision after activation always notifies.
  EXPECT_TRUE(h_.q.NeedsNotification());
  // used_event = 2: notify when the used index moves past 2, i.e. when the
  // element at index 2 is published (vring_need_event(2, new, old)).
  h_.drv->SetUsedEvent(2);
  RoundTrip();  // used 0 -> 1
  EXPECT_FALSE(h_.q.NeedsNotification());
  RoundTrip();  // 1 -> 2
  EXPECT_FALSE(h_.q.NeedsNotification());
  RoundTrip();  // 2 -> 3: passes used_event
  EXPECT_TRUE(h_.q.NeedsNotification());
  RoundTrip();  // 3 -> 4
  EXPECT_FALSE(h_.q.NeedsNotification());
  // Nothing published since the last decision: no notification.
  EXPECT_FALSE(h_.q.NeedsNotification());
}

TEST_P(EventIdxTest, NeedsNotificationForABatchThatPassesUsedEvent) {
  EXPECT_TRUE(h_.q.NeedsNotification());  // signalled at used 0
  h_.drv->SetUsedEvent(3);
  std::vector<UsedElement> elems;
  for (int i = 0; i < 5; ++i) {
    ASSERT_OK_AND_ASSIGN(uint16_t head, h_.drv->AddChain({{kData, 1, false}}));
    ASSERT_TRUE(h_.q.Pop().has_value());
    elems.push_back({head, 0});
  }
  h_.q.AddUsed(elems);  // 0 -> 5 covers 3
  EXPECT_TRUE(h_.q.NeedsNotification());
  // A used_event the device has already passed: no notification.
  h_.drv->SetUsedEvent(1);
  RoundTrip();  // 5 -> 6
  EXPECT_FALSE(h_.q.NeedsNotification());
  // used_event == old used index: notify.
  h_.drv->SetUsedEvent(6);
  RoundTrip();  // 6 -> 7
  EXPECT_TRUE(h_.q.NeedsNotification());
}

TEST_P(EventIdxTest, NeedsNotificationAcrossTheWrap) {
  ASSERT_OK(h_.Init(endian()));
  h_.q.set_event_idx(true);
  h_.drv->set_event_idx(true);
  h_.q.set_next_avail(65534);
  h_.q.set_next_used(65534);
  h_.drv->SetAvailIdx(65534);
  ASSERT_OK(h_.Activate());
  EXPECT_TRUE(h_.q.NeedsNotification());  // signalled at 65534
  h_.drv->SetUsedEvent(65535);
  RoundTrip();  // 65534 -> 65535
  EXPECT_FALSE(h_.q.NeedsNotification());
  RoundTrip();  // 65535 -> 0: passes 65535
  EXPECT_TRUE(h_.q.NeedsNotification());
  h_.drv->SetUsedEvent(0);
  RoundTrip();  // 0 -> 1
  EXPECT_TRUE(h_.q.NeedsNotification());
}

TEST_P(EventIdxTest, NoInterruptFlagIsIgnored) {
  // §2.7.10: with VIRTIO_F_EVENT_IDX the device ignores the flag.
  EXPECT_TRUE(h_.q.NeedsNotification());
  h_.drv->SetNoInterrupt(true);
  h_.drv->SetUsedEvent(0);
  RoundTrip();  // 0 -> 1 passes used_event 0
  EXPECT_TRUE(h_.q.NeedsNotification());
}

TEST_P(EventIdxTest, SetNextUsedForgetsTheLastDecision) {
  EXPECT_TRUE(h_.q.NeedsNotification());
  h_.drv->SetUsedEvent(100);
  EXPECT_FALSE(h_.q.NeedsNotification());
  h_.q.set_next_used(0);
  EXPECT_TRUE(h_.q.NeedsNotification());
}

// ---- Reset.

TEST_P(SplitQueueTest, ResetRestoresTheInitialState) {
  h_.q.set_event_idx(true);
  h_.q.set_indirect_allowed(false);
  h_.q.set_next_avail(5);
  h_.q.set_next_used(9);
  h_.drv->SetAvailIdx(5);
  ASSERT_OK(h_.Activate());
  h_.drv->Publish(kSize);  // breaks the queue
  EXPECT_FALSE(h_.q.Pop().has_value());
  ASSERT_TRUE(h_.q.broken());

  h_.q.Reset();
  EXPECT_FALSE(h_.q.ready());
  EXPECT_FALSE(h_.q.broken());
  EXPECT_OK(h_.q.status());
  EXPECT_EQ(h_.q.size(), h_.q.max_size());
  EXPECT_EQ(h_.q.max_size(), kSize);
  EXPECT_EQ(h_.q.desc_table(), 0u);
  EXPECT_EQ(h_.q.avail_ring(), 0u);
  EXPECT_EQ(h_.q.used_ring(), 0u);
  EXPECT_EQ(h_.q.next_avail(), 0);
  EXPECT_EQ(h_.q.next_used(), 0);
  EXPECT_FALSE(h_.q.event_idx());
  EXPECT_TRUE(h_.q.indirect_allowed());
  EXPECT_EQ(h_.q.endian(), Endian::kLittle);

  // A reset queue serves nothing and writes nothing.
  h_.Snapshot();
  EXPECT_FALSE(h_.q.Pop().has_value());
  EXPECT_FALSE(h_.q.HasAvailable());
  h_.q.AddUsed(0, 1);
  h_.q.PushUsed(0, 1);
  h_.q.PublishUsed();
  h_.q.DisableNotification();
  EXPECT_FALSE(h_.q.EnableNotification());
  EXPECT_FALSE(h_.q.NeedsNotification());
  EXPECT_TRUE(h_.Untouched());

  // And it works again once configured.
  ASSERT_OK(h_.Init(endian()));
  ASSERT_OK(h_.Activate());
  ASSERT_OK_AND_ASSIGN(uint16_t head, h_.drv->AddChain({{kData, 1, false}}));
  std::optional<DescriptorChain> chain = h_.q.Pop();
  ASSERT_TRUE(chain.has_value());
  EXPECT_EQ(chain->head(), head);
}

TEST_P(SplitQueueTest, PopBeforeActivateReturnsNothing) {
  ASSERT_OK(h_.drv->AddChain({{kData, 1, false}}).status());
  h_.Snapshot();
  EXPECT_FALSE(h_.q.Pop().has_value());
  h_.q.AddUsed(0, 1);
  EXPECT_TRUE(h_.Untouched());
  ASSERT_OK(h_.Activate());
  EXPECT_TRUE(h_.q.Pop().has_value());
}

// ---- Errors.

TEST(QueueErrorTest, NamesAndStatusCodes) {
  struct Expect {
    QueueError error;
    absl::StatusCode code;
  };
  const Expect cases[] = {
      {QueueError::kNone, absl::StatusCode::kOk},
      {QueueError::kAvailIndexJump, absl::StatusCode::kOutOfRange},
      {QueueError::kHeadOutOfRange, absl::StatusCode::kOutOfRange},
      {QueueError::kNextOutOfRange, absl::StatusCode::kOutOfRange},
      {QueueError::kChainTooLong, absl::StatusCode::kInvalidArgument},
      {QueueError::kTotalLengthOverflow, absl::StatusCode::kOutOfRange},
      {QueueError::kBufferOutOfMemory, absl::StatusCode::kOutOfRange},
      {QueueError::kReadableAfterWritable, absl::StatusCode::kInvalidArgument},
      {QueueError::kIndirectNotNegotiated, absl::StatusCode::kInvalidArgument},
      {QueueError::kIndirectWithNext, absl::StatusCode::kInvalidArgument},
      {QueueError::kNestedIndirect, absl::StatusCode::kInvalidArgument},
      {QueueError::kIndirectTableLength, absl::StatusCode::kInvalidArgument},
      {QueueError::kIndirectTableTooLarge, absl::StatusCode::kOutOfRange},
      {QueueError::kIndirectTableOutOfMemory, absl::StatusCode::kOutOfRange},
  };
  std::set<std::string> names;
  for (const Expect& e : cases) {
    const std::string name = QueueErrorName(e.error);
    SCOPED_TRACE(name);
    EXPECT_FALSE(name.empty());
    names.insert(name);
    const absl::Status s = QueueErrorToStatus(e.error);
    EXPECT_EQ(s.code(), e.code);
    if (!s.ok()) EXPECT_EQ(s.message(), name);
  }
  EXPECT_EQ(names.size(), std::size(cases));
}

// Malformed input: each case lays out one bad chain (or a bad ring) with
// descriptors 0..9, then the test publishes a good chain (descriptor 100)
// after it. Nothing outside the used ring may change.
struct MalformedCase {
  std::string name;
  std::function<void(Harness&)> setup;
  QueueError error;
  absl::StatusCode code;
  uint32_t handed_out;  // descriptors handed out before the error
};

// Shorthands for the setups.
void D(Harness& h, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
       uint16_t next = 0) {
  h.drv->WriteDesc(i, addr, len, flags, next);
}
void T(Harness& h, uint32_t i, uint64_t addr, uint32_t len, uint16_t flags,
       uint16_t next = 0, uint64_t table = kTable) {
  h.drv->WriteDescAt(table, i, addr, len, flags, next);
}
void P(Harness& h, uint16_t head) { h.drv->Publish(head); }

constexpr uint16_t kGoodHead = 100;
constexpr uint64_t kGoodAddr = kData + 0x8000;

const MalformedCase kChainCases[] = {
    {"NextOutOfRange",
     [](Harness& h) { D(h, 0, kData, 16, N, kSize), P(h, 0); },
     QueueError::kNextOutOfRange, absl::StatusCode::kOutOfRange, 0},
    {"NextFarOutOfRange",
     [](Harness& h) {
       D(h, 0, kData, 16, N, 1), D(h, 1, kData, 16, W | N, 0xffff), P(h, 0);
     },
     QueueError::kNextOutOfRange, absl::StatusCode::kOutOfRange, 1},
    {"LoopInDirectChain",
     [](Harness& h) {
       D(h, 0, kData, 16, N, 1), D(h, 1, kData + 16, 16, N, 0), P(h, 0);
     },
     QueueError::kChainTooLong, absl::StatusCode::kInvalidArgument, kSize},
    {"SelfLoop", [](Harness& h) { D(h, 0, kData, 16, N, 0), P(h, 0); },
     QueueError::kChainTooLong, absl::StatusCode::kInvalidArgument, kSize},
    {"LoopThroughTheHead",
     [](Harness& h) {
       D(h, 5, kData, 1, W | N, 6), D(h, 6, kData, 1, W | N, 7),
           D(h, 7, kData, 1, W | N, 5), P(h, 5);
     },
     QueueError::kChainTooLong, absl::StatusCode::kInvalidArgument, kSize},
    {"TotalLengthOverflow",
     [](Harness& h) {
       D(h, 0, kData, 0x1000, N, 1), D(h, 1, kData, 0xffffffff, W), P(h, 0);
     },
     QueueError::kTotalLengthOverflow, absl::StatusCode::kOutOfRange, 1},
    {"TotalLengthExactly2To32",
     [](Harness& h) {
       D(h, 0, kData, 1, N, 1), D(h, 1, kData, 0xffffffff, W), P(h, 0);
     },
     QueueError::kTotalLengthOverflow, absl::StatusCode::kOutOfRange, 1},
    {"BufferBeyondMemory",
     [](Harness& h) { D(h, 0, kMemEnd + 0x1000, 16, R), P(h, 0); },
     QueueError::kBufferOutOfMemory, absl::StatusCode::kOutOfRange, 0},
    {"BufferBelowMemory", [](Harness& h) { D(h, 0, 0x1000, 16, R), P(h, 0); },
     QueueError::kBufferOutOfMemory, absl::StatusCode::kOutOfRange, 0},
    {"BufferCrossingTheEnd",
     [](Harness& h) { D(h, 0, kMemEnd - 8, 16, W), P(h, 0); },
     QueueError::kBufferOutOfMemory, absl::StatusCode::kOutOfRange, 0},
    {"BufferAddrPlusLenOverflows",
     [](Harness& h) { D(h, 0, kMax64 - 7, 16, R), P(h, 0); },
     QueueError::kBufferOutOfMemory, absl::StatusCode::kOutOfRange, 0},
    {"BufferAddrPlusLenWrapsIntoMemory",
     // [2^64 - 16, +0x10020) would end inside memory if the end wrapped.
     [](Harness& h) { D(h, 0, kMax64 - 15, 0x10020, R), P(h, 0); },
     QueueError::kBufferOutOfMemory, absl::StatusCode::kOutOfRange, 0},
    {"ZeroLengthBufferOutsideMemory",
     [](Harness& h) { D(h, 0, kMemEnd + 16, 0, R), P(h, 0); },
     QueueError::kBufferOutOfMemory, absl::StatusCode::kOutOfRange, 0},
    {"BadBufferAfterGoodOnes",
     [](Harness& h) {
       D(h, 0, kData, 16, N, 1), D(h, 1, kData, 16, W | N, 2),
           D(h, 2, kMemEnd, 16, W), P(h, 0);
     },
     QueueError::kBufferOutOfMemory, absl::StatusCode::kOutOfRange, 2},
    {"ReadableAfterWritable",
     [](Harness& h) {
       D(h, 0, kData, 16, N, 1), D(h, 1, kData, 16, W | N, 2),
           D(h, 2, kData, 16, R), P(h, 0);
     },
     QueueError::kReadableAfterWritable, absl::StatusCode::kInvalidArgument, 2},
    {"ReadableAfterWritableInIndirectTable",
     [](Harness& h) {
       D(h, 0, kTable, 48, I), T(h, 0, kData, 8, R | N, 1),
           T(h, 1, kData, 8, W | N, 2), T(h, 2, kData, 8, R), P(h, 0);
     },
     QueueError::kReadableAfterWritable, absl::StatusCode::kInvalidArgument, 2},
    {"WritableThenIndirectReadable",
     [](Harness& h) {
       D(h, 0, kData, 16, W | N, 1), D(h, 1, kTable, 16, I),
           T(h, 0, kData, 8, R), P(h, 0);
     },
     QueueError::kReadableAfterWritable, absl::StatusCode::kInvalidArgument, 1},
    {"IndirectNotNegotiated",
     [](Harness& h) {
       h.q.set_indirect_allowed(false);
       D(h, 0, kTable, 16, I), T(h, 0, kData, 8, R), P(h, 0);
     },
     QueueError::kIndirectNotNegotiated, absl::StatusCode::kInvalidArgument, 0},
    {"IndirectWithNext",
     [](Harness& h) {
       D(h, 0, kTable, 16, I | N, 1), D(h, 1, kData, 8, R),
           T(h, 0, kData, 8, R), P(h, 0);
     },
     QueueError::kIndirectWithNext, absl::StatusCode::kInvalidArgument, 0},
    {"NestedIndirect",
     [](Harness& h) {
       D(h, 0, kTable, 32, I), T(h, 0, kData, 8, R | N, 1),
           T(h, 1, kTable + 0x100, 16, I),
           T(h, 0, kData, 8, R, 0, kTable + 0x100), P(h, 0);
     },
     QueueError::kNestedIndirect, absl::StatusCode::kInvalidArgument, 1},
    {"IndirectTableLengthZero",
     [](Harness& h) { D(h, 0, kTable, 0, I), P(h, 0); },
     QueueError::kIndirectTableLength, absl::StatusCode::kInvalidArgument, 0},
    {"IndirectTableLengthNotMultipleOf16",
     [](Harness& h) { D(h, 0, kTable, 24, I), T(h, 0, kData, 8, R), P(h, 0); },
     QueueError::kIndirectTableLength, absl::StatusCode::kInvalidArgument, 0},
    {"IndirectTableLengthShort",
     [](Harness& h) { D(h, 0, kTable, 15, I), P(h, 0); },
     QueueError::kIndirectTableLength, absl::StatusCode::kInvalidArgument, 0},
    {"IndirectTableTooLarge",
     [](Harness& h) { D(h, 0, kTable, 16 * 65537, I), P(h, 0); },
     QueueError::kIndirectTableTooLarge, absl::StatusCode::kOutOfRange, 0},
    {"IndirectTableHuge",
     [](Harness& h) { D(h, 0, kMemBase, 0xfffffff0, I), P(h, 0); },
     QueueError::kIndirectTableTooLarge, absl::StatusCode::kOutOfRange, 0},
    {"IndirectTableOutsideMemory",
     [](Harness& h) { D(h, 0, kMemEnd + 0x1000, 32, I), P(h, 0); },
     QueueError::kIndirectTableOutOfMemory, absl::StatusCode::kOutOfRange, 0},
    {"IndirectTableCrossingTheEnd",
     // Its first entry is in memory; reading the second would hit the guard.
     [](Harness& h) {
       D(h, 0, kMemEnd - 16, 32, I), T(h, 0, kData, 8, R | N, 1, kMemEnd - 16),
           P(h, 0);
     },
     QueueError::kIndirectTableOutOfMemory, absl::StatusCode::kOutOfRange, 0},
    {"IndirectTableCrossingRegions",
     [](Harness& h) {
       D(h, 0, kBoundary - 16, 32, I), T(h, 0, kData, 8, R, 0, kBoundary - 16),
           T(h, 1, kData, 8, R, 0, kBoundary - 16), P(h, 0);
     },
     QueueError::kIndirectTableOutOfMemory, absl::StatusCode::kOutOfRange, 0},
    {"IndirectTableAddrPlusLenOverflows",
     [](Harness& h) { D(h, 0, kMax64 - 15, 32, I), P(h, 0); },
     QueueError::kIndirectTableOutOfMemory, absl::StatusCode::kOutOfRange, 0},
    {"IndirectNextOutOfTable",
     [](Harness& h) {
       D(h, 0, kTable, 32, I), T(h, 0, kData, 8, R | N, 2), P(h, 0);
     },
     QueueError::kNextOutOfRange, absl::StatusCode::kOutOfRange, 0},
    {"IndirectNextWithinQueueButOutOfTable",
     // Index 5 is a valid queue index, but the table has only 4 entries.
     [](Harness& h) {
       D(h, 0, kTable, 64, I), T(h, 0, kData, 8, R | N, 3),
           T(h, 3, kData, 8, R | N, 5), P(h, 0);
     },
     QueueError::kNextOutOfRange, absl::StatusCode::kOutOfRange, 1},
    {"LoopInIndirectTable",
     [](Harness& h) {
       D(h, 0, kTable, 48, I), T(h, 0, kData, 8, R | N, 1),
           T(h, 1, kData, 8, R | N, 2), T(h, 2, kData, 8, R | N, 0), P(h, 0);
     },
     QueueError::kChainTooLong, absl::StatusCode::kInvalidArgument, 3},
    {"IndirectBufferOutsideMemory",
     [](Harness& h) {
       D(h, 0, kTable, 16, I), T(h, 0, kMemEnd, 16, W), P(h, 0);
     },
     QueueError::kBufferOutOfMemory, absl::StatusCode::kOutOfRange, 0},
    {"IndirectTotalLengthOverflow",
     [](Harness& h) {
       D(h, 0, kData, 0x10, N, 1), D(h, 1, kTable, 16, I),
           T(h, 0, kData, 0xfffffff8, W), P(h, 0);
     },
     QueueError::kTotalLengthOverflow, absl::StatusCode::kOutOfRange, 1},
};

const MalformedCase kRingCases[] = {
    {"AvailIndexJumpForward", [](Harness& h) { h.drv->SetAvailIdx(kSize + 1); },
     QueueError::kAvailIndexJump, absl::StatusCode::kOutOfRange, 0},
    // (The good chain published after it moves avail.idx by one more.)
    {"AvailIndexJumpBackward", [](Harness& h) { h.drv->SetAvailIdx(0xff00); },
     QueueError::kAvailIndexJump, absl::StatusCode::kOutOfRange, 0},
    {"HeadOutOfRange", [](Harness& h) { P(h, kSize); },
     QueueError::kHeadOutOfRange, absl::StatusCode::kOutOfRange, 0},
    {"HeadFarOutOfRange", [](Harness& h) { P(h, 0xffff); },
     QueueError::kHeadOutOfRange, absl::StatusCode::kOutOfRange, 0},
};

class MalformedTest
    : public ::testing::TestWithParam<std::tuple<MalformedCase, Endian>> {
 protected:
  void SetUp() override {
    ASSERT_OK(h_.Init(std::get<1>(GetParam())));
    ASSERT_OK(h_.Activate());
    std::get<0>(GetParam()).setup(h_);
    // The good chain after the bad one.
    h_.drv->WriteDesc(kGoodHead, kGoodAddr, 64, W, 0);
    h_.drv->Publish(kGoodHead);
    h_.Snapshot();
  }
  const MalformedCase& c() const { return std::get<0>(GetParam()); }
  Harness h_;
};

using ChainErrorTest = MalformedTest;
using RingErrorTest = MalformedTest;

auto CaseName = [](const auto& info) {
  return std::get<0>(info.param).name + "_" +
         EndianName(std::get<1>(info.param));
};

// A chain error fails that chain and nothing else: the device completes it
// and the next chain is served.
TEST_P(ChainErrorTest, FailsTheChainOnly) {
  std::optional<DescriptorChain> chain = h_.q.Pop();
  ASSERT_TRUE(chain.has_value());
  Walked w = WalkAll(*chain, *h_.mem);
  EXPECT_EQ(w.error, c().error) << QueueErrorName(w.error);
  EXPECT_THAT(chain->status(), StatusIs(c().code));
  EXPECT_EQ(QueueErrorToStatus(w.error).code(), c().code);
  EXPECT_EQ(w.count, c().handed_out);
  EXPECT_FALSE(h_.q.broken());
  EXPECT_OK(h_.q.status());
  h_.q.AddUsed(chain->head(), 0);

  std::optional<DescriptorChain> good = h_.q.Pop();
  ASSERT_TRUE(good.has_value());
  EXPECT_EQ(good->head(), kGoodHead);
  EXPECT_THAT(WalkAll(*good, *h_.mem).descs,
              ElementsAre(Desc(kGoodAddr, 64u, W)));
  h_.q.AddUsed(kGoodHead, 64);
  EXPECT_FALSE(h_.q.Pop().has_value());
  EXPECT_EQ(h_.UsedIdx(), 2);
  EXPECT_TRUE(h_.UntouchedExceptUsedRing());
}

INSTANTIATE_TEST_SUITE_P(Cases, ChainErrorTest,
                         ::testing::Combine(::testing::ValuesIn(kChainCases),
                                            Values(Endian::kLittle,
                                                   Endian::kBig)),
                         CaseName);

// A ring error breaks the queue: nothing more is served until Reset().
TEST_P(RingErrorTest, BreaksTheQueue) {
  EXPECT_FALSE(h_.q.Pop().has_value());
  EXPECT_TRUE(h_.q.broken());
  EXPECT_EQ(h_.q.error(), c().error) << QueueErrorName(h_.q.error());
  EXPECT_THAT(h_.q.status(), StatusIs(c().code));
  EXPECT_TRUE(h_.UntouchedExceptUsedRing());
  // More chains change nothing.
  ASSERT_OK(h_.drv->AddChain({{kData, 8, false}}).status());
  h_.Snapshot();
  EXPECT_FALSE(h_.q.Pop().has_value());
  EXPECT_FALSE(h_.q.HasAvailable());
  EXPECT_FALSE(h_.q.EnableNotification());
  EXPECT_EQ(h_.q.error(), c().error);
  EXPECT_TRUE(h_.UntouchedExceptUsedRing());
  EXPECT_EQ(h_.UsedIdx(), 0);
}

INSTANTIATE_TEST_SUITE_P(Cases, RingErrorTest,
                         ::testing::Combine(::testing::ValuesIn(kRingCases),
                                            Values(Endian::kLittle,
                                                   Endian::kBig)),
                         CaseName);

TEST_P(SplitQueueTest, BrokenQueueStaysBrokenUntilReset) {
  ASSERT_OK(h_.Activate());
  ASSERT_OK_AND_ASSIGN(uint16_t good, h_.drv->AddChain({{kData, 8, false}}));
  h_.drv->Publish(kSize);  // a head out of range
  ASSERT_OK(h_.drv->AddChain({{kData, 8, false}}).status());
  std::optional<DescriptorChain> first = h_.q.Pop();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->head(), good);
  EXPECT_FALSE(h_.q.Pop().has_value());
  ASSERT_TRUE(h_.q.broken());
  EXPECT_EQ(h_.q.error(), QueueError::kHeadOutOfRange);
  // Giving the good chain back does not revive the queue.
  h_.q.Undo();
  EXPECT_FALSE(h_.q.Pop().has_value());
  EXPECT_FALSE(h_.q.HasAvailable());
  EXPECT_FALSE(h_.q.EnableNotification());
  // The chain popped before the error can still be completed.
  h_.q.AddUsed(good, 8);
  EXPECT_EQ(h_.drv->PopUsed()->id, good);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(h_.q.Pop().has_value());
  EXPECT_TRUE(h_.q.broken());

  h_.q.Reset();
  EXPECT_FALSE(h_.q.broken());
  ASSERT_OK(h_.Init(endian()));
  ASSERT_OK(h_.Activate());
  ASSERT_OK_AND_ASSIGN(uint16_t head, h_.drv->AddChain({{kData, 8, false}}));
  std::optional<DescriptorChain> chain = h_.q.Pop();
  ASSERT_TRUE(chain.has_value());
  EXPECT_EQ(chain->head(), head);
}

// ---- Limits that need more memory than the fixture has.

TEST_P(SplitQueueTest, IndirectTableOf65536Entries) {
  // 1 MiB of table in one 2 MiB region.
  Harness h;
  ASSERT_OK(
      h.Init(endian(), {{.guest_base = 0, .size = 2 << 20}},
             {.size = 16, .desc = 0x1000, .avail = 0x2000, .used = 0x3000}));
  ASSERT_OK(h.Activate());
  const uint64_t table = 0x100000;
  for (uint32_t i = 0; i < 65536; ++i) {
    const bool last = i == 65535;
    h.drv->WriteDescAt(table, i, 0x10000 + i, 1, last ? W : R | N,
                       static_cast<uint16_t>(last ? 0 : i + 1));
  }
  h.drv->WriteDesc(0, table, 16 * 65536, I, 0);
  h.drv->Publish(0);
  std::optional<DescriptorChain> chain = h.q.Pop();
  ASSERT_TRUE(chain.has_value());
  Walked w = WalkAll(*chain, *h.mem);
  EXPECT_EQ(w.error, QueueError::kNone);
  EXPECT_EQ(w.count, 65536u);
  // The same table looping back to its start: 65536 entries, then an error.
  h.drv->WriteDescAt(table, 65535, 0x10000, 1, R | N, 0);
  h.drv->Publish(0);
  chain = h.q.Pop();
  ASSERT_TRUE(chain.has_value());
  w = WalkAll(*chain, *h.mem);
  EXPECT_EQ(w.error, QueueError::kChainTooLong);
  EXPECT_EQ(w.count, 65536u);
}

TEST_P(SplitQueueTest, TotalLengthJustBelow2To32) {
  // 5 GiB of guest memory, reserved but never touched beyond the rings.
  Harness h;
  absl::Status s =
      h.Init(endian(), {{.guest_base = 0, .size = 5ull << 30}},
             {.size = 16, .desc = 0x1000, .avail = 0x2000, .used = 0x3000});
  if (!s.ok()) GTEST_SKIP() << "cannot reserve 5 GiB: " << s;
  ASSERT_OK(h.Activate());
  // 0x80000000 + 0x7fffffff = 2^32 - 1: fine.
  h.drv->WriteDesc(0, 0x10000, 0x80000000u, R | N, 1);
  h.drv->WriteDesc(1, 0x90000000ull, 0x7fffffffu, W, 0);
  h.drv->Publish(0);
  std::optional<DescriptorChain> chain = h.q.Pop();
  ASSERT_TRUE(chain.has_value());
  Walked w = WalkAll(*chain, *h.mem);
  EXPECT_EQ(w.error, QueueError::kNone);
  EXPECT_EQ(w.count, 2u);
  // One byte more is 2^32: refused.
  h.drv->WriteDesc(1, 0x90000000ull, 0x80000000u, W, 0);
  h.drv->Publish(0);
  chain = h.q.Pop();
  ASSERT_TRUE(chain.has_value());
  w = WalkAll(*chain, *h.mem);
  EXPECT_EQ(w.error, QueueError::kTotalLengthOverflow);
  EXPECT_EQ(w.count, 1u);
  // A single buffer of 2^32 - 1 bytes is fine.
  h.drv->WriteDesc(2, 0x10000, 0xffffffffu, W, 0);
  h.drv->Publish(2);
  chain = h.q.Pop();
  ASSERT_TRUE(chain.has_value());
  w = WalkAll(*chain, *h.mem);
  EXPECT_EQ(w.error, QueueError::kNone);
}

}  // namespace
}  // namespace vmmkit::virtqueue
