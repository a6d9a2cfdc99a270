#include "virtio-device/blk.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "virtio-device/device_state.h"
#include "virtio-device/testing/test_driver.h"

namespace vmmkit::virtio {
namespace {

using ::testing::ElementsAreArray;
using ::vmmkit::testing::IsOk;
using ::vmmkit::testing::StatusIs;
using ::vmmkit::virtio::testing::TestDriver;
using ::vmmkit::virtqueue::GuestMemoryMmap;
using ::vmmkit::virtqueue::VirtqUsedElem;
using Buffer = ::vmmkit::virtqueue::testing::DriverQueue::Buffer;

constexpr uint64_t kImageSize = 1 << 20;  // 2048 sectors
constexpr uint64_t kSectors = kImageSize / 512;
constexpr uint64_t kMemorySize = 16 << 20;

uint8_t Pattern(uint64_t offset) {
  return static_cast<uint8_t>(offset * 7 + (offset >> 9) * 13 + 1);
}

std::string TempDir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

// A file with the pattern, removed at the end of the test.
class TempImage {
 public:
  explicit TempImage(uint64_t size) {
    path_ = TempDir() + "/blk-XXXXXX";
    const int fd = mkstemp(path_.data());
    if (fd < 0) std::abort();
    std::vector<uint8_t> bytes(size);
    for (uint64_t i = 0; i < size; ++i) bytes[i] = Pattern(i);
    if (size > 0 &&
        pwrite(fd, bytes.data(), size, 0) != static_cast<ssize_t>(size)) {
      std::abort();
    }
    close(fd);
  }
  ~TempImage() { unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

  std::vector<uint8_t> Read(uint64_t offset, uint64_t n) const {
    std::vector<uint8_t> out(n);
    const int fd = open(path_.c_str(), O_RDONLY);
    if (fd < 0 || pread(fd, out.data(), n, static_cast<off_t>(offset)) !=
                      static_cast<ssize_t>(n)) {
      std::abort();
    }
    close(fd);
    return out;
  }

 private:
  std::string path_;
};

std::vector<uint8_t> PatternBytes(uint64_t offset, uint64_t n) {
  std::vector<uint8_t> out(n);
  for (uint64_t i = 0; i < n; ++i) out[i] = Pattern(offset + i);
  return out;
}

struct Mode {
  const char* name;
  bool legacy;
  Endian guest_endian;
};

// Every feature the device may offer; TestDriver takes what is offered (and
// drops bit 32 and above for a legacy driver).
Features AllBlkFeatures() {
  return Features::Of({kFEventIdx, kFIndirectDesc, kFAnyLayout, kBlkFSizeMax,
                       kBlkFSegMax, kBlkFRo, kBlkFBlkSize, kBlkFFlush,
                       kBlkFConfigWce, kBlkFMq, kBlkFDiscard,
                       kBlkFWriteZeroes});
}

struct Result {
  uint32_t len = 0;
  uint8_t status = 0xee;
  bool completed = false;
};

class BlkTest : public ::testing::TestWithParam<Mode> {
 protected:
  void SetUp() override {
    auto mem =
        GuestMemoryMmap::Create({{.guest_base = 0, .size = kMemorySize}});
    ASSERT_OK(mem.status());
    memory_ = *std::move(mem);
    image_ = std::make_unique<TempImage>(kImageSize);
  }
  void TearDown() override {
    driver_.reset();
    state_.reset();
    blk_.reset();
  }

  BlockDevice::Options DefaultOptions() {
    return {.path = image_->path(), .serial = "vmmkit-test-serial"};
  }

  // Creates the device and runs the driver's probe.
  void Start(BlockDevice::Options options, Features wanted = AllBlkFeatures()) {
    driver_.reset();
    state_.reset();
    auto blk = BlockDevice::Create(std::move(options));
    ASSERT_OK(blk.status());
    blk_ = *std::move(blk);
    state_ = std::make_unique<DeviceState>(
        *blk_, *memory_,
        DeviceState::Options{.guest_endian = GetParam().guest_endian});
    driver_ = std::make_unique<TestDriver>(
        *state_, *memory_, TestDriver::Options{.legacy = GetParam().legacy});
    ASSERT_OK(driver_->Start(wanted));
    ASSERT_EQ(state_->legacy(), GetParam().legacy);
  }
  void Start() { Start(DefaultOptions()); }

  // Values in the byte order the driver uses for requests.
  template <typename T>
  T ToGuest(T v) {
    const bool big = driver_->endian() == Endian::kBig;
    const bool host_big = std::endian::native == std::endian::big;
    if (big == host_big) return v;
    if constexpr (sizeof(T) == 4) return __builtin_bswap32(v);
    if constexpr (sizeof(T) == 8) return __builtin_bswap64(v);
    return v;
  }

  uint64_t Header(uint32_t type, uint64_t sector) {
    BlkReqHeader h{ToGuest(type), 0, ToGuest(sector)};
    const uint64_t addr = driver_->Alloc(sizeof(h));
    driver_->Put(
        addr, absl::MakeConstSpan(reinterpret_cast<uint8_t*>(&h), sizeof(h)));
    return addr;
  }
  uint64_t Segments(std::vector<BlkDiscardWriteZeroes> segs) {
    for (BlkDiscardWriteZeroes& s : segs) {
      s.sector = ToGuest(s.sector);
      s.num_sectors = ToGuest(s.num_sectors);
      s.flags = ToGuest(s.flags);
    }
    const uint64_t bytes = segs.size() * sizeof(BlkDiscardWriteZeroes);
    const uint64_t addr = driver_->Alloc(bytes);
    driver_->Put(
        addr, absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(segs.data()),
                                  bytes));
    return addr;
  }
  // A guest buffer filled with `fill`.
  uint64_t Buf(uint32_t len, uint8_t fill = 0) {
    const uint64_t addr = driver_->Alloc(len);
    driver_->Put(addr, std::vector<uint8_t>(len, fill));
    return addr;
  }
  uint64_t StatusByte() { return Buf(1, 0xff); }

