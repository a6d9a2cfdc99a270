#include "virtio-device/chain_io.h"

#include <cstdint>
#include <memory>
#include <numeric>
#include <optional>
#include <vector>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "virtqueue/guest_memory.h"
#include "virtqueue/split_queue.h"
#include "virtqueue/testing/driver_queue.h"

namespace vmmkit::virtio {
namespace {

using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using virtqueue::GuestMemory;
using virtqueue::GuestMemoryMmap;
using virtqueue::QueueError;
using virtqueue::QueueErrorName;
using virtqueue::SplitQueue;
using virtqueue::testing::DriverQueue;
using ::vmmkit::testing::IsOk;
using ::vmmkit::testing::StatusIs;
using Buffer = DriverQueue::Buffer;

constexpr uint16_t kQueueSize = 32;
constexpr uint64_t kPage = 4096;

std::vector<uint8_t> Iota(size_t n, uint8_t first = 1) {
  std::vector<uint8_t> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

class ChainIoTest : public ::testing::Test {
 protected:
  // One region of 1 MiB unless a test calls Init() with its own layout.
  void SetUp() override { Init({{.guest_base = 0, .size = 1 << 20}}); }

  void Init(const std::vector<GuestMemoryMmap::RegionSpec>& regions) {
    queue_.reset();
    driver_.reset();
    auto mem = GuestMemoryMmap::Create(regions);
    ASSERT_OK(mem.status());
    memory_ = *std::move(mem);
    driver_ = std::make_unique<DriverQueue>(
        *memory_, DriverQueue::Layout{.size = kQueueSize,
                                      .desc = 0x1000,
                                      .avail = 0x2000,
                                      .used = 0x3000});
    queue_ = std::make_unique<SplitQueue>(kQueueSize);
    driver_->ConfigureDevice(*queue_);
    ASSERT_OK(queue_->Activate(*memory_));
  }

  // Pops the next chain and collects it.
  absl::StatusOr<Request> Next() {
    std::optional<virtqueue::DescriptorChain> chain = queue_->Pop();
    if (!chain.has_value()) return absl::NotFoundError("no chain");
    return Request::Collect(*chain, *memory_);
  }

  // Publishes `buffers` as one chain and collects it.
  absl::StatusOr<Request> Chain(std::initializer_list<Buffer> buffers) {
    absl::StatusOr<uint16_t> head = driver_->AddChain(buffers);
    if (!head.ok()) return head.status();
    return Next();
  }

  void Put(uint64_t addr, const std::vector<uint8_t>& bytes) {
    ASSERT_OK(memory_->Write(addr, bytes));
  }
  std::vector<uint8_t> Get(uint64_t addr, size_t n) {
    std::vector<uint8_t> out(n);
    EXPECT_OK(memory_->Read(addr, absl::MakeSpan(out)));
    return out;
  }

  std::unique_ptr<GuestMemoryMmap> memory_;
  std::unique_ptr<DriverQueue> driver_;
  std::unique_ptr<SplitQueue> queue_;
};

// ---- Request::Collect.

TEST_F(ChainIoTest, CollectDirectChainSplitsReadableAndWritable) {
  absl::StatusOr<uint16_t> head = driver_->AddChain({{0x10000, 16, false},
                                                     {0x11000, 100, false},
                                                     {0x12000, 512, true},
                                                     {0x13000, 1, true}});
  ASSERT_OK(head.status());
  ASSERT_OK_AND_ASSIGN(Request req, Next());
  EXPECT_EQ(req.head(), *head);
  EXPECT_EQ(req.num_readable(), 2u);
  EXPECT_EQ(req.num_writable(), 2u);
  EXPECT_EQ(req.readable_bytes(), 116u);
  EXPECT_EQ(req.writable_bytes(), 513u);
  EXPECT_EQ(req.reader().remaining(), 116u);
  EXPECT_EQ(req.writer().remaining(), 513u);
  EXPECT_EQ(req.writer().written(), 0u);
}

TEST_F(ChainIoTest, CollectReadableOnlyAndWritableOnly) {
  {
    ASSERT_OK_AND_ASSIGN(Request req, Chain({{0x10000, 8, false}}));
    EXPECT_EQ(req.num_readable(), 1u);
    EXPECT_EQ(req.num_writable(), 0u);
    EXPECT_EQ(req.writable_bytes(), 0u);
    EXPECT_THAT(req.writer().Write(std::vector<uint8_t>{1}),
                StatusIs(absl::StatusCode::kOutOfRange));
  }
  {
    ASSERT_OK_AND_ASSIGN(Request req,
                         Chain({{0x10000, 8, true}, {0x11000, 8, true}}));
    EXPECT_EQ(req.num_readable(), 0u);
    EXPECT_EQ(req.num_writable(), 2u);
    EXPECT_EQ(req.readable_bytes(), 0u);
    EXPECT_EQ(req.writable_bytes(), 16u);
    EXPECT_THAT(req.reader().ReadObj<uint8_t>(),
                StatusIs(absl::StatusCode::kOutOfRange));
  }
}

TEST_F(ChainIoTest, CollectIndirectChain) {
  const uint64_t a = 0x20000, b = 0x21000, c = 0x22000;
  Put(a, Iota(12));
  const Buffer bufs[] = {{a, 12, false}, {b, 4, false}, {c, 64, true}};
  Put(b, {0xA, 0xB, 0xC, 0xD});
  ASSERT_OK_AND_ASSIGN(uint16_t head, driver_->AddIndirectChain(0x30000, bufs));
  ASSERT_OK_AND_ASSIGN(Request req, Next());
  EXPECT_EQ(req.head(), head);
  EXPECT_EQ(req.num_readable(), 2u);
  EXPECT_EQ(req.num_writable(), 1u);
  EXPECT_EQ(req.readable_bytes(), 16u);
  EXPECT_EQ(req.writable_bytes(), 64u);
  std::vector<uint8_t> all(16);
  ASSERT_OK(req.reader().Read(absl::MakeSpan(all)));
  EXPECT_THAT(all, ElementsAre(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0xA, 0xB,
                               0xC, 0xD));
  ASSERT_OK(req.writer().WriteObj(uint32_t{0x01020304}));
  EXPECT_THAT(Get(c, 4), ElementsAre(4, 3, 2, 1));
  EXPECT_EQ(req.writer().written(), 4u);
}

TEST_F(ChainIoTest, CollectLongChainBeyondInlineCapacity) {
  // 20 descriptors: more than the 16 kept inline.
  std::vector<Buffer> bufs;
  for (int i = 0; i < 10; ++i) {
    const uint64_t addr = 0x40000 + i * 0x100;
    Put(addr, {static_cast<uint8_t>(i), static_cast<uint8_t>(i + 100)});
    bufs.push_back({addr, 2, false});
  }
  for (int i = 0; i < 10; ++i) bufs.push_back({0x50000 + i * 0x100u, 3, true});
  ASSERT_OK(driver_->AddChain(bufs).status());
  ASSERT_OK_AND_ASSIGN(Request req, Next());
  EXPECT_EQ(req.num_readable(), 10u);
  EXPECT_EQ(req.num_writable(), 10u);
  std::vector<uint8_t> got(20);
  ASSERT_OK(req.reader().Read(absl::MakeSpan(got)));
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(got[2 * i], i);
    EXPECT_EQ(got[2 * i + 1], i + 100);
  }
  ASSERT_OK(req.writer().Write(Iota(30)));
  for (int i = 0; i < 10; ++i) {
    EXPECT_THAT(Get(0x50000 + i * 0x100u, 3),
                ElementsAre(3 * i + 1, 3 * i + 2, 3 * i + 3));
  }
  EXPECT_EQ(req.writer().written(), 30u);
}

// A malformed chain yields the chain's own error, exactly.
TEST_F(ChainIoTest, CollectReturnsTheChainError) {
  // next index beyond the queue.
  driver_->WriteDesc(0, 0x10000, 8, virtqueue::kDescFNext, kQueueSize + 3);
  driver_->Publish(0);
  EXPECT_THAT(Next(), StatusIs(absl::StatusCode::kOutOfRange,
                               QueueErrorName(QueueError::kNextOutOfRange)));

  // A readable descriptor after a writable one.
  driver_->WriteDesc(1, 0x10000, 8,
                     virtqueue::kDescFWrite | virtqueue::kDescFNext, 2);
  driver_->WriteDesc(2, 0x11000, 8, 0, 0);
  driver_->Publish(1);
  EXPECT_THAT(Next(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       QueueErrorName(QueueError::kReadableAfterWritable)));

  // A buffer past the end of guest memory, after a good one.
  driver_->WriteDesc(3, 0x10000, 8, virtqueue::kDescFNext, 4);
  driver_->WriteDesc(4, (1 << 20) - 4, 8, virtqueue::kDescFWrite, 0);
  driver_->Publish(3);
  EXPECT_THAT(Next(), StatusIs(absl::StatusCode::kOutOfRange,
                               QueueErrorName(QueueError::kBufferOutOfMemory)));

  // A loop.
  driver_->WriteDesc(5, 0x10000, 8, virtqueue::kDescFNext, 6);
  driver_->WriteDesc(6, 0x10000, 8, virtqueue::kDescFNext, 5);
  driver_->Publish(5);
  EXPECT_THAT(Next(), StatusIs(absl::StatusCode::kInvalidArgument,
                               QueueErrorName(QueueError::kChainTooLong)));

  // An indirect table whose length is not a multiple of 16.
  driver_->WriteDesc(7, 0x30000, 24, virtqueue::kDescFIndirect, 0);
  driver_->Publish(7);
  EXPECT_THAT(Next(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       QueueErrorName(QueueError::kIndirectTableLength)));

  // The queue itself is fine: a good chain after the bad ones is served.
  ASSERT_OK_AND_ASSIGN(Request req, Chain({{0x10000, 8, false}}));
  EXPECT_EQ(req.readable_bytes(), 8u);
}

TEST_F(ChainIoTest, CollectIndirectNotNegotiated) {
  queue_->Reset();
  driver_->ConfigureDevice(*queue_);
  queue_->set_indirect_allowed(false);
  ASSERT_OK(queue_->Activate(*memory_));
  const Buffer bufs[] = {{0x20000, 8, false}};
  ASSERT_OK(driver_->AddIndirectChain(0x30000, bufs).status());
  EXPECT_THAT(Next(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       QueueErrorName(QueueError::kIndirectNotNegotiated)));
}

// ---- ChainReader.

TEST_F(ChainIoTest, ReaderCrossesDescriptorsAndSkipsEmptyOnes) {
  // Lengths 3, 0, 5, 0, 0, 4: twelve bytes 1..12 in order.
  const std::vector<uint8_t> bytes = Iota(12);
  Put(0x10000, {1, 2, 3});
  Put(0x11000, {4, 5, 6, 7, 8});
  Put(0x12000, {9, 10, 11, 12});
  ASSERT_OK_AND_ASSIGN(Request req, Chain({{0x10000, 3, false},
                                           {0x18000, 0, false},
                                           {0x11000, 5, false},
                                           {0x18000, 0, false},
                                           {0x18000, 0, false},
                                           {0x12000, 4, false},
                                           {0x13000, 1, true}}));
  ChainReader& r = req.reader();
  EXPECT_EQ(r.remaining(), 12u);
  std::vector<uint8_t> two(2);
  ASSERT_OK(r.Read(absl::MakeSpan(two)));
  EXPECT_THAT(two, ElementsAre(1, 2));
  // Six bytes: the last of the first buffer, over the empty one, all of the
  // third.
  std::vector<uint8_t> six(6);
  ASSERT_OK(r.Read(absl::MakeSpan(six)));
  EXPECT_THAT(six, ElementsAre(3, 4, 5, 6, 7, 8));
  EXPECT_EQ(r.remaining(), 4u);
  // Over two empty descriptors.
  ASSERT_OK_AND_ASSIGN(uint8_t b, r.ReadObj<uint8_t>());
  EXPECT_EQ(b, 9);
  ASSERT_OK(r.Skip(1));
  ASSERT_OK_AND_ASSIGN(uint16_t last, r.ReadObj<uint16_t>());
  EXPECT_EQ(last, 11 | 12 << 8);
  EXPECT_EQ(r.remaining(), 0u);
  // Zero bytes can always be read; one more cannot.
  EXPECT_OK(r.Read({}));
  EXPECT_OK(r.Skip(0));
  EXPECT_THAT(r.ReadObj<uint8_t>(), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(r.Skip(1), StatusIs(absl::StatusCode::kOutOfRange));
}

TEST_F(ChainIoTest, ReaderLeadingAndTrailingEmptyDescriptors) {
  Put(0x11000, {7, 8, 9});
  ASSERT_OK_AND_ASSIGN(Request req, Chain({{0x10000, 0, false},
                                           {0x10000, 0, false},
                                           {0x11000, 3, false},
                                           {0x10000, 0, false}}));
  EXPECT_EQ(req.num_readable(), 4u);
  std::vector<uint8_t> three(3);
  ASSERT_OK(req.reader().Read(absl::MakeSpan(three)));
  EXPECT_THAT(three, ElementsAre(7, 8, 9));
  EXPECT_THAT(req.reader().Skip(1), StatusIs(absl::StatusCode::kOutOfRange));
}

TEST_F(ChainIoTest, ReaderReadObjAcrossBoundaries) {
  struct Header {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
  };
  static_assert(sizeof(Header) == 16);
  Header h{.type = 0x11223344, .reserved = 0, .sector = 0x0102030405060708};
  const uint8_t* raw = reinterpret_cast<const uint8_t*>(&h);
  // Split at odd places: 3 + 7 + 6.
  Put(0x10000, std::vector<uint8_t>(raw, raw + 3));
  Put(0x11001, std::vector<uint8_t>(raw + 3, raw + 10));
  Put(0x12003, std::vector<uint8_t>(raw + 10, raw + 16));
  ASSERT_OK_AND_ASSIGN(
      Request req,
      Chain({{0x10000, 3, false}, {0x11001, 7, false}, {0x12003, 6, false}}));
  ASSERT_OK_AND_ASSIGN(Header got, req.reader().ReadObj<Header>());
  EXPECT_EQ(got.type, h.type);
  EXPECT_EQ(got.sector, h.sector);
  EXPECT_EQ(req.reader().remaining(), 0u);
}

TEST_F(ChainIoTest, ReaderReadingTooMuchConsumesNothing) {
  Put(0x10000, {1, 2, 3, 4});
  Put(0x11000, {5, 6});
  ASSERT_OK_AND_ASSIGN(Request req,
                       Chain({{0x10000, 4, false}, {0x11000, 2, false}}));
  ChainReader& r = req.reader();
  ASSERT_OK(r.Skip(1));
  std::vector<uint8_t> big(6, 0xEE);
  EXPECT_THAT(r.Read(absl::MakeSpan(big)),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(big, Each(0xEE));  // nothing copied
  EXPECT_THAT(r.ReadObj<uint64_t>(), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(r.Skip(6), StatusIs(absl::StatusCode::kOutOfRange));
  int calls = 0;
  EXPECT_THAT(r.ForEachSpan(6, [&](absl::Span<uint8_t>) { ++calls; }),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(r.remaining(), 5u);
  // Everything is still there.
  std::vector<uint8_t> rest(5);
  ASSERT_OK(r.Read(absl::MakeSpan(rest)));
  EXPECT_THAT(rest, ElementsAre(2, 3, 4, 5, 6));
}

TEST_F(ChainIoTest, ReaderForEachSpanGivesOnePiecePerDescriptor) {
  Put(0x10000, Iota(8));
  Put(0x11000, Iota(8, 9));
  ASSERT_OK_AND_ASSIGN(Request req,
                       Chain({{0x10000, 8, false}, {0x11000, 8, false}}));
  std::vector<size_t> sizes;
  std::vector<uint8_t> seen;
  ASSERT_OK(req.reader().ForEachSpan(12, [&](absl::Span<uint8_t> piece) {
    sizes.push_back(piece.size());
    seen.insert(seen.end(), piece.begin(), piece.end());
  }));
  EXPECT_THAT(sizes, ElementsAre(8, 4));
  EXPECT_EQ(seen, Iota(12));
  EXPECT_EQ(req.reader().remaining(), 4u);
}

// ---- ChainWriter.

TEST_F(ChainIoTest, WriterCrossesDescriptors) {
  Put(0x10000, std::vector<uint8_t>(16, 0xEE));
  Put(0x11000, std::vector<uint8_t>(16, 0xEE));
  Put(0x12000, std::vector<uint8_t>(16, 0xEE));
  ASSERT_OK_AND_ASSIGN(Request req, Chain({{0x10000, 3, true},
                                           {0x18000, 0, true},
                                           {0x11000, 5, true},
                                           {0x12000, 4, true}}));
  ChainWriter& w = req.writer();
  EXPECT_EQ(w.remaining(), 12u);
  ASSERT_OK(w.Write(std::vector<uint8_t>{1, 2}));
  EXPECT_EQ(w.written(), 2u);
  ASSERT_OK(w.Write(std::vector<uint8_t>{3, 4, 5, 6, 7}));
  EXPECT_EQ(w.written(), 7u);
  ASSERT_OK(w.WriteObj(uint32_t{0x0B0A0908}));
  EXPECT_EQ(w.written(), 11u);
  EXPECT_EQ(w.remaining(), 1u);
  EXPECT_THAT(Get(0x10000, 4), ElementsAre(1, 2, 3, 0xEE));
  EXPECT_THAT(Get(0x11000, 6), ElementsAre(4, 5, 6, 7, 8, 0xEE));
  EXPECT_THAT(Get(0x12000, 5), ElementsAre(9, 10, 11, 0xEE, 0xEE));
}

TEST_F(ChainIoTest, WriterWritingTooMuchWritesNothing) {
  Put(0x10000, std::vector<uint8_t>(8, 0xEE));
  Put(0x11000, std::vector<uint8_t>(8, 0xEE));
  ASSERT_OK_AND_ASSIGN(Request req,
                       Chain({{0x10000, 4, true}, {0x11000, 4, true}}));
  ChainWriter& w = req.writer();
  ASSERT_OK(w.Write(std::vector<uint8_t>{1}));
  EXPECT_THAT(w.Write(Iota(8)), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(w.WriteObj(uint64_t{0}), StatusIs(absl::StatusCode::kOutOfRange));
  int calls = 0;
  EXPECT_THAT(w.FillSpans(8,
                          [&](absl::Span<uint8_t> p) {
                            ++calls;
                            return p.size();
                          }),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(w.written(), 1u);
  EXPECT_EQ(w.remaining(), 7u);
  EXPECT_THAT(Get(0x10000, 8),
              ElementsAre(1, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE));
  EXPECT_THAT(Get(0x11000, 8), Each(0xEE));
  // Exactly what remains fits.
  ASSERT_OK(w.Write(Iota(7, 2)));
  EXPECT_EQ(w.written(), 8u);
  EXPECT_EQ(w.remaining(), 0u);
  EXPECT_OK(w.Write({}));
}

TEST_F(ChainIoTest, WriterFillSpansFull) {
  ASSERT_OK_AND_ASSIGN(Request req,
                       Chain({{0x10000, 6, true}, {0x11000, 10, true}}));
  ChainWriter& w = req.writer();
  std::vector<size_t> sizes;
  uint8_t next = 1;
  ASSERT_OK_AND_ASSIGN(uint64_t filled,
                       w.FillSpans(12, [&](absl::Span<uint8_t> p) {
                         sizes.push_back(p.size());
                         for (uint8_t& b : p) b = next++;
                         return p.size();
                       }));
  EXPECT_EQ(filled, 12u);
  EXPECT_THAT(sizes, ElementsAre(6, 6));
  EXPECT_EQ(w.written(), 12u);
  EXPECT_EQ(w.remaining(), 4u);
  EXPECT_THAT(Get(0x10000, 6), ElementsAre(1, 2, 3, 4, 5, 6));
  EXPECT_THAT(Get(0x11000, 6), ElementsAre(7, 8, 9, 10, 11, 12));
}

TEST_F(ChainIoTest, WriterFillSpansStopsAtAShortPiece) {
  Put(0x11000, std::vector<uint8_t>(10, 0xEE));
  ASSERT_OK_AND_ASSIGN(
      Request req,
      Chain({{0x10000, 6, true}, {0x11000, 10, true}, {0x12000, 10, true}}));
  ChainWriter& w = req.writer();
  // The source runs dry after 9 bytes (a short read from a file or a TAP):
  // the first piece is filled, the second only in part, the third never
  // offered.
  int calls = 0;
  uint64_t budget = 9;
  ASSERT_OK_AND_ASSIGN(
      uint64_t filled, w.FillSpans(20, [&](absl::Span<uint8_t> p) {
        ++calls;
        const uint64_t k = std::min<uint64_t>(budget, p.size());
        for (uint64_t i = 0; i < k; ++i) p[i] = 0x40 + i;
        budget -= k;
        return k;
      }));
  EXPECT_EQ(filled, 9u);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(w.written(), 9u);
  EXPECT_EQ(w.remaining(), 17u);
  EXPECT_THAT(Get(0x11000, 4), ElementsAre(0x40, 0x41, 0x42, 0xEE));
  // The next write continues right after the filled bytes.
  ASSERT_OK(w.Write(std::vector<uint8_t>{0x99}));
  EXPECT_THAT(Get(0x11000, 5), ElementsAre(0x40, 0x41, 0x42, 0x99, 0xEE));
  EXPECT_EQ(w.written(), 10u);
  // A source with nothing at all fills nothing.
  ASSERT_OK_AND_ASSIGN(
      uint64_t none,
      w.FillSpans(4, [](absl::Span<uint8_t>) -> uint64_t { return 0; }));
  EXPECT_EQ(none, 0u);
  EXPECT_EQ(w.written(), 10u);
  EXPECT_EQ(w.remaining(), 16u);
}

TEST_F(ChainIoTest, WriterFillSpansOverEmptyDescriptors) {
  ASSERT_OK_AND_ASSIGN(Request req, Chain({{0x10000, 0, true},
                                           {0x11000, 2, true},
                                           {0x10000, 0, true},
                                           {0x12000, 2, true}}));
  std::vector<size_t> sizes;
  ASSERT_OK_AND_ASSIGN(uint64_t filled,
                       req.writer().FillSpans(4, [&](absl::Span<uint8_t> p) {
                         sizes.push_back(p.size());
                         for (uint8_t& b : p) b = 0x5A;
                         return p.size();
                       }));
  EXPECT_EQ(filled, 4u);
  for (size_t s : sizes) EXPECT_GT(s, 0u);
  EXPECT_THAT(Get(0x11000, 2), ElementsAre(0x5A, 0x5A));
  EXPECT_THAT(Get(0x12000, 2), ElementsAre(0x5A, 0x5A));
}

// ---- SplitTail: the status byte at the end of a block request.

TEST_F(ChainIoTest, SplitTailInsideOneDescriptor) {
  ASSERT_OK_AND_ASSIGN(Request req,
                       Chain({{0x10000, 8, true}, {0x11000, 16, true}}));
  ASSERT_OK_AND_ASSIGN(ChainWriter tail, req.writer().SplitTail(1));
  EXPECT_EQ(tail.remaining(), 1u);
  EXPECT_EQ(req.writer().remaining(), 23u);
  ASSERT_OK(tail.WriteObj(uint8_t{0x77}));
  EXPECT_EQ(tail.written(), 1u);
  EXPECT_THAT(Get(0x11000 + 15, 1), ElementsAre(0x77));
  // The body ends before the tail.
  ASSERT_OK(req.writer().Write(std::vector<uint8_t>(23, 0x11)));
  EXPECT_THAT(req.writer().Write(std::vector<uint8_t>{1}),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(req.writer().written(), 23u);
  EXPECT_THAT(Get(0x11000 + 14, 2), ElementsAre(0x11, 0x77));
}

TEST_F(ChainIoTest, SplitTailExactlyAWholeDescriptor) {
  ASSERT_OK_AND_ASSIGN(
      Request req,
      Chain({{0x10000, 8, true}, {0x11000, 4, true}, {0x12000, 1, true}}));
  ASSERT_OK_AND_ASSIGN(ChainWriter tail, req.writer().SplitTail(1));
  EXPECT_EQ(req.writer().remaining(), 12u);
  ASSERT_OK(tail.WriteObj(uint8_t{0x42}));
  EXPECT_THAT(Get(0x12000, 1), ElementsAre(0x42));
  ASSERT_OK(req.writer().Write(std::vector<uint8_t>(12, 0x11)));
  EXPECT_THAT(req.writer().Write(std::vector<uint8_t>{1}),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(Get(0x12000, 1), ElementsAre(0x42));  // not overwritten
  // What the device reports as written: the body and the tail.
  EXPECT_EQ(req.writer().written() + tail.written(), 13u);
}

TEST_F(ChainIoTest, SplitTailSpanningTwoDescriptors) {
  Put(0x11000, std::vector<uint8_t>(4, 0xEE));
  ASSERT_OK_AND_ASSIGN(
      Request req,
      Chain({{0x10000, 8, true}, {0x11000, 4, true}, {0x12000, 2, true}}));
  ASSERT_OK_AND_ASSIGN(ChainWriter tail, req.writer().SplitTail(4));
  EXPECT_EQ(tail.remaining(), 4u);
  EXPECT_EQ(req.writer().remaining(), 10u);
  std::vector<size_t> sizes;
  uint8_t v = 1;
  ASSERT_OK_AND_ASSIGN(uint64_t n,
                       tail.FillSpans(4, [&](absl::Span<uint8_t> p) {
                         sizes.push_back(p.size());
                         for (uint8_t& b : p) b = v++;
                         return p.size();
                       }));
  EXPECT_EQ(n, 4u);
  EXPECT_THAT(sizes, ElementsAre(2, 2));
  EXPECT_THAT(Get(0x11000, 4), ElementsAre(0xEE, 0xEE, 1, 2));
  EXPECT_THAT(Get(0x12000, 2), ElementsAre(3, 4));
  // The body covers the first descriptor and half of the second.
  ASSERT_OK(req.writer().Write(std::vector<uint8_t>(10, 0x33)));
  EXPECT_THAT(Get(0x11000, 4), ElementsAre(0x33, 0x33, 1, 2));
  EXPECT_EQ(req.writer().written(), 10u);
}

TEST_F(ChainIoTest, SplitTailAfterPartialWriteAndWithEmptyDescriptors) {
  ASSERT_OK_AND_ASSIGN(
      Request req,
      Chain({{0x10000, 4, true}, {0x11000, 4, true}, {0x18000, 0, true}}));
  ChainWriter& w = req.writer();
  ASSERT_OK(w.Write(std::vector<uint8_t>{1, 2, 3}));
  // Only five bytes remain: a tail of six cannot be split.
  EXPECT_THAT(w.SplitTail(6), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(w.remaining(), 5u);
  ASSERT_OK_AND_ASSIGN(ChainWriter tail, w.SplitTail(5));
  EXPECT_EQ(w.remaining(), 0u);
  EXPECT_THAT(w.Write(std::vector<uint8_t>{1}),
              StatusIs(absl::StatusCode::kOutOfRange));
  ASSERT_OK(tail.Write(std::vector<uint8_t>{4, 5, 6, 7, 8}));
  EXPECT_THAT(Get(0x10000, 4), ElementsAre(1, 2, 3, 4));
  EXPECT_THAT(Get(0x11000, 4), ElementsAre(5, 6, 7, 8));
  EXPECT_EQ(w.written(), 3u);
  EXPECT_EQ(tail.written(), 5u);
  // A tail of nothing is a writer of nothing.
  ASSERT_OK_AND_ASSIGN(ChainWriter empty, w.SplitTail(0));
  EXPECT_EQ(empty.remaining(), 0u);
}

// ---- Two adjacent guest memory regions.

TEST_F(ChainIoTest, BufferCrossingARegionBoundary) {
  Init({{.guest_base = 0, .size = 16 * kPage},
        {.guest_base = 16 * kPage, .size = 16 * kPage}});
  ASSERT_EQ(memory_->regions().size(), 2u);
  const uint64_t boundary = 16 * kPage;
  // 8 bytes before the boundary, 8 after, in one descriptor each way.
  Put(boundary - 8, Iota(16));
  ASSERT_OK_AND_ASSIGN(Request req, Chain({{boundary - 8, 16, false},
                                           {boundary - 4, 12, true}}));
  std::vector<size_t> sizes;
  std::vector<uint8_t> seen;
  ASSERT_OK(req.reader().ForEachSpan(16, [&](absl::Span<uint8_t> p) {
    sizes.push_back(p.size());
    seen.insert(seen.end(), p.begin(), p.end());
  }));
  EXPECT_THAT(sizes, ElementsAre(8, 8));
  EXPECT_EQ(seen, Iota(16));

  std::vector<size_t> wsizes;
  ASSERT_OK_AND_ASSIGN(uint64_t filled,
                       req.writer().FillSpans(12, [&](absl::Span<uint8_t> p) {
                         wsizes.push_back(p.size());
                         for (uint8_t& b : p) b = 0xC3;
                         return p.size();
                       }));
  EXPECT_EQ(filled, 12u);
  EXPECT_THAT(wsizes, ElementsAre(4, 8));
  EXPECT_THAT(Get(boundary - 4, 12), Each(0xC3));
}

TEST_F(ChainIoTest, ReadAndWriteAcrossARegionBoundary) {
  Init({{.guest_base = 0, .size = 16 * kPage},
        {.guest_base = 16 * kPage, .size = 16 * kPage}});
  const uint64_t boundary = 16 * kPage;
  Put(boundary - 3, Iota(6));
  ASSERT_OK_AND_ASSIGN(
      Request req, Chain({{boundary - 3, 6, false}, {boundary - 5, 10, true}}));
  std::vector<uint8_t> got(6);
  ASSERT_OK(req.reader().Read(absl::MakeSpan(got)));
  EXPECT_EQ(got, Iota(6));
  ASSERT_OK(req.writer().Write(Iota(10, 0x20)));
  EXPECT_EQ(Get(boundary - 5, 10), Iota(10, 0x20));
  // A short fill that ends inside the first piece, then the rest.
  ASSERT_OK_AND_ASSIGN(Request req2, Chain({{boundary - 2, 4, true}}));
  ASSERT_OK_AND_ASSIGN(uint64_t one,
                       req2.writer().FillSpans(4, [](absl::Span<uint8_t> p) {
                         p[0] = 0x99;
                         return uint64_t{1};
                       }));
  EXPECT_EQ(one, 1u);
  ASSERT_OK(req2.writer().Write(std::vector<uint8_t>{0xA, 0xB, 0xC}));
  EXPECT_THAT(Get(boundary - 2, 4), ElementsAre(0x99, 0xA, 0xB, 0xC));
  EXPECT_EQ(req2.writer().written(), 4u);
}

}  // namespace
}  // namespace vmmkit::virtio
