#include "virtqueue/guest_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vmmkit::virtqueue {
namespace {

using ::testing::Each;
using ::testing::ElementsAre;
using ::vmmkit::testing::IsOk;
using ::vmmkit::testing::StatusIs;

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

uint64_t Page() { return static_cast<uint64_t>(sysconf(_SC_PAGESIZE)); }

// GuestMemory over caller-owned buffers, for shapes GuestMemoryMmap cannot
// make (sizes that are not page multiples, regions at the top of the space).
class BufferMemory : public GuestMemory {
 public:
  absl::Status Add(uint64_t guest_base, uint64_t size) {
    buffers_.push_back(std::make_unique<uint8_t[]>(size));
    return AddRegion({.guest_base = guest_base,
                      .size = size,
                      .host = buffers_.back().get()});
  }
  absl::Status AddRaw(const MemoryRegion& region) { return AddRegion(region); }

 private:
  std::vector<std::unique_ptr<uint8_t[]>> buffers_;
};

std::unique_ptr<GuestMemoryMmap> MustCreate(
    const std::vector<GuestMemoryMmap::RegionSpec>& regions,
    GuestMemoryMmap::Options options = {}) {
  absl::StatusOr<std::unique_ptr<GuestMemoryMmap>> mem =
      GuestMemoryMmap::Create(regions, options);
  EXPECT_THAT(mem, IsOk());
  return mem.ok() ? *std::move(mem) : nullptr;
}

// ---- Regions.

TEST(GuestMemoryMmapTest, OneRegion) {
  auto mem = MustCreate({{.guest_base = 0x10000, .size = 4 * Page()}});
  ASSERT_NE(mem, nullptr);
  ASSERT_EQ(mem->regions().size(), 1u);
  EXPECT_EQ(mem->regions()[0].guest_base, 0x10000u);
  EXPECT_EQ(mem->regions()[0].size, 4 * Page());
  EXPECT_NE(mem->regions()[0].host, nullptr);
  EXPECT_EQ(mem->total_size(), 4 * Page());
  EXPECT_EQ(mem->fd(), -1);
  // Fresh anonymous memory reads as zeros.
  std::vector<uint8_t> buf(4 * Page(), 0xff);
  ASSERT_OK(mem->Read(0x10000, absl::MakeSpan(buf)));
  EXPECT_THAT(buf, Each(0));
}

TEST(GuestMemoryMmapTest, SeveralRegionsAreSortedByAddress) {
  const uint64_t p = Page();
  auto mem = MustCreate({{.guest_base = 100 * p, .size = p},
                         {.guest_base = 0, .size = 2 * p},
                         {.guest_base = 10 * p, .size = 3 * p}});
  ASSERT_NE(mem, nullptr);
  ASSERT_EQ(mem->regions().size(), 3u);
  EXPECT_EQ(mem->regions()[0].guest_base, 0u);
  EXPECT_EQ(mem->regions()[1].guest_base, 10 * p);
  EXPECT_EQ(mem->regions()[2].guest_base, 100 * p);
  EXPECT_EQ(mem->total_size(), 6 * p);
  // The holes are not memory.
  EXPECT_FALSE(mem->Contains(2 * p, 1));
  EXPECT_FALSE(mem->Contains(13 * p, 1));
  EXPECT_FALSE(mem->Contains(101 * p, 1));
  EXPECT_TRUE(mem->Contains(10 * p, 3 * p));
  EXPECT_FALSE(mem->Contains(p, 2 * p));  // runs into the hole
}

TEST(GuestMemoryMmapTest, RejectsBadSpecs) {
  const uint64_t p = Page();
  EXPECT_THAT(GuestMemoryMmap::Create({}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(GuestMemoryMmap::Create({{.guest_base = 0, .size = 0}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(GuestMemoryMmap::Create({{.guest_base = 0, .size = p + 1}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(GuestMemoryMmap::Create({{.guest_base = 8, .size = p}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(GuestMemoryMmapTest, RejectsOverlappingRegions) {
  const uint64_t p = Page();
  // Partial overlap, identical, one inside the other, in either order.
  EXPECT_THAT(GuestMemoryMmap::Create({{.guest_base = 0, .size = 2 * p},
                                       {.guest_base = p, .size = 2 * p}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(GuestMemoryMmap::Create({{.guest_base = p, .size = 2 * p},
                                       {.guest_base = 0, .size = 2 * p}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(GuestMemoryMmap::Create(
                  {{.guest_base = 0, .size = p}, {.guest_base = 0, .size = p}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(GuestMemoryMmap::Create({{.guest_base = 0, .size = 8 * p},
                                       {.guest_base = 2 * p, .size = p}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(GuestMemoryMmap::Create({{.guest_base = 2 * p, .size = p},
                                       {.guest_base = 0, .size = 8 * p}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(GuestMemoryMmapTest, RejectsRegionWrappingAround2To64) {
  const uint64_t p = Page();
  EXPECT_THAT(
      GuestMemoryMmap::Create({{.guest_base = kMax - p + 1, .size = 2 * p}}),
      StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(GuestMemoryMmapTest, RegionEndingAt2To64) {
  const uint64_t p = Page();
  const uint64_t base = kMax - p + 1;  // [2^64 - p, 2^64)
  auto mem = MustCreate({{.guest_base = base, .size = p}});
  ASSERT_NE(mem, nullptr);
  EXPECT_TRUE(mem->Contains(base, p));
  EXPECT_TRUE(mem->Contains(kMax, 1));
  EXPECT_TRUE(mem->Contains(kMax, 0));
  EXPECT_FALSE(mem->Contains(kMax, 2));  // wraps to 0
  EXPECT_FALSE(mem->Contains(base, p + 1));
  EXPECT_THAT(mem->Translate(kMax, 2), StatusIs(absl::StatusCode::kOutOfRange));
  ASSERT_OK_AND_ASSIGN(absl::Span<uint8_t> last, mem->Translate(kMax, 1));
  EXPECT_EQ(last.data(), mem->regions()[0].host + p - 1);
  ASSERT_OK(mem->Fill(kMax - 1, 2, 0x77));
  ASSERT_OK_AND_ASSIGN(uint16_t v, mem->LoadAcquire16(kMax - 1));
  EXPECT_EQ(v, 0x7777);
}

TEST(GuestMemoryMmapTest, RejectsOverlapWithRegionEndingAt2To64) {
  const uint64_t p = Page();
  // The second region ends at 2^64: its end does not fit in 64 bits.
  EXPECT_THAT(GuestMemoryMmap::Create(
                  {{.guest_base = kMax - 2 * p + 1, .size = p},
                   {.guest_base = kMax - 4 * p + 1, .size = 4 * p}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(
      GuestMemoryMmap::Create({{.guest_base = kMax - 4 * p + 1, .size = 4 * p},
                               {.guest_base = kMax - 2 * p + 1, .size = p}}),
      StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(
      GuestMemoryMmap::Create({{.guest_base = kMax - p + 1, .size = p},
                               {.guest_base = kMax - p + 1, .size = p}}),
      StatusIs(absl::StatusCode::kInvalidArgument));
  // Adjacent to it is fine.
  EXPECT_THAT(
      GuestMemoryMmap::Create({{.guest_base = kMax - p + 1, .size = p},
                               {.guest_base = kMax - 2 * p + 1, .size = p}}),
      IsOk());
}

TEST(GuestMemoryTest, AddRegionRejectsEmptyOrHostless) {
  BufferMemory mem;
  EXPECT_THAT(mem.Add(0, 0), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(mem.AddRaw({.guest_base = 0, .size = 16, .host = nullptr}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_TRUE(mem.regions().empty());
  EXPECT_EQ(mem.total_size(), 0u);
  // Memory with no region contains nothing, not even an empty range.
  EXPECT_FALSE(mem.Contains(0, 0));
  EXPECT_FALSE(mem.Contains(0, 1));
  EXPECT_EQ(mem.HostPointer(0, 0), nullptr);
  EXPECT_THAT(mem.Translate(0, 1), StatusIs(absl::StatusCode::kOutOfRange));
}

// ---- Boundaries of one region: [0x1000, 0x1100).

class BoundaryTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kBase = 0x1000;
  static constexpr uint64_t kSize = 0x100;
  static constexpr uint64_t kEnd = kBase + kSize;
  void SetUp() override { ASSERT_OK(mem_.Add(kBase, kSize)); }
  uint8_t* host() const { return mem_.regions()[0].host; }
  BufferMemory mem_;
};

TEST_F(BoundaryTest, Contains) {
  EXPECT_TRUE(mem_.Contains(kBase, kSize));
  EXPECT_TRUE(mem_.Contains(kBase, 1));
  EXPECT_TRUE(mem_.Contains(kEnd - 1, 1));  // last byte
  EXPECT_FALSE(mem_.Contains(kEnd, 1));     // one past
  EXPECT_FALSE(mem_.Contains(kEnd - 1, 2));
  EXPECT_FALSE(mem_.Contains(kBase - 1, 1));
  EXPECT_FALSE(mem_.Contains(kBase - 1, 2));
  EXPECT_FALSE(mem_.Contains(kBase, kSize + 1));
  // Length 0: inside or at the end of a region.
  EXPECT_TRUE(mem_.Contains(kBase, 0));
  EXPECT_TRUE(mem_.Contains(kEnd - 1, 0));
  EXPECT_TRUE(mem_.Contains(kEnd, 0));
  EXPECT_FALSE(mem_.Contains(kEnd + 1, 0));
  EXPECT_FALSE(mem_.Contains(kBase - 1, 0));
  // addr + len overflowing 2^64, landing inside the region or past it.
  EXPECT_FALSE(mem_.Contains(kBase, kMax));
  EXPECT_FALSE(mem_.Contains(kBase + 8, kMax - 7));  // end wraps to kBase
  EXPECT_FALSE(mem_.Contains(kEnd - 1, kMax));
  EXPECT_FALSE(mem_.Contains(kMax, 1));
  EXPECT_FALSE(mem_.Contains(kMax, kMax));
  EXPECT_FALSE(mem_.Contains(kMax - 0x10, kBase + 0x20));  // wraps into it
}

TEST_F(BoundaryTest, Translate) {
  ASSERT_OK_AND_ASSIGN(absl::Span<uint8_t> all, mem_.Translate(kBase, kSize));
  EXPECT_EQ(all.data(), host());
  EXPECT_EQ(all.size(), kSize);
  ASSERT_OK_AND_ASSIGN(absl::Span<uint8_t> last, mem_.Translate(kEnd - 1, 1));
  EXPECT_EQ(last.data(), host() + kSize - 1);
  EXPECT_EQ(last.size(), 1u);
  ASSERT_OK_AND_ASSIGN(absl::Span<uint8_t> empty_end, mem_.Translate(kEnd, 0));
  EXPECT_EQ(empty_end.data(), host() + kSize);
  EXPECT_TRUE(empty_end.empty());
  ASSERT_OK_AND_ASSIGN(absl::Span<uint8_t> empty, mem_.Translate(kBase + 3, 0));
  EXPECT_EQ(empty.data(), host() + 3);

  EXPECT_THAT(mem_.Translate(kEnd, 1), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(mem_.Translate(kEnd - 1, 2),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(mem_.Translate(kBase - 1, 1),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(mem_.Translate(kEnd + 1, 0),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(mem_.Translate(kBase + 8, kMax - 7),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(mem_.Translate(kMax, 2), StatusIs(absl::StatusCode::kOutOfRange));
}

TEST_F(BoundaryTest, ReadWriteFill) {
  const uint8_t in[4] = {1, 2, 3, 4};
  ASSERT_OK(mem_.Write(kEnd - 4, in));
  EXPECT_THAT(absl::MakeConstSpan(host() + kSize - 4, 4),
              ElementsAre(1, 2, 3, 4));
  uint8_t out[4] = {};
  ASSERT_OK(mem_.Read(kEnd - 4, absl::MakeSpan(out)));
  EXPECT_THAT(out, ElementsAre(1, 2, 3, 4));
  ASSERT_OK(mem_.Fill(kBase, 2, 0xee));
  EXPECT_EQ(host()[0], 0xee);
  EXPECT_EQ(host()[1], 0xee);
  EXPECT_EQ(host()[2], 0);

  // A failing access touches nothing: not the guest, not the caller's buffer.
  uint8_t untouched[8] = {9, 9, 9, 9, 9, 9, 9, 9};
  EXPECT_THAT(mem_.Read(kEnd - 4, absl::MakeSpan(untouched)),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(untouched, Each(9));
  const uint8_t big[8] = {7, 7, 7, 7, 7, 7, 7, 7};
  EXPECT_THAT(mem_.Write(kEnd - 4, big),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(absl::MakeConstSpan(host() + kSize - 4, 4),
              ElementsAre(1, 2, 3, 4));
  EXPECT_THAT(mem_.Fill(kBase - 1, 2, 0x55),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(host()[0], 0xee);
  EXPECT_THAT(mem_.Fill(kBase + 8, kMax - 7, 0x55),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(host()[8], 0);

  // Zero-length accesses at the end are fine, one past it are not.
  EXPECT_OK(mem_.Write(kEnd, {}));
  EXPECT_OK(mem_.Read(kEnd, {}));
  EXPECT_OK(mem_.Fill(kEnd, 0, 1));
  EXPECT_THAT(mem_.Read(kEnd + 1, {}), StatusIs(absl::StatusCode::kOutOfRange));
}

struct Pair {
  uint32_t a;
  uint16_t b;
  uint16_t c;
};

TEST_F(BoundaryTest, ReadObjWriteObj) {
  ASSERT_OK(mem_.WriteObj(kEnd - sizeof(Pair), Pair{0x01020304, 5, 6}));
  ASSERT_OK_AND_ASSIGN(Pair p, mem_.ReadObj<Pair>(kEnd - sizeof(Pair)));
  EXPECT_EQ(p.a, 0x01020304u);
  EXPECT_EQ(p.b, 5);
  EXPECT_EQ(p.c, 6);
  EXPECT_THAT(mem_.ReadObj<Pair>(kEnd - sizeof(Pair) + 1),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(mem_.WriteObj(kEnd - 1, Pair{}),
              StatusIs(absl::StatusCode::kOutOfRange));
}

TEST_F(BoundaryTest, LoadAcquireStoreRelease16) {
  ASSERT_OK(mem_.StoreRelease16(kEnd - 2, 0x1234));
  ASSERT_OK_AND_ASSIGN(uint16_t v, mem_.LoadAcquire16(kEnd - 2));
  EXPECT_EQ(v, 0x1234);
  uint16_t raw;
  std::memcpy(&raw, host() + kSize - 2, 2);
  EXPECT_EQ(raw, 0x1234);  // host order, unconverted
  ASSERT_OK(mem_.StoreRelease16(kBase, 0xbeef));
  ASSERT_OK_AND_ASSIGN(uint16_t first, mem_.LoadAcquire16(kBase));
  EXPECT_EQ(first, 0xbeef);

  // Alignment first: an odd address is kInvalidArgument even in memory.
  EXPECT_THAT(mem_.LoadAcquire16(kBase + 1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(mem_.StoreRelease16(kBase + 1, 1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(mem_.LoadAcquire16(kEnd - 1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(mem_.LoadAcquire16(kMax),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // Then bounds.
  EXPECT_THAT(mem_.LoadAcquire16(kEnd),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(mem_.StoreRelease16(kEnd, 1),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(mem_.LoadAcquire16(kBase - 2),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(mem_.StoreRelease16(kMax - 1, 1),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(host()[kSize - 1], 0x12);  // the failed stores wrote nothing
}

// HostPointer returns nullptr or a pointer p with [p, p + len) inside the
// region's host memory, for every (addr, len) around the edges.
TEST(GuestMemoryTest, HostPointerNeverLeavesTheRegion) {
  BufferMemory mem;
  ASSERT_OK(mem.Add(0x1000, 0x100));
  ASSERT_OK(mem.Add(0x1100, 0x80));       // adjacent
  ASSERT_OK(mem.Add(0x4000, 0x40));       // after a hole
  ASSERT_OK(mem.Add(kMax - 0x3f, 0x40));  // at the top
  std::vector<uint64_t> addrs,
      lens = {0,    1,    2,     0x3f,  0x40,  0x41,          0x7f,     0x80,
              0x81, 0xff, 0x100, 0x101, 0x180, kMax - 0x1000, kMax - 1, kMax};
  for (const MemoryRegion& r : mem.regions()) {
    for (uint64_t d : {uint64_t{0}, uint64_t{1}, uint64_t{2}}) {
      addrs.push_back(r.guest_base + d);
      addrs.push_back(r.guest_base - d);
      addrs.push_back(r.guest_base + r.size - d);
      addrs.push_back(r.guest_base + r.size + d);
    }
  }
  addrs.push_back(0);
  int hits = 0;
  for (uint64_t addr : addrs) {
    for (uint64_t len : lens) {
      uint8_t* p = mem.HostPointer(addr, len);
      if (p == nullptr) {
        EXPECT_FALSE(mem.Translate(addr, len).ok() && len > 0)
            << addr << "+" << len;
        continue;
      }
      ++hits;
      bool inside = false;
      for (const MemoryRegion& r : mem.regions()) {
        if (p >= r.host && p <= r.host + r.size &&
            len <= static_cast<uint64_t>(r.host + r.size - p)) {
          inside = true;
          EXPECT_EQ(p - r.host, static_cast<int64_t>(addr - r.guest_base));
        }
      }
      EXPECT_TRUE(inside) << std::hex << addr << "+" << len;
      EXPECT_TRUE(mem.Contains(addr, len)) << std::hex << addr << "+" << len;
    }
  }
  EXPECT_GT(hits, 20);
}

// ---- Adjacent regions: [0, p) and [p, 3p) in two separate mappings.

class AdjacentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    p_ = Page();
    mem_ = MustCreate(
        {{.guest_base = 0, .size = p_}, {.guest_base = p_, .size = 2 * p_}});
    ASSERT_NE(mem_, nullptr);
    ASSERT_EQ(mem_->regions().size(), 2u);
  }
  uint64_t p_;
  std::unique_ptr<GuestMemoryMmap> mem_;
};

TEST_F(AdjacentTest, ContainsAcrossTheBoundary) {
  EXPECT_TRUE(mem_->Contains(0, 3 * p_));
  EXPECT_TRUE(mem_->Contains(p_ - 1, 2));
  EXPECT_TRUE(mem_->Contains(p_, 0));
  EXPECT_TRUE(mem_->Contains(3 * p_, 0));
  EXPECT_FALSE(mem_->Contains(0, 3 * p_ + 1));
  EXPECT_FALSE(mem_->Contains(p_ - 1, kMax));
}

TEST_F(AdjacentTest, TranslateStopsAtTheBoundary) {
  ASSERT_OK_AND_ASSIGN(absl::Span<uint8_t> a, mem_->Translate(0, p_));
  EXPECT_EQ(a.data(), mem_->regions()[0].host);
  ASSERT_OK_AND_ASSIGN(absl::Span<uint8_t> b, mem_->Translate(p_, 2 * p_));
  EXPECT_EQ(b.data(), mem_->regions()[1].host);
  // Inside memory but across two mappings: kInvalidArgument, not kOutOfRange.
  EXPECT_THAT(mem_->Translate(p_ - 1, 2),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(mem_->Translate(0, 3 * p_),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(mem_->Translate(p_ - 1, 2 * p_ + 2),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(mem_->HostPointer(p_ - 1, 2), nullptr);
}

TEST_F(AdjacentTest, ReadWriteFillAcrossTheBoundary) {
  const uint8_t in[6] = {1, 2, 3, 4, 5, 6};
  ASSERT_OK(mem_->Write(p_ - 3, in));
  const uint8_t* a = mem_->regions()[0].host;
  const uint8_t* b = mem_->regions()[1].host;
  EXPECT_THAT(absl::MakeConstSpan(a + p_ - 3, 3), ElementsAre(1, 2, 3));
  EXPECT_THAT(absl::MakeConstSpan(b, 3), ElementsAre(4, 5, 6));
  uint8_t out[6] = {};
  ASSERT_OK(mem_->Read(p_ - 3, absl::MakeSpan(out)));
  EXPECT_THAT(out, ElementsAre(1, 2, 3, 4, 5, 6));

  ASSERT_OK(mem_->Fill(p_ - 1, 2, 0xab));
  EXPECT_EQ(a[p_ - 1], 0xab);
  EXPECT_EQ(b[0], 0xab);
  EXPECT_EQ(b[1], 5);

  // The whole of memory in one go.
  ASSERT_OK(mem_->Fill(0, 3 * p_, 0x11));
  std::vector<uint8_t> all(3 * p_);
  ASSERT_OK(mem_->Read(0, absl::MakeSpan(all)));
  EXPECT_THAT(all, Each(0x11));
  EXPECT_THAT(mem_->Fill(0, 3 * p_ + 1, 0x22),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(a[0], 0x11);
}

TEST_F(AdjacentTest, ForEachSpanSplitsAtTheBoundary) {
  std::vector<absl::Span<uint8_t>> pieces;
  auto collect = [&](absl::Span<uint8_t> s) { pieces.push_back(s); };
  ASSERT_OK(mem_->ForEachSpan(p_ - 3, 6, collect));
  ASSERT_EQ(pieces.size(), 2u);
  EXPECT_EQ(pieces[0].data(), mem_->regions()[0].host + p_ - 3);
  EXPECT_EQ(pieces[0].size(), 3u);
  EXPECT_EQ(pieces[1].data(), mem_->regions()[1].host);
  EXPECT_EQ(pieces[1].size(), 3u);

  pieces.clear();
  ASSERT_OK(mem_->ForEachSpan(p_, 2 * p_, collect));
  ASSERT_EQ(pieces.size(), 1u);
  EXPECT_EQ(pieces[0].size(), 2 * p_);

  // Nothing at all is visited for a range that is not all memory, and an
  // empty range visits nothing.
  pieces.clear();
  EXPECT_THAT(mem_->ForEachSpan(p_ - 3, 2 * p_ + 4, collect),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(mem_->ForEachSpan(p_, kMax, collect),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_OK(mem_->ForEachSpan(3 * p_, 0, collect));
  EXPECT_TRUE(pieces.empty());
}

// ---- Shared (memfd) vs private mappings.

TEST(GuestMemoryMmapTest, SharedMemoryIsBackedByTheMemfd) {
  const uint64_t p = Page();
  auto mem = MustCreate(
      {{.guest_base = 0, .size = p}, {.guest_base = 16 * p, .size = 2 * p}},
      {.shared = true});
  ASSERT_NE(mem, nullptr);
  ASSERT_GE(mem->fd(), 0);
  // A guest write shows in the file at the region's offset (the sizes of the
  // regions before it).
  const uint8_t in[3] = {0xa, 0xb, 0xc};
  ASSERT_OK(mem->Write(16 * p + 5, in));
  uint8_t out[3] = {};
  ASSERT_EQ(pread(mem->fd(), out, 3, static_cast<off_t>(p + 5)), 3);
  EXPECT_THAT(out, ElementsAre(0xa, 0xb, 0xc));
  // And a write to the file shows in the guest.
  const uint8_t d = 0x5d;
  ASSERT_EQ(pwrite(mem->fd(), &d, 1, 7), 1);
  ASSERT_OK_AND_ASSIGN(uint8_t got, mem->ReadObj<uint8_t>(7));
  EXPECT_EQ(got, 0x5d);
  // A second mapping of the fd sees the same bytes (what a vhost-user peer
  // or KVM would see).
  void* view = mmap(nullptr, 3 * p, PROT_READ, MAP_SHARED, mem->fd(), 0);
  ASSERT_NE(view, MAP_FAILED);
  EXPECT_EQ(static_cast<uint8_t*>(view)[p + 6], 0xb);
  munmap(view, 3 * p);
  EXPECT_EQ(lseek(mem->fd(), 0, SEEK_END), static_cast<off_t>(3 * p));
}

TEST(GuestMemoryMmapTest, PrivateMemoryHasNoFd) {
  const uint64_t p = Page();
  auto mem = MustCreate({{.guest_base = 0, .size = p}}, {.shared = false});
  ASSERT_NE(mem, nullptr);
  EXPECT_EQ(mem->fd(), -1);
}

// ---- Guard pages.

// The permissions of the mapping that holds `addr`, from /proc/self/maps
// ("rw-p", "---p", ...), or "" if nothing is mapped there.
std::string Permissions(const void* addr) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  const auto a = reinterpret_cast<uintptr_t>(addr);
  while (std::getline(maps, line)) {
    unsigned long lo, hi;
    char perms[8] = {};
    if (std::sscanf(line.c_str(), "%lx-%lx %7s", &lo, &hi, perms) != 3)
      continue;
    if (a >= lo && a < hi) return perms;
  }
  return "";
}

TEST(GuestMemoryMmapTest, RegionsAreSurroundedByGuardPages) {
  const uint64_t p = Page();
  for (bool shared : {false, true}) {
    auto mem = MustCreate(
        {{.guest_base = 0, .size = 2 * p}, {.guest_base = 2 * p, .size = p}},
        {.shared = shared});
    ASSERT_NE(mem, nullptr);
    for (const MemoryRegion& r : mem->regions()) {
      const char* want = shared ? "rw-s" : "rw-p";
      EXPECT_EQ(Permissions(r.host), want);
      EXPECT_EQ(Permissions(r.host + r.size - 1), want);
      EXPECT_EQ(Permissions(r.host - 1), "---p") << "no guard page before";
      EXPECT_EQ(Permissions(r.host - p), "---p");
      EXPECT_EQ(Permissions(r.host + r.size), "---p") << "no guard page after";
      EXPECT_EQ(Permissions(r.host + r.size + p - 1), "---p");
      // mincore(): the guard pages are mapped (not ENOMEM) and never resident.
      unsigned char vec = 1;
      ASSERT_EQ(mincore(r.host - p, p, &vec), 0);
      EXPECT_EQ(vec & 1, 0);
      ASSERT_EQ(mincore(r.host + r.size, p, &vec), 0);
      EXPECT_EQ(vec & 1, 0);
    }
  }
}

TEST(GuestMemoryMmapDeathTest, TouchingAGuardPageFaults) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const uint64_t p = Page();
  auto mem = MustCreate({{.guest_base = 0, .size = p}});
  ASSERT_NE(mem, nullptr);
  volatile uint8_t* host = mem->regions()[0].host;
  host[0] = 1;
  host[p - 1] = 1;
  EXPECT_DEATH(host[p] = 1, "");
  EXPECT_DEATH(host[-1] = 1, "");
}

TEST(GuestMemoryMmapTest, UnmapsOnDestruction) {
  const uint64_t p = Page();
  uint8_t* host;
  {
    auto mem = MustCreate({{.guest_base = 0, .size = p}});
    ASSERT_NE(mem, nullptr);
    host = mem->regions()[0].host;
    EXPECT_EQ(Permissions(host), "rw-p");
  }
  unsigned char vec[3];
  EXPECT_EQ(mincore(host - p, 3 * p, vec), -1);  // ENOMEM: nothing mapped
  EXPECT_EQ(errno, ENOMEM);
}

}  // namespace
}  // namespace vmmkit::virtqueue