  // Posts `bufs`, kicks queue `q` and reaps one used element; the status is
  // read from `status_addr`.
  Result Run(const std::vector<Buffer>& bufs, uint64_t status_addr,
             uint16_t q = 0) {
    Result r;
    absl::StatusOr<uint16_t> head = driver_->queue(q).AddChain(bufs);
    EXPECT_OK(head.status());
    driver_->Kick(q);
    std::optional<VirtqUsedElem> used = driver_->queue(q).PopUsed();
    if (!used.has_value()) return r;
    EXPECT_EQ(used->id, *head);
    r.completed = true;
    r.len = used->len;
    r.status = driver_->Get(status_addr, 1)[0];
    return r;
  }
  // header, data buffers, a separate status byte.
  Result Request(uint32_t type, uint64_t sector,
                 const std::vector<Buffer>& data, uint16_t q = 0) {
    std::vector<Buffer> bufs = {{Header(type, sector), 16, false}};
    bufs.insert(bufs.end(), data.begin(), data.end());
    const uint64_t status = StatusByte();
    bufs.push_back({status, 1, true});
    return Run(bufs, status, q);
  }

  std::unique_ptr<GuestMemoryMmap> memory_;
  std::unique_ptr<TempImage> image_;
  std::unique_ptr<BlockDevice> blk_;
  std::unique_ptr<DeviceState> state_;
  std::unique_ptr<TestDriver> driver_;
};

// ---- Create.

TEST_P(BlkTest, CreateErrors) {
  BlockDevice::Options o = DefaultOptions();
  o.path = TempDir() + "/no-such-image";
  EXPECT_THAT(BlockDevice::Create(o), StatusIs(absl::StatusCode::kNotFound));
  o = DefaultOptions();
  o.path = "";
  EXPECT_THAT(BlockDevice::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument));
  o = DefaultOptions();
  o.serial = std::string(21, 'x');
  EXPECT_THAT(BlockDevice::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument));
  o = DefaultOptions();
  o.queue_size = 100;
  EXPECT_THAT(BlockDevice::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument));
  o = DefaultOptions();
  o.queue_size = 65536;
  EXPECT_THAT(BlockDevice::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument));
  o = DefaultOptions();
  o.num_queues = 0;
  EXPECT_THAT(BlockDevice::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument));
  o = DefaultOptions();
  o.seg_max = 255;  // queue size 256 - 2 = 254 at most
  EXPECT_THAT(BlockDevice::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument));
  o = DefaultOptions();
  o.size_max = 512;
  EXPECT_THAT(BlockDevice::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument));
  o = DefaultOptions();
  o.block_size = 1000;
  EXPECT_THAT(BlockDevice::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument));
  o = DefaultOptions();
  o.block_size = 256;
  EXPECT_THAT(BlockDevice::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument));
  o = DefaultOptions();
  o.path = TempDir();  // a directory
  EXPECT_THAT(BlockDevice::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument));
  o = DefaultOptions();
  o.path = "/dev/null";  // a character device
  o.read_only = true;
  EXPECT_THAT(BlockDevice::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_P(BlkTest, CapacityRoundsDownToWholeBlocks) {
  TempImage odd(10 * 512 + 100);
  ASSERT_OK_AND_ASSIGN(auto blk, BlockDevice::Create({.path = odd.path()}));
  EXPECT_EQ(blk->capacity(), 10u);
  ASSERT_OK_AND_ASSIGN(auto blk4k, BlockDevice::Create({.path = odd.path(),
                                                        .block_size = 4096}));
  EXPECT_EQ(blk4k->capacity(), 8u);  // one whole 4 KiB block
  TempImage empty(0);
  ASSERT_OK_AND_ASSIGN(auto blk0, BlockDevice::Create({.path = empty.path()}));
  EXPECT_EQ(blk0->capacity(), 0u);
}

// ---- Features and configuration space.

TEST_P(BlkTest, OfferedFeatures) {
  Start();
  const Features& f = state_->offered_features();
  for (unsigned bit : {kFVersion1, kFEventIdx, kFIndirectDesc, kBlkFSizeMax,
                       kBlkFSegMax, kBlkFBlkSize, kBlkFFlush, kBlkFConfigWce,
                       kBlkFDiscard, kBlkFWriteZeroes}) {
    EXPECT_TRUE(f.Has(bit)) << bit;
  }
  for (unsigned bit : {kBlkFBarrier, kBlkFScsi, kBlkFRo, kBlkFMq, kBlkFGeometry,
                       kBlkFTopology}) {
    EXPECT_FALSE(f.Has(bit)) << bit;
  }
  EXPECT_EQ(driver_->negotiated().Has(kFVersion1), !GetParam().legacy);
  EXPECT_TRUE(driver_->negotiated().Has(kBlkFDiscard));
}

TEST_P(BlkTest, ConfigFields) {
  Start({.path = image_->path(),
         .queue_size = 128,
         .seg_max = 64,
         .size_max = 65536,
         .block_size = 4096});
  EXPECT_EQ(state_->config_size(), 60u);
  EXPECT_EQ(driver_->ReadConfigU64(0), kSectors);
  EXPECT_EQ(driver_->ReadConfigU32(8), 65536u);  // size_max
  EXPECT_EQ(driver_->ReadConfigU32(12), 64u);    // seg_max
  EXPECT_EQ(driver_->ReadConfigU16(16), 0u);     // cylinders
  EXPECT_EQ(driver_->ReadConfigU32(20), 4096u);  // blk_size
  EXPECT_EQ(driver_->ReadConfig(32, 1)[0], 1u);  // writeback
  EXPECT_EQ(driver_->ReadConfigU16(34), 1u);     // num_queues
  EXPECT_EQ(driver_->ReadConfigU32(36), BlockDevice::kMaxDiscardSectors);
  EXPECT_EQ(driver_->ReadConfigU32(40), BlockDevice::kMaxDiscardSegments);
  EXPECT_EQ(driver_->ReadConfigU32(44), 8u);  // discard alignment: 4 KiB
  EXPECT_EQ(driver_->ReadConfigU32(48), BlockDevice::kMaxWriteZeroesSectors);
  EXPECT_EQ(driver_->ReadConfigU32(52), BlockDevice::kMaxDiscardSegments);
  EXPECT_EQ(driver_->ReadConfig(56, 1)[0], 1u);  // write_zeroes_may_unmap
  EXPECT_THAT(driver_->ReadConfig(57, 3), ElementsAreArray({0, 0, 0}));
  EXPECT_EQ(driver_->ReadConfig(33, 1)[0], 0u);  // unused0
  // The raw bytes of capacity in the driver's order, and a partial read.
  std::vector<uint8_t> raw = driver_->ReadConfig(0, 8);
  const bool big = driver_->endian() == Endian::kBig;
  EXPECT_EQ(raw[big ? 6 : 1], kSectors >> 8);
  EXPECT_EQ(raw[big ? 7 : 0], kSectors & 0xff);
  // Beyond the space: zeros.
  EXPECT_EQ(driver_->ReadConfigU32(60), 0u);
}

TEST_P(BlkTest, ModernDriverWithoutFlushGetsWritethroughWithConfigWce) {
  // CONFIG_WCE without FLUSH: a modern device must start in writethrough;
  // a legacy driver's features do not change the cache mode.
  Start(DefaultOptions(), Features::Of({kBlkFConfigWce, kBlkFSegMax}));
  EXPECT_EQ(driver_->ReadConfig(32, 1)[0], GetParam().legacy ? 1u : 0u);
}

TEST_P(BlkTest, WritethroughSyncsEveryWrite) {
  Start();
  const uint64_t syncs = blk_->stats().syncs;
  Result r = Request(kBlkTOut, 0, {{Buf(512, 1), 512, false}});
  EXPECT_EQ(r.status, kBlkSOk);
  EXPECT_EQ(blk_->stats().syncs, syncs);  // writeback: no sync
  // The driver switches to writethrough (CONFIG_WCE).
  const uint8_t zero = 0;
  state_->WriteConfig(32, absl::MakeConstSpan(&zero, 1), driver_->endian());
  EXPECT_EQ(driver_->ReadConfig(32, 1)[0], 0u);
  r = Request(kBlkTOut, 0, {{Buf(512, 2), 512, false}});
  EXPECT_EQ(r.status, kBlkSOk);
  EXPECT_EQ(blk_->stats().syncs, syncs + 1);
  // Reset brings writeback back.
  driver_->Reset();
  EXPECT_EQ(driver_->ReadConfig(32, 1)[0], 1u);
}

TEST_P(BlkTest, NeitherFlushNorConfigWceMeansWritethrough) {
  Start(DefaultOptions(), Features::Of({kBlkFSegMax}));
  Result r = Request(kBlkTOut, 0, {{Buf(512, 1), 512, false}});
  EXPECT_EQ(r.status, kBlkSOk);
  EXPECT_EQ(blk_->stats().syncs, 1u);
}

// ---- Requests.

TEST_P(BlkTest, ReadReturnsImageContents) {
  Start();
  const uint64_t data = Buf(4096, 0xaa);
  Result r = Request(kBlkTIn, 3, {{data, 4096, true}});
  ASSERT_TRUE(r.completed);
  EXPECT_EQ(r.status, kBlkSOk);
  EXPECT_EQ(r.len, 4097u);
  EXPECT_EQ(driver_->Get(data, 4096), PatternBytes(3 * 512, 4096));
  EXPECT_EQ(blk_->stats().in, 1u);
  EXPECT_EQ(blk_->stats().bytes_read, 4096u);
  EXPECT_EQ(driver_->queue_interrupts(0), 1);
}

TEST_P(BlkTest, WriteReachesTheFileAndReadsBack) {
  Start();
  std::vector<uint8_t> payload(1024);
  for (size_t i = 0; i < payload.size(); ++i)
    payload[i] = static_cast<uint8_t>(i * 3);
  const uint64_t data = driver_->Alloc(1024);
  driver_->Put(data, payload);
  Result r = Request(kBlkTOut, 10, {{data, 1024, false}});
  EXPECT_EQ(r.status, kBlkSOk);
  EXPECT_EQ(r.len, 1u);  // only the status byte is written
  EXPECT_EQ(image_->Read(10 * 512, 1024), payload);
  // Neighbours untouched.
  EXPECT_EQ(image_->Read(9 * 512, 512), PatternBytes(9 * 512, 512));
  EXPECT_EQ(image_->Read(12 * 512, 512), PatternBytes(12 * 512, 512));
  // And back through the device.
  const uint64_t back = Buf(1024);
  r = Request(kBlkTIn, 10, {{back, 1024, true}});
  EXPECT_EQ(r.status, kBlkSOk);
  EXPECT_EQ(driver_->Get(back, 1024), payload);
  EXPECT_EQ(blk_->stats().out, 1u);
  EXPECT_EQ(blk_->stats().bytes_written, 1024u);
}

TEST_P(BlkTest, FlushSyncsAndDataIsOnDisk) {
  Start();
  Result r = Request(kBlkTOut, 100, {{Buf(512, 0x5a), 512, false}});
  EXPECT_EQ(r.status, kBlkSOk);
  r = Request(kBlkTFlush, 0, {});
  EXPECT_EQ(r.status, kBlkSOk);
  EXPECT_EQ(r.len, 1u);
  EXPECT_EQ(blk_->stats().flush, 1u);
  EXPECT_EQ(blk_->stats().syncs, 1u);
  EXPECT_EQ(image_->Read(100 * 512, 512), std::vector<uint8_t>(512, 0x5a));
  // VM stop.
  EXPECT_OK(blk_->Flush());
  EXPECT_EQ(blk_->stats().syncs, 2u);
}

TEST_P(BlkTest, LegacyFlushOutAndBarrierBit) {
  Start();
  Result r = Request(kBlkTFlushOut, 0, {});
  EXPECT_EQ(r.status, GetParam().legacy ? kBlkSOk : kBlkSUnsupp);
  const uint64_t data = Buf(512);
  r = Request(kBlkTIn | kBlkTBarrier, 1, {{data, 512, true}});
  if (GetParam().legacy) {
    EXPECT_EQ(r.status, kBlkSOk);
    EXPECT_EQ(driver_->Get(data, 512), PatternBytes(512, 512));
  } else {
    EXPECT_EQ(r.status, kBlkSUnsupp);
  }
}

TEST_P(BlkTest, GetId) {
  Start();
  const uint64_t id = Buf(20, 0xff);
  Result r = Request(kBlkTGetId, 0, {{id, 20, true}});
  EXPECT_EQ(r.status, kBlkSOk);
  EXPECT_EQ(r.len, 21u);
  std::vector<uint8_t> want(20, 0);
  std::memcpy(want.data(), "vmmkit-test-serial", 18);
  EXPECT_EQ(driver_->Get(id, 20), want);
  // A shorter buffer gets what fits.
  const uint64_t shorter = Buf(6, 0xff);
  r = Request(kBlkTGetId, 0, {{shorter, 6, true}});
  EXPECT_EQ(r.status, kBlkSOk);
  EXPECT_EQ(r.len, 7u);
  EXPECT_EQ(driver_->Get(shorter, 6),
            std::vector<uint8_t>({'v', 'm', 'm', 'k', 'i', 't'}));
  EXPECT_EQ(blk_->stats().get_id, 2u);
}

TEST_P(BlkTest, GetIdTwentyBytesHasNoTerminator) {
  Start({.path = image_->path(), .serial = "ABCDEFGHIJKLMNOPQRST"});
  const uint64_t id = Buf(20, 0xff);
  Result r = Request(kBlkTGetId, 0, {{id, 20, true}});
  EXPECT_EQ(r.status, kBlkSOk);
  const std::string want = "ABCDEFGHIJKLMNOPQRST";
  EXPECT_EQ(driver_->Get(id, 20),
            std::vector<uint8_t>(want.begin(), want.end()));
}

TEST_P(BlkTest, WriteZeroesReadsBackZeros) {
  Start();
  for (uint32_t unmap : {0u, kBlkDwzFUnmap}) {
    const uint64_t first = unmap ? 200 : 100;
    Result r = Request(
        kBlkTWriteZeroes, 0,
        {{Segments({{first, 9, unmap}, {first + 20, 1, unmap}}), 32, false}});
    EXPECT_EQ(r.status, kBlkSOk) << unmap;
    EXPECT_EQ(r.len, 1u);
    EXPECT_EQ(image_->Read(first * 512, 9 * 512),
              std::vector<uint8_t>(9 * 512, 0));
    EXPECT_EQ(image_->Read((first + 20) * 512, 512),
              std::vector<uint8_t>(512, 0));
    EXPECT_EQ(image_->Read((first + 9) * 512, 512),
              PatternBytes((first + 9) * 512, 512));
    EXPECT_EQ(image_->Read((first - 1) * 512, 512),
              PatternBytes((first - 1) * 512, 512));
  }
  EXPECT_EQ(blk_->stats().write_zeroes, 2u);
}

TEST_P(BlkTest, Discard) {
  Start();
  Result r = Request(kBlkTDiscard, 0,
                     {{Segments({{64, 64, 0}, {512, 8, 0}}), 32, false}});
  EXPECT_EQ(r.status, kBlkSOk);
  // What a discarded range reads is unspecified; its neighbours keep data.
  EXPECT_EQ(image_->Read(63 * 512, 512), PatternBytes(63 * 512, 512));
  EXPECT_EQ(image_->Read(128 * 512, 512), PatternBytes(128 * 512, 512));
  EXPECT_EQ(blk_->stats().discard, 1u);
}

TEST_P(BlkTest, DiscardAndWriteZeroesErrors) {
  Start();
  auto run = [&](uint32_t type, std::vector<BlkDiscardWriteZeroes> segs) {
    const uint32_t len =
        static_cast<uint32_t>(segs.size() * sizeof(BlkDiscardWriteZeroes));
    return Request(type, 0, {{Segments(std::move(segs)), len, false}}).status;
  };
  // §5.2.6.2: UNMAP on discard, and unknown flags, are UNSUPP.
  EXPECT_EQ(run(kBlkTDiscard, {{0, 8, kBlkDwzFUnmap}}), kBlkSUnsupp);
  EXPECT_EQ(run(kBlkTDiscard, {{0, 8, 2}}), kBlkSUnsupp);
  EXPECT_EQ(run(kBlkTWriteZeroes, {{0, 8, 0x80000000u}}), kBlkSUnsupp);
  // Beyond the capacity, and overflowing sector + count.
  EXPECT_EQ(run(kBlkTWriteZeroes, {{kSectors - 4, 8, 0}}), kBlkSIoErr);
  EXPECT_EQ(run(kBlkTDiscard, {{~0ull - 2, 8, 0}}), kBlkSIoErr);
  EXPECT_EQ(run(kBlkTWriteZeroes, {{kSectors - 8, 8, 0}}), kBlkSOk);
  // Too many sectors in one segment.
  EXPECT_EQ(
      run(kBlkTWriteZeroes, {{0, BlockDevice::kMaxWriteZeroesSectors + 1, 0}}),
      kBlkSIoErr);
  // Too many segments.
  EXPECT_EQ(run(kBlkTDiscard, std::vector<BlkDiscardWriteZeroes>(
                                  BlockDevice::kMaxDiscardSegments + 1,
                                  BlkDiscardWriteZeroes{0, 1, 0})),
            kBlkSIoErr);
  // No segment, and a partial one.
  EXPECT_EQ(Request(kBlkTDiscard, 0, {}).status, kBlkSIoErr);
  EXPECT_EQ(Request(kBlkTDiscard, 0, {{Buf(8), 8, false}}).status, kBlkSIoErr);
  // Segments in a device-writable buffer.
  EXPECT_EQ(
      Request(kBlkTWriteZeroes, 0, {{Segments({{0, 1, 0}}), 16, true}}).status,
      kBlkSIoErr);
  // Nothing was zeroed by the failed requests.
  EXPECT_EQ(image_->Read(0, 512), PatternBytes(0, 512));
}

TEST_P(BlkTest, DiscardNotNegotiatedIsUnsupported) {
  Start(DefaultOptions(), Features::Of({kBlkFFlush}));
  Result r = Request(kBlkTDiscard, 0, {{Segments({{0, 8, 0}}), 16, false}});
  EXPECT_EQ(r.status, kBlkSUnsupp);
  r = Request(kBlkTWriteZeroes, 0, {{Segments({{0, 8, 0}}), 16, false}});
  EXPECT_EQ(r.status, kBlkSUnsupp);
  EXPECT_EQ(image_->Read(0, 4096), PatternBytes(0, 4096));
  EXPECT_EQ(blk_->stats().unsupported, 2u);
}

TEST_P(BlkTest, ReadOnlyImage) {
  Start({.path = image_->path(), .read_only = true});
  const Features& f = state_->offered_features();
  EXPECT_TRUE(f.Has(kBlkFRo));
  EXPECT_FALSE(f.Has(kBlkFDiscard));
  EXPECT_FALSE(f.Has(kBlkFWriteZeroes));
  EXPECT_TRUE(driver_->negotiated().Has(kBlkFRo));
  Result r = Request(kBlkTOut, 0, {{Buf(512, 0x11), 512, false}});
  EXPECT_EQ(r.status, kBlkSIoErr);
  EXPECT_EQ(r.len, 1u);
  r = Request(kBlkTWriteZeroes, 0, {{Segments({{0, 8, 0}}), 16, false}});
  EXPECT_EQ(r.status, kBlkSUnsupp);
  EXPECT_EQ(image_->Read(0, 4096), PatternBytes(0, 4096));
  // Reads and flushes work.
  const uint64_t data = Buf(512);
  r = Request(kBlkTIn, 0, {{data, 512, true}});
  EXPECT_EQ(r.status, kBlkSOk);
  EXPECT_EQ(driver_->Get(data, 512), PatternBytes(0, 512));
  EXPECT_EQ(Request(kBlkTFlush, 0, {}).status, kBlkSOk);
  EXPECT_EQ(blk_->stats().errors, 1u);
}

TEST_P(BlkTest, ReadOnlyOpensWithoutWritePermission) {
  // The device opens the file O_RDONLY: a file without write permission
  // still serves reads (unless running as root, which ignores modes).
  ASSERT_EQ(chmod(image_->path().c_str(), 0444), 0);
  Start({.path = image_->path(), .read_only = true});
  const uint64_t data = Buf(512);
  EXPECT_EQ(Request(kBlkTIn, 5, {{data, 512, true}}).status, kBlkSOk);
  EXPECT_EQ(driver_->Get(data, 512), PatternBytes(5 * 512, 512));
}

// ---- Errors answered with IOERR / UNSUPP.

TEST_P(BlkTest, BeyondCapacity) {
  Start();
  // The last sector is fine; one more is not.
  EXPECT_EQ(Request(kBlkTIn, kSectors - 1, {{Buf(512), 512, true}}).status,
            kBlkSOk);
  EXPECT_EQ(Request(kBlkTIn, kSectors - 1, {{Buf(1024), 1024, true}}).status,
            kBlkSIoErr);
  EXPECT_EQ(Request(kBlkTIn, kSectors, {{Buf(512), 512, true}}).status,
            kBlkSIoErr);
  EXPECT_EQ(Request(kBlkTOut, kSectors, {{Buf(512), 512, false}}).status,
            kBlkSIoErr);
  // sector * 512 and sector + count overflow 64 bits.
  EXPECT_EQ(Request(kBlkTIn, ~0ull, {{Buf(512), 512, true}}).status,
            kBlkSIoErr);
  EXPECT_EQ(Request(kBlkTOut, ~0ull >> 9, {{Buf(512), 512, false}}).status,
            kBlkSIoErr);
  EXPECT_EQ(blk_->stats().errors, 5u);
  EXPECT_EQ(image_->Read(0, kImageSize), PatternBytes(0, kImageSize));
}

TEST_P(BlkTest, ShortHeader) {
  Start();
  const uint64_t hdr = Header(kBlkTIn, 0);
  const uint64_t data = Buf(512, 0x77);
  const uint64_t status = StatusByte();
  Result r =
      Run({{hdr, 8, false}, {data, 512, true}, {status, 1, true}}, status);
  EXPECT_EQ(r.status, kBlkSIoErr);
  EXPECT_EQ(r.len, 1u);
  EXPECT_EQ(driver_->Get(data, 512), std::vector<uint8_t>(512, 0x77));
}

TEST_P(BlkTest, WrongDirections) {
  Start();
  // IN with device-readable data after the header.
  Result r =
      Request(kBlkTIn, 0, {{Buf(512), 512, false}, {Buf(512), 512, true}});
  EXPECT_EQ(r.status, kBlkSIoErr);
  // OUT with device-writable data before the status.
  r = Request(kBlkTOut, 0, {{Buf(512, 0x33), 512, true}});
  EXPECT_EQ(r.status, kBlkSIoErr);
  EXPECT_EQ(r.len, 1u);
  EXPECT_EQ(image_->Read(0, 512), PatternBytes(0, 512));
  // A length that is not a whole number of sectors.
  EXPECT_EQ(Request(kBlkTIn, 0, {{Buf(100), 100, true}}).status, kBlkSIoErr);
  EXPECT_EQ(Request(kBlkTOut, 0, {{Buf(600), 600, false}}).status, kBlkSIoErr);
  EXPECT_EQ(blk_->stats().errors, 4u);
}

TEST_P(BlkTest, UnknownTypeIsUnsupported) {
  Start();
  for (uint32_t type : {2u, 3u, 7u, 10u, 14u, 0x7fffffffu}) {
    EXPECT_EQ(Request(type, 0, {}).status, kBlkSUnsupp) << type;
  }
  EXPECT_EQ(blk_->stats().unsupported, 6u);
}

TEST_P(BlkTest, TooManySegments) {
  Start({.path = image_->path(), .seg_max = 3});
  EXPECT_EQ(driver_->ReadConfigU32(12), 3u);
  std::vector<Buffer> three, four;
  for (int i = 0; i < 4; ++i) {
    const Buffer b{Buf(512), 512, true};
    if (i < 3) three.push_back(b);
    four.push_back(b);
  }
  EXPECT_EQ(Request(kBlkTIn, 0, three).status, kBlkSOk);
  EXPECT_EQ(Request(kBlkTIn, 0, four).status, kBlkSIoErr);
  for (Buffer& b : four) b.writable = false;
  EXPECT_EQ(Request(kBlkTOut, 0, four).status, kBlkSIoErr);
  EXPECT_EQ(image_->Read(0, 2048), PatternBytes(0, 2048));
}

TEST_P(BlkTest, SegmentAboveSizeMax) {
  Start({.path = image_->path(), .size_max = 4096});
  EXPECT_EQ(Request(kBlkTIn, 0, {{Buf(4096), 4096, true}}).status, kBlkSOk);
  EXPECT_EQ(Request(kBlkTIn, 0, {{Buf(8192), 8192, true}}).status, kBlkSIoErr);
  EXPECT_EQ(Request(kBlkTOut, 0, {{Buf(8192), 8192, false}}).status,
            kBlkSIoErr);
  // The same bytes in two segments are fine.
  EXPECT_EQ(Request(kBlkTOut, 0,
                    {{Buf(4096, 9), 4096, false}, {Buf(4096, 9), 4096, false}})
                .status,
            kBlkSOk);
  EXPECT_EQ(image_->Read(0, 8192), std::vector<uint8_t>(8192, 9));
}

TEST_P(BlkTest, HostIoErrorIsIoErr) {
  Start();
  // The image shrinks behind the device's back: reads past the new end
  // find nothing.
  ASSERT_EQ(truncate(image_->path().c_str(), 4096), 0);
  const uint64_t data = Buf(512);
  EXPECT_EQ(Request(kBlkTIn, 100, {{data, 512, true}}).status, kBlkSIoErr);
  EXPECT_EQ(Request(kBlkTIn, 1, {{data, 512, true}}).status, kBlkSOk);
  EXPECT_EQ(blk_->stats().errors, 1u);
}

TEST_P(BlkTest, NoWritableByteCompletesWithLengthZero) {
  Start();
  const uint64_t hdr = Header(kBlkTOut, 0);
  const uint64_t data = Buf(512, 0x44);
  ASSERT_OK(driver_->queue(0)
                .AddChain({{hdr, 16, false}, {data, 512, false}})
                .status());
  driver_->Kick(0);
  std::optional<VirtqUsedElem> used = driver_->queue(0).PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 0u);
  EXPECT_EQ(blk_->stats().no_status, 1u);
  EXPECT_FALSE(state_->status() & kStatusNeedsReset);
  EXPECT_EQ(image_->Read(0, 512), PatternBytes(0, 512));  // not executed
  // The device goes on.
  EXPECT_EQ(Request(kBlkTIn, 0, {{Buf(512), 512, true}}).status, kBlkSOk);
}

// ---- Layouts.

TEST_P(BlkTest, FourSegmentRequest) {
  Start();
  const uint64_t a = Buf(512), b = Buf(1024), c = Buf(2048), d = Buf(512);
  Result r = Request(
      kBlkTIn, 7,
      {{a, 512, true}, {b, 1024, true}, {c, 2048, true}, {d, 512, true}});
  EXPECT_EQ(r.status, kBlkSOk);
  EXPECT_EQ(r.len, 4097u);
  EXPECT_EQ(driver_->Get(a, 512), PatternBytes(7 * 512, 512));
  EXPECT_EQ(driver_->Get(b, 1024), PatternBytes(8 * 512, 1024));
  EXPECT_EQ(driver_->Get(c, 2048), PatternBytes(10 * 512, 2048));
  EXPECT_EQ(driver_->Get(d, 512), PatternBytes(14 * 512, 512));
  // And a 4-segment write.
  r = Request(kBlkTOut, 20,
              {{Buf(512, 1), 512, false},
               {Buf(512, 2), 512, false},
               {Buf(512, 3), 512, false},
               {Buf(512, 4), 512, false}});
  EXPECT_EQ(r.status, kBlkSOk);
  std::vector<uint8_t> want;
  for (uint8_t v = 1; v <= 4; ++v) want.insert(want.end(), 512, v);
  EXPECT_EQ(image_->Read(20 * 512, 2048), want);
}

TEST_P(BlkTest, AnyLayoutHeaderWithDataAndStatusWithData) {
  Start();
  // OUT: header and data in one readable buffer.
  BlkReqHeader h{ToGuest(kBlkTOut), 0, ToGuest(uint64_t{30})};
  const uint64_t out = driver_->Alloc(16 + 512);
  driver_->Put(out, absl::MakeConstSpan(reinterpret_cast<uint8_t*>(&h), 16));
  driver_->Put(out + 16, std::vector<uint8_t>(512, 0xcd));
  uint64_t status = StatusByte();
  Result r = Run({{out, 16 + 512, false}, {status, 1, true}}, status);
  EXPECT_EQ(r.status, kBlkSOk);
  EXPECT_EQ(image_->Read(30 * 512, 512), std::vector<uint8_t>(512, 0xcd));
  // IN: data and status in one writable buffer.
  const uint64_t in = Buf(513, 0xff);
  r = Run({{Header(kBlkTIn, 31), 16, false}, {in, 513, true}}, in + 512);
  EXPECT_EQ(r.status, kBlkSOk);
  EXPECT_EQ(r.len, 513u);
  EXPECT_EQ(driver_->Get(in, 512), PatternBytes(31 * 512, 512));
}

TEST_P(BlkTest, IndirectChain) {
  Start();
  const uint64_t table = driver_->Alloc(16 * 4);
  const uint64_t a = Buf(2048), b = Buf(2048);
  const uint64_t status = StatusByte();
  const Buffer bufs[] = {{Header(kBlkTIn, 40), 16, false},
                         {a, 2048, true},
                         {b, 2048, true},
                         {status, 1, true}};
  ASSERT_OK(driver_->queue(0).AddIndirectChain(table, bufs).status());
  driver_->Kick(0);
  std::optional<VirtqUsedElem> used = driver_->queue(0).PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 4097u);
  EXPECT_EQ(driver_->Get(status, 1)[0], kBlkSOk);
  EXPECT_EQ(driver_->Get(a, 2048), PatternBytes(40 * 512, 2048));
  EXPECT_EQ(driver_->Get(b, 2048), PatternBytes(44 * 512, 2048));
}

TEST_P(BlkTest, BatchOfRequestsOneInterrupt) {
  Start();
  std::vector<uint64_t> data, status;
  for (int i = 0; i < 8; ++i) {
    data.push_back(Buf(512));
    status.push_back(StatusByte());
    ASSERT_OK(driver_->queue(0)
                  .AddChain({{Header(kBlkTIn, i), 16, false},
                             {data.back(), 512, true},
                             {status.back(), 1, true}})
                  .status());
  }
  driver_->Kick(0);
  for (int i = 0; i < 8; ++i) {
    std::optional<VirtqUsedElem> used = driver_->queue(0).PopUsed();
    ASSERT_TRUE(used.has_value());
    EXPECT_EQ(used->len, 513u);
    EXPECT_EQ(driver_->Get(status[i], 1)[0], kBlkSOk);
    EXPECT_EQ(driver_->Get(data[i], 512), PatternBytes(i * 512, 512));
  }
  EXPECT_EQ(driver_->queue_interrupts(0), 1);
}

TEST_P(BlkTest, MultiQueue) {
  Start({.path = image_->path(), .num_queues = 2});
  EXPECT_TRUE(state_->offered_features().Has(kBlkFMq));
  EXPECT_EQ(state_->num_queues(), 2);
  EXPECT_EQ(driver_->ReadConfigU16(34), 2u);
  const uint64_t data = Buf(512);
  Result r = Request(kBlkTIn, 2, {{data, 512, true}}, /*q=*/1);
  EXPECT_EQ(r.status, kBlkSOk);
  EXPECT_EQ(driver_->Get(data, 512), PatternBytes(1024, 512));
  EXPECT_EQ(driver_->queue_interrupts(1), 1);
  EXPECT_EQ(driver_->queue_interrupts(0), 0);
}

// ---- Device state.

TEST_P(BlkTest, ResetMidIoTouchesNothing) {
  Start();
  const uint64_t data = Buf(512, 0x99);
  const uint64_t status = StatusByte();
  ASSERT_OK(driver_->queue(0)
                .AddChain({{Header(kBlkTOut, 0), 16, false},
                           {data, 512, false},
                           {status, 1, true}})
                .status());
  const uint64_t in = Buf(512, 0x99);
  const uint64_t status2 = StatusByte();
  ASSERT_OK(driver_->queue(0)
                .AddChain({{Header(kBlkTIn, 0), 16, false},
                           {in, 512, true},
                           {status2, 1, true}})
                .status());
  driver_->Reset();
  driver_->Kick(0);  // after reset: ignored
  EXPECT_EQ(driver_->queue(0).used_idx(), 0);
  EXPECT_EQ(driver_->Get(status, 1)[0], 0xff);
  EXPECT_EQ(driver_->Get(status2, 1)[0], 0xff);
  EXPECT_EQ(driver_->Get(in, 512), std::vector<uint8_t>(512, 0x99));
  EXPECT_EQ(image_->Read(0, 512), PatternBytes(0, 512));
  EXPECT_EQ(blk_->stats().in + blk_->stats().out, 0u);
  // The device comes back after a new probe.
  ASSERT_OK(driver_->Start(AllBlkFeatures()));
  EXPECT_EQ(Request(kBlkTIn, 0, {{Buf(512), 512, true}}).status, kBlkSOk);
}

TEST_P(BlkTest, MalformedChainSetsNeedsReset) {
  Start();
  // A good request, then a descriptor pointing past the end of memory.
  const uint64_t data = Buf(512);
  const uint64_t status = StatusByte();
  ASSERT_OK(driver_->queue(0)
                .AddChain({{Header(kBlkTIn, 0), 16, false},
                           {data, 512, true},
                           {status, 1, true}})
                .status());
  driver_->queue(0).WriteDesc(100, kMemorySize - 8, 64, 0, 0);
  driver_->queue(0).Publish(100);
  driver_->Kick(0);
  EXPECT_TRUE(state_->status() & kStatusNeedsReset);
  EXPECT_EQ(driver_->config_interrupts(), 1);
  EXPECT_THAT(state_->last_error(), StatusIs(absl::StatusCode::kOutOfRange));
  // The good request before it was answered.
  std::optional<VirtqUsedElem> used = driver_->queue(0).PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 513u);
  EXPECT_EQ(driver_->Get(status, 1)[0], kBlkSOk);
  EXPECT_FALSE(driver_->queue(0).PopUsed().has_value());
  // A readable descriptor after a writable one is malformed too.
  ASSERT_OK(driver_->Start(AllBlkFeatures()));
  const uint64_t s2 = StatusByte();
  ASSERT_OK(driver_->queue(0)
                .AddChain({{Header(kBlkTIn, 0), 16, false},
                           {s2, 1, true},
                           {Buf(512), 512, false}})
                .status());
  driver_->Kick(0);
  EXPECT_TRUE(state_->status() & kStatusNeedsReset);
  EXPECT_THAT(state_->last_error(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(driver_->Get(s2, 1)[0], 0xff);
}

TEST_P(BlkTest, WritebackResetBeforeDriverOkIsUndoneByNextProbe) {
  if (GetParam().legacy) GTEST_SKIP() << "legacy drivers set no FEATURES_OK";
  // A driver that took CONFIG_WCE without FLUSH gets writethrough ...
  Start(DefaultOptions(), Features::Of({kBlkFConfigWce}));
  EXPECT_EQ(driver_->ReadConfig(32, 1)[0], 0u);
  // ... and the next one, taking FLUSH too, gets writeback again.
  ASSERT_OK(driver_->Start(AllBlkFeatures()));
  EXPECT_EQ(driver_->ReadConfig(32, 1)[0], 1u);
}

// Random chain shapes and headers: every chain is either answered with a
// status byte the spec defines (and a used length within its writable
// bytes) or, if malformed, sets NEEDS_RESET; nothing crashes.
TEST_P(BlkTest, RandomChainsAreAnsweredOrResetNeverCrash) {
  Start({.path = image_->path(), .seg_max = 4, .size_max = 4096});
  std::mt19937_64 rng(42);
  constexpr uint32_t kLens[] = {0, 1, 7, 8, 16, 17, 512, 513, 4096, 8192};
  constexpr uint32_t kTypes[] = {
      kBlkTIn,          kBlkTOut,      kBlkTFlush,  kBlkTGetId, kBlkTDiscard,
      kBlkTWriteZeroes, kBlkTFlushOut, 0x80000000u, 3,          0xffffffffu};
  std::vector<uint64_t> pool;
  for (int i = 0; i < 6; ++i) pool.push_back(Buf(8192));
  int answered = 0, resets = 0;
  for (int round = 0; round < 400; ++round) {
    if (state_->status() & kStatusNeedsReset) {
      ++resets;
      ASSERT_OK(driver_->Start(AllBlkFeatures()));
    }
    const int n = 1 + static_cast<int>(rng() % 6);
    std::vector<Buffer> bufs;
    uint64_t writable = 0;
    for (int i = 0; i < n; ++i) {
      Buffer b{pool[i], kLens[rng() % std::size(kLens)], false};
      // Readable first, writable after (mostly), with random contents.
      b.writable = rng() % 100 < 10 ? rng() % 2 == 0 : i >= n / 2;
      std::vector<uint8_t> bytes(b.len);
      for (uint8_t& x : bytes) x = static_cast<uint8_t>(rng());
      driver_->Put(b.addr, bytes);
      if (b.writable) writable += b.len;
      bufs.push_back(b);
    }
    // A plausible header in the first buffer, most of the time.
    if (bufs[0].len >= 16 && rng() % 4 != 0) {
      const uint64_t sector = rng() % 4 == 0 ? rng() : rng() % (kSectors + 8);
      BlkReqHeader h{ToGuest(kTypes[rng() % std::size(kTypes)]), 0,
                     ToGuest(sector)};
      driver_->Put(bufs[0].addr,
                   absl::MakeConstSpan(reinterpret_cast<uint8_t*>(&h), 16));
    }
    ASSERT_OK(driver_->queue(0).AddChain(bufs).status());
    driver_->Kick(0);
    std::optional<VirtqUsedElem> used = driver_->queue(0).PopUsed();
    if (!used.has_value()) {
      EXPECT_TRUE(state_->status() & kStatusNeedsReset);
      continue;
    }
    ++answered;
    EXPECT_LE(used->len, writable);
    if (writable == 0) EXPECT_EQ(used->len, 0u);
    if (used->len > 0) {
      // The status is the last writable byte.
      uint64_t last = 0;
      for (const Buffer& b : bufs) {
        if (b.writable && b.len > 0) last = b.addr + b.len - 1;
      }
      EXPECT_LE(driver_->Get(last, 1)[0], kBlkSUnsupp);
    }
  }
  EXPECT_GT(answered, 100);
  EXPECT_GT(resets, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Modes, BlkTest,
    ::testing::Values(Mode{"Modern", false, Endian::kLittle},
                      Mode{"LegacyLittleEndian", true, Endian::kLittle},
                      Mode{"LegacyBigEndian", true, Endian::kBig}),
    [](const ::testing::TestParamInfo<Mode>& info) { return info.param.name; });

}  // namespace
}  // namespace vmmkit::virtio
