#include "pci/virtio_pci.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "virtio-device/config_space.h"
#include "virtio-device/rng.h"
#include "virtqueue/guest_memory.h"
#include "virtqueue/testing/driver_queue.h"

namespace vmmkit::pci {
namespace {

using virtio::Features;
using ::vmmkit::testing::StatusIs;
using ::vmmkit::virtqueue::GuestMemoryMmap;
using ::vmmkit::virtqueue::testing::DriverQueue;
using NotifyLayout = VirtioPciFunction::NotifyLayout;

constexpr uint8_t kAck = virtio::kStatusAcknowledge;
constexpr uint8_t kDrv = virtio::kStatusDriver;
constexpr uint8_t kFeatOk = virtio::kStatusFeaturesOk;
constexpr uint8_t kDrvOk = virtio::kStatusDriverOk;
constexpr uint8_t kNeedsReset = virtio::kStatusNeedsReset;
constexpr uint64_t kMemSize = 1 << 20;

// A console-shaped device (type 3: it has a transitional id) with a 12-byte
// config {le16 cols, le16 rows, le32 max_nr_ports, le32 emerg_wr}, two queues
// (64 and 32 entries), and a type that can be changed to one without a
// legacy id.
class ConfigDevice final : public virtio::VirtioDevice {
 public:
  ConfigDevice() : config_(12) {
    config_.DeclareField(0, 2);
    config_.DeclareField(2, 2);
    config_.DeclareField(4, 4);
    config_.DeclareField(8, 4);
    config_.SetU16(0, 0x1234);
    config_.SetU16(2, 0x5678);
    config_.SetU32(4, 0x9abcdef0);
  }
  virtio::DeviceType type() const override { return type_; }
  absl::Span<const uint16_t> queue_max_sizes() const override { return sizes_; }
  Features offered_features() const override {
    return Features::Of({0, 5, virtio::kFEventIdx, virtio::kFVersion1});
  }
  uint32_t config_size() const override { return 12; }
  void ReadConfig(uint32_t offset, absl::Span<uint8_t> data,
                  virtio::Endian endian) override {
    config_.Read(offset, data, endian);
  }
  void WriteConfig(uint32_t offset, absl::Span<const uint8_t> data,
                   virtio::Endian endian) override {
    if (offset < 8 || offset >= 12 || data.size() > 12 - offset) return;
    uint8_t le[4];
    config_.DecodeWrite(offset, data, endian, absl::MakeSpan(le, data.size()));
    for (size_t i = 0; i < data.size(); ++i) config_.SetU8(offset + i, le[i]);
  }
  uint32_t config_generation() const override { return generation_; }
  absl::Status Activate(virtio::DeviceContext& context) override {
    context_ = &context;
    ++activations;
    return absl::OkStatus();
  }
  void Reset() override {
    context_ = nullptr;
    ++resets;
  }
  void ProcessQueue(uint16_t index) override {
    processed.push_back(index);
    if (context_ == nullptr) return;
    virtio::SplitQueue* q = context_->queue(index);
    if (q == nullptr) return;
    bool added = false;
    while (auto chain = q->Pop()) {
      q->AddUsed(chain->head(), 0);
      added = true;
    }
    if (added) context_->NotifyUsed(index);
  }
  void ChangeConfig() {
    ++generation_;
    config_.SetU16(0, 0x4321);
    if (context_ != nullptr) context_->NotifyConfigChange();
  }
  void set_type(virtio::DeviceType t) { type_ = t; }
  uint32_t emerg_wr() const { return config_.U32(8); }

  int activations = 0, resets = 0;
  std::vector<uint16_t> processed;

 private:
  virtio::DeviceType type_ = virtio::DeviceType::kConsole;
  const uint16_t sizes_[2] = {64, 32};
  virtio::ConfigSpace config_;
  virtio::DeviceContext* context_ = nullptr;
  uint32_t generation_ = 0;
};

struct Sinks : MsiSink, IntxSink {
  void SendMsi(uint64_t address, uint32_t data) override {
    msis.emplace_back(address, data);
  }
  void SetIntx(bool asserted) override { intx = asserted; }
  std::vector<std::pair<uint64_t, uint32_t>> msis;
  bool intx = false;
};

class VirtioPciTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto mem = GuestMemoryMmap::Create({{.guest_base = 0, .size = kMemSize}});
    ASSERT_OK(mem.status());
    memory_ = *std::move(mem);
  }

  void Make(VirtioPciMode mode, VirtioPciFunction::Options o = {}) {
    o.mode = mode;
    auto fn = VirtioPciFunction::Create(dev_, *memory_, o);
    ASSERT_OK(fn.status());
    fn_ = *std::move(fn);
    fn_->set_msi_sink(&sinks_);
    fn_->set_intx_sink(&sinks_);
  }

  uint64_t R(int bar, uint64_t offset, size_t width) {
    uint8_t b[8] = {};
    fn_->BarRead(bar, offset, absl::MakeSpan(b, width));
    uint64_t v = 0;
    for (size_t i = 0; i < width; ++i) v |= uint64_t{b[i]} << (8 * i);
    return v;
  }
  void W(int bar, uint64_t offset, uint64_t value, size_t width) {
    uint8_t b[8];
    for (size_t i = 0; i < width; ++i)
      b[i] = static_cast<uint8_t>(value >> (8 * i));
    fn_->BarWrite(bar, offset, absl::MakeConstSpan(b, width));
  }
  uint64_t L(uint64_t off, size_t w) { return R(kLegacyBar, off, w); }
  void LW(uint64_t off, uint64_t v, size_t w) { W(kLegacyBar, off, v, w); }
  uint64_t C(uint64_t off, size_t w) {
    return R(kModernBar, kModernCommonOffset + off, w);
  }
  void CW(uint64_t off, uint64_t v, size_t w) {
    W(kModernBar, kModernCommonOffset + off, v, w);
  }
  uint32_t Cfg(uint32_t off, size_t w) {
    uint8_t b[4] = {};
    fn_->ConfigRead(off, absl::MakeSpan(b, w));
    uint32_t v = 0;
    for (size_t i = 0; i < w; ++i) v |= uint32_t{b[i]} << (8 * i);
    return v;
  }
  void SetCfg(uint32_t off, uint32_t v, size_t w) {
    uint8_t b[4];
    for (size_t i = 0; i < w; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    fn_->ConfigWrite(off, absl::MakeConstSpan(b, w));
  }
  void SetMsix(bool on) {
    const uint32_t cap = fn_->msix()->capability_offset();
    const uint32_t ctrl = Cfg(cap + 2, 2);
    SetCfg(cap + 2, on ? ctrl | kMsixEnable : ctrl & ~kMsixEnable, 2);
  }
  // Unmasks MSI-X vector v with data 0x100 + v.
  void ProgramVector(uint16_t v) {
    W(kMsixBar, 16 * v + 0, 0xfee00000, 4);
    W(kMsixBar, 16 * v + 8, 0x100 + v, 4);
    W(kMsixBar, 16 * v + 12, 0, 4);
  }
  // The offset of the first vendor capability of cfg_type `type`, or 0.
  uint32_t FindCap(uint8_t type) {
    uint32_t pos = Cfg(0x34, 1);
    for (int i = 0; i < 48 && pos != 0; ++i) {
      if (Cfg(pos, 1) == kCapIdVendor && Cfg(pos + 3, 1) == type) return pos;
      pos = Cfg(pos + 1, 1);
    }
    return 0;
  }
  // Modern probe up to FEATURES_OK with VERSION_1 (+ extra in word 0).
  void ModernFeatures(uint32_t word0 = 0) {
    CW(kCommonStatus, kAck, 1);
    CW(kCommonStatus, kAck | kDrv, 1);
    CW(kCommonGfSelect, 0, 4);
    CW(kCommonGf, word0, 4);
    CW(kCommonGfSelect, 1, 4);
    CW(kCommonGf, 1, 4);
    CW(kCommonStatus, kAck | kDrv | kFeatOk, 1);
    ASSERT_EQ(C(kCommonStatus, 1), kAck | kDrv | kFeatOk);
  }
  // Modern queue q with a 16-entry ring at `base`.
  DriverQueue ModernQueue(uint16_t q, uint64_t base) {
    DriverQueue::Layout l{
        .size = 16, .desc = base, .avail = base + 0x100, .used = base + 0x200};
    CW(kCommonQueueSelect, q, 2);
    CW(kCommonQueueSize, 16, 2);
    CW(kCommonQueueDesc, l.desc, 8);
    CW(kCommonQueueDriver, l.avail, 8);
    CW(kCommonQueueDevice, l.used, 8);
    CW(kCommonQueueEnable, 1, 2);
    return DriverQueue(*memory_, l);
  }

  ConfigDevice dev_;
  std::unique_ptr<GuestMemoryMmap> memory_;
  Sinks sinks_;
  std::unique_ptr<VirtioPciFunction> fn_;
};

// ---------------------------------------------------------------------------
// Identity.

TEST_F(VirtioPciTest, IdsPerMode) {
  virtio::RngDevice rng;
  struct {
    VirtioPciMode mode;
    uint16_t device, subsys;
    uint8_t rev;
  } cases[] = {{VirtioPciMode::kModern, 0x1044, 0x44, 1},
               {VirtioPciMode::kTransitional, 0x1005, 4, 0},
               {VirtioPciMode::kLegacy, 0x1005, 4, 0}};
  for (const auto& c : cases) {
    auto fn = VirtioPciFunction::Create(rng, *memory_, {.mode = c.mode});
    ASSERT_OK(fn.status());
    ConfigSpace& cs = (*fn)->config_space();
    EXPECT_EQ(cs.Get16(0x00), 0x1af4);
    EXPECT_EQ(cs.Get16(0x02), c.device);
    EXPECT_EQ(cs.Get8(0x08), c.rev);
    EXPECT_EQ(cs.Get16(0x2c), 0x1af4);
    EXPECT_EQ(cs.Get16(0x2e), c.subsys);
    EXPECT_EQ(cs.Get8(0x3d), 1);  // INTA
    EXPECT_EQ(cs.bar(kLegacyBar).type == BarType::kIo,
              c.mode != VirtioPciMode::kModern);
    EXPECT_EQ(cs.bar(kModernBar).type == BarType::kMemory64,
              c.mode != VirtioPciMode::kLegacy);
    EXPECT_EQ(cs.bar(kMsixBar).type, BarType::kMemory32);
  }
  EXPECT_EQ(TransitionalDeviceId(virtio::DeviceType::kNet), 0x1000);
  EXPECT_EQ(TransitionalDeviceId(virtio::DeviceType::kBlock), 0x1001);
  EXPECT_EQ(TransitionalDeviceId(virtio::DeviceType::kBalloon), 0x1002);
  EXPECT_EQ(TransitionalDeviceId(virtio::DeviceType::kConsole), 0x1003);
  EXPECT_EQ(TransitionalDeviceId(virtio::DeviceType::kScsi), 0x1004);
  EXPECT_EQ(TransitionalDeviceId(virtio::DeviceType::k9p), 0x1009);
  EXPECT_EQ(TransitionalDeviceId(virtio::DeviceType::kGpu), std::nullopt);
}

TEST_F(VirtioPciTest, TypeWithoutLegacyIdCannotBeTransitional) {
  dev_.set_type(virtio::DeviceType::kInput);
  EXPECT_THAT(VirtioPciFunction::Create(dev_, *memory_,
                                        {.mode = VirtioPciMode::kTransitional})
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(VirtioPciFunction::Create(dev_, *memory_,
                                        {.mode = VirtioPciMode::kLegacy})
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  auto fn = VirtioPciFunction::Create(dev_, *memory_,
                                      {.mode = VirtioPciMode::kModern});
  ASSERT_OK(fn.status());
  EXPECT_EQ((*fn)->config_space().Get16(0x02), 0x1040 + 18);
  EXPECT_THAT(VirtioPciFunction::Create(
                  dev_, *memory_,
                  {.mode = VirtioPciMode::kModern, .msix_vectors = 2049})
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// ---------------------------------------------------------------------------
// Legacy register file.

// Every offset and width 1, 2, 4 across the registers and the device config
// reads exactly the bytes it covers (seed 001's range intersection).
TEST_F(VirtioPciTest, LegacyPartialAndMisalignedReads) {
  for (bool msix : {false, true}) {
    Make(VirtioPciMode::kTransitional);
    if (msix) SetMsix(true);
    LW(kLegacyStatus, kAck | kDrv, 1);
    LW(kLegacyGuestFeatures, 0x21, 4);
    LW(kLegacyQueueSelect, 1, 2);
    LW(kLegacyQueuePfn, 0x40, 4);
    if (msix) {
      LW(kLegacyConfigVector, 1, 2);
      LW(kLegacyQueueVector, 2, 2);
    }
    const uint32_t base = msix ? 24 : 20;
    std::vector<uint8_t> image(base + 12 + 8, 0);
    auto put = [&](uint32_t off, uint64_t v, int w) {
      for (int i = 0; i < w; ++i)
        image[off + i] = static_cast<uint8_t>(v >> (8 * i));
    };
    put(0, 0x21 | 1u << 5 | 1u << virtio::kFEventIdx | 1u << 30, 4);
    put(4, 0x21, 4);
    put(8, 0x40, 4);
    put(12, 32, 2);
    put(14, 1, 2);
    put(18, kAck | kDrv, 1);
    if (msix) {
      put(20, 1, 2);
      put(22, 2, 2);
    }
    put(base + 0, 0x1234, 2);
    put(base + 2, 0x5678, 2);
    put(base + 4, 0x9abcdef0, 4);
    for (uint32_t off = 0; off + 1 < image.size(); ++off) {
      for (size_t w : {1u, 2u, 4u}) {
        if (off + w > image.size()) continue;
        if (off + w > fn_->config_space().bar(kLegacyBar).size) continue;
        uint64_t want = 0;
        for (size_t i = 0; i < w; ++i)
          want |= uint64_t{image[off + i]} << (8 * i);
        EXPECT_EQ(L(off, w), want)
            << "msix " << msix << " off " << off << " width " << w;
      }
    }
  }
}

TEST_F(VirtioPciTest, LegacyWritesOnlyAtTheirOffsetAndWidth) {
  Make(VirtioPciMode::kTransitional);
  LW(kLegacyStatus, kAck | kDrv, 1);
  // Partial and misaligned writes are dropped.
  LW(kLegacyGuestFeatures, 0x21, 1);
  LW(kLegacyGuestFeatures, 0x21, 2);
  LW(kLegacyGuestFeatures + 1, 0x21, 2);
  EXPECT_EQ(L(kLegacyGuestFeatures, 4), 0u);
  LW(kLegacyGuestFeatures, 0x21, 4);
  EXPECT_EQ(L(kLegacyGuestFeatures, 4), 0x21u);
  LW(kLegacyHostFeatures, 0, 4);  // read-only
  EXPECT_NE(L(kLegacyHostFeatures, 4), 0u);
  LW(kLegacyQueueSelect, 1, 1);
  LW(kLegacyQueueSelect, 1, 4);
  EXPECT_EQ(L(kLegacyQueueSelect, 2), 0u);
  LW(kLegacyQueueSelect, 1, 2);
  EXPECT_EQ(L(kLegacyQueueSelect, 2), 1u);
  LW(kLegacyQueueNum, 8, 2);  // read-only
  EXPECT_EQ(L(kLegacyQueueNum, 2), 32u);
  LW(kLegacyQueuePfn, 0x40, 2);
  LW(kLegacyQueuePfn + 2, 0x40, 2);
  EXPECT_EQ(L(kLegacyQueuePfn, 4), 0u);
  EXPECT_FALSE(fn_->state().queue_enabled(1));
  LW(kLegacyStatus, kAck | kDrv | kDrvOk, 2);  // status is one byte
  LW(kLegacyStatus - 1, 0x0700, 2);
  EXPECT_EQ(L(kLegacyStatus, 1), kAck | kDrv);
  LW(kLegacyIsr, 0xff, 1);  // read-only
  EXPECT_EQ(fn_->isr(), 0);
  // Without MSI-X, 20 and 22 are config space, not vectors.
  LW(kLegacyConfigVector, 0, 2);
  EXPECT_EQ(fn_->state().config_vector(), virtio::DeviceState::kNoVector);
  EXPECT_EQ(L(20, 2), 0x1234u);
  // Device config (from 20): the device decides what a write changes; this
  // one lets only emerg_wr (config 8 = BAR offset 28) change.
  LW(26, 0xaabbccdd, 4);  // config 6..9: the device ignores it
  EXPECT_EQ(L(26, 2), 0x9abcu);
  EXPECT_EQ(dev_.emerg_wr(), 0u);
  LW(28, 0x11223344, 4);
  EXPECT_EQ(dev_.emerg_wr(), 0x11223344u);
  // A write straddling a register and the config: the register part is a
  // partial write (dropped), the config part goes to the device.
  LW(18, 0x55660707, 4);  // status, ISR, config 0..1
  EXPECT_EQ(L(kLegacyStatus, 1), kAck | kDrv);
  EXPECT_EQ(L(20, 2), 0x1234u);      // cols is read-only for this device
  LW(26, 0x00000000ffffffffull, 8);  // config 6..13 (8 bytes): ignored
  EXPECT_EQ(dev_.emerg_wr(), 0x11223344u);
  LW(16, 0x11223344, 4);  // a 4-byte write over notify + status: dropped
  EXPECT_EQ(L(kLegacyStatus, 1), kAck | kDrv);
  EXPECT_TRUE(dev_.processed.empty());
}

TEST_F(VirtioPciTest, LegacyQueueSelectOutOfRange) {
  Make(VirtioPciMode::kLegacy);
  SetMsix(true);
  LW(kLegacyStatus, kAck | kDrv, 1);
  for (uint16_t sel : {2, 7, 0xffff}) {
    LW(kLegacyQueueSelect, sel, 2);
    EXPECT_EQ(L(kLegacyQueueSelect, 2), sel);
    EXPECT_EQ(L(kLegacyQueueNum, 2), 0u);
    EXPECT_EQ(L(kLegacyQueuePfn, 4), 0u);
    LW(kLegacyQueuePfn, 0x40, 4);  // ignored, no crash
    EXPECT_EQ(L(kLegacyQueuePfn, 4), 0u);
    LW(kLegacyQueueVector, 0, 2);
    EXPECT_EQ(L(kLegacyQueueVector, 2), 0xffffu);
    LW(kLegacyQueueNotify, sel, 2);
  }
  EXPECT_FALSE(fn_->state().queue_enabled(0));
  EXPECT_EQ(L(kLegacyStatus, 1), kAck | kDrv);
  EXPECT_TRUE(dev_.processed.empty());
}

TEST_F(VirtioPciTest, LegacyPfnSetsLayoutAndZeroResets) {
  Make(VirtioPciMode::kLegacy);
  LW(kLegacyStatus, kAck | kDrv, 1);
  LW(kLegacyGuestFeatures, 1u << virtio::kFEventIdx, 4);
  LW(kLegacyQueueSelect, 0, 2);
  LW(kLegacyQueuePfn, 0x20, 4);
  EXPECT_EQ(L(kLegacyQueuePfn, 4), 0x20u);
  const virtio::SplitQueue& q = fn_->state().queue_config(0);
  EXPECT_EQ(q.size(), 64);
  EXPECT_EQ(q.desc_table(), 0x20000u);
  EXPECT_EQ(q.avail_ring(), 0x20000u + 16 * 64);
  EXPECT_EQ(q.used_ring(), 0x21000u);  // 4096-aligned
  EXPECT_TRUE(fn_->state().queue_enabled(0));
  // Writing 0 resets the whole device, as QEMU does.
  LW(kLegacyQueuePfn, 0, 4);
  EXPECT_EQ(L(kLegacyStatus, 1), 0u);
  EXPECT_EQ(L(kLegacyGuestFeatures, 4), 0u);
  EXPECT_FALSE(fn_->state().queue_enabled(0));
  EXPECT_EQ(L(kLegacyQueuePfn, 4), 0u);
}

TEST_F(VirtioPciTest, LegacyStatusZeroResetsAndStopsTheDevice) {
  Make(VirtioPciMode::kLegacy);
  LW(kLegacyStatus, kAck | kDrv, 1);
  LW(kLegacyQueueSelect, 1, 2);
  LW(kLegacyQueuePfn, 0x20, 4);
  LW(kLegacyStatus, kAck | kDrv | kDrvOk, 1);
  ASSERT_TRUE(fn_->state().active());
  EXPECT_EQ(dev_.activations, 1);
  LW(kLegacyStatus, 0, 1);
  EXPECT_FALSE(fn_->state().active());
  EXPECT_EQ(dev_.resets, 1);
  EXPECT_EQ(L(kLegacyQueueSelect, 2), 0u);
  LW(kLegacyQueueSelect, 1, 2);
  EXPECT_EQ(L(kLegacyQueuePfn, 4), 0u);
}

TEST_F(VirtioPciTest, LegacyAckDriverSetsBusMaster) {
  Make(VirtioPciMode::kTransitional);
  EXPECT_FALSE(fn_->config_space().bus_master_enabled());
  LW(kLegacyStatus, kAck, 1);
  EXPECT_FALSE(fn_->config_space().bus_master_enabled());
  LW(kLegacyStatus, kAck | kDrv, 1);
  EXPECT_TRUE(fn_->config_space().bus_master_enabled());
  // Through the modern status register: no quirk.
  Make(VirtioPciMode::kTransitional);
  CW(kCommonStatus, kAck, 1);
  CW(kCommonStatus, kAck | kDrv, 1);
  EXPECT_FALSE(fn_->config_space().bus_master_enabled());
}

TEST_F(VirtioPciTest, LegacyBadFeatureGivesNoFeatures) {
  Make(VirtioPciMode::kLegacy);
  EXPECT_EQ(L(kLegacyHostFeatures, 4) >> 30 & 1, 1u);
  LW(kLegacyStatus, kAck | kDrv, 1);
  LW(kLegacyGuestFeatures, 1u << 30 | 0x21, 4);
  EXPECT_EQ(L(kLegacyGuestFeatures, 4), 0u);
  EXPECT_TRUE(fn_->state().driver_features().empty());
}

TEST_F(VirtioPciTest, LegacyFeatureWriteMakesALegacyDriver) {
  Make(VirtioPciMode::kTransitional);
  CW(kCommonStatus, kAck | kDrv, 1);
  CW(kCommonGfSelect, 1, 4);
  CW(kCommonGf, 1, 4);  // VERSION_1
  EXPECT_FALSE(fn_->state().legacy());
  LW(kLegacyGuestFeatures, 0x20, 4);
  EXPECT_TRUE(fn_->state().legacy());
  EXPECT_EQ(fn_->state().DriverFeatures(1), 0u);
  EXPECT_EQ(fn_->state().DriverFeatures(0), 0x20u);
  EXPECT_TRUE(fn_->used_legacy_interface());
  EXPECT_TRUE(fn_->used_modern_interface());
}

TEST_F(VirtioPciTest, LegacyVectorsOnlyWithMsix) {
  Make(VirtioPciMode::kLegacy);  // 3 vectors: 2 queues + config
  ASSERT_EQ(fn_->msix()->num_vectors(), 3);
  SetMsix(true);
  EXPECT_EQ(L(kLegacyConfigVector, 2), 0xffffu);
  LW(kLegacyConfigVector, 2, 2);
  EXPECT_EQ(L(kLegacyConfigVector, 2), 2u);
  LW(kLegacyConfigVector, 3, 2);  // out of range
  EXPECT_EQ(L(kLegacyConfigVector, 2), 0xffffu);
  LW(kLegacyQueueSelect, 1, 2);
  LW(kLegacyQueueVector, 1, 2);
  EXPECT_EQ(L(kLegacyQueueVector, 2), 1u);
  EXPECT_EQ(fn_->state().queue_vector(1), 1);
  LW(kLegacyQueueVector, 0x8000, 2);
  EXPECT_EQ(L(kLegacyQueueVector, 2), 0xffffu);
  LW(kLegacyQueueVector, 0, 1);  // partial: dropped
  EXPECT_EQ(L(kLegacyQueueVector, 2), 0xffffu);
  EXPECT_EQ(L(24, 2), 0x1234u);
  SetMsix(false);
  EXPECT_EQ(L(20, 2), 0x1234u);
  EXPECT_EQ(L(22, 2), 0x5678u);
}

TEST_F(VirtioPciTest, LegacyConfigIsGuestNative) {
  Make(VirtioPciMode::kLegacy, {.guest_endian = virtio::Endian::kBig});
  EXPECT_EQ(L(20, 1), 0x12u);  // big-endian: high byte first
  EXPECT_EQ(L(21, 1), 0x34u);
  EXPECT_EQ(L(24, 4), 0xf0debc9au);
  // Registers stay little-endian.
  EXPECT_EQ(L(kLegacyQueueNum, 1), 64u);
}

TEST_F(VirtioPciTest, IsrReadClearsAndLowersIntx) {
  Make(VirtioPciMode::kTransitional);
  LW(kLegacyStatus, kAck | kDrv, 1);
  LW(kLegacyQueueSelect, 0, 2);
  LW(kLegacyQueuePfn, 0x20, 4);
  LW(kLegacyStatus, kAck | kDrv | kDrvOk, 1);
  ASSERT_TRUE(fn_->state().active());
  DriverQueue dq(*memory_, DriverQueue::LegacyLayout(64, 0x20000, 4096));
  ASSERT_OK(dq.AddChain({{0x40000, 16, true}}).status());
  LW(kLegacyQueueNotify, 0, 2);
  EXPECT_EQ(dev_.processed, std::vector<uint16_t>{0});
  EXPECT_TRUE(sinks_.intx);
  EXPECT_EQ(fn_->isr(), 1);
  // A read of a neighbouring register leaves it; a read covering 19 clears.
  EXPECT_EQ(L(kLegacyStatus, 1), kAck | kDrv | kDrvOk);
  EXPECT_TRUE(sinks_.intx);
  EXPECT_EQ(L(kLegacyStatus, 2), (kAck | kDrv | kDrvOk) | 1u << 8);
  EXPECT_FALSE(sinks_.intx);
  EXPECT_EQ(L(kLegacyIsr, 1), 0u);
  // Config change: bit 1, through the modern ISR region this time.
  dev_.ChangeConfig();
  EXPECT_TRUE(sinks_.intx);
  EXPECT_EQ(R(kModernBar, kModernIsrOffset, 1), 2u);
  EXPECT_FALSE(sinks_.intx);
  EXPECT_EQ(R(kModernBar, kModernIsrOffset, 1), 0u);
  // INTx Disable masks the pin but not the level.
  SetCfg(kRegCommand, kCommandIntxDisable, 2);
  dev_.ChangeConfig();
  EXPECT_FALSE(sinks_.intx);
  EXPECT_TRUE(fn_->intx_level());
  EXPECT_EQ(L(kLegacyIsr, 1), 2u);
  EXPECT_FALSE(fn_->intx_level());
}

TEST_F(VirtioPciTest, MsixDeliversQueueAndConfigVectors) {
  Make(VirtioPciMode::kModern);
  SetMsix(true);
  ProgramVector(0);
  ProgramVector(1);
  ModernFeatures();
  CW(kCommonMsixConfig, 0, 2);
  DriverQueue dq = ModernQueue(0, 0x20000);
  CW(kCommonQueueMsixVector, 1, 2);
  EXPECT_EQ(C(kCommonQueueMsixVector, 2), 1u);
  CW(kCommonStatus, kAck | kDrv | kFeatOk | kDrvOk, 1);
  ASSERT_TRUE(fn_->state().active());
  ASSERT_OK(dq.AddChain({{0x40000, 16, true}}).status());
  W(kModernBar, kModernNotifyOffset, 0, 2);
  ASSERT_EQ(sinks_.msis.size(), 1u);
  EXPECT_EQ(sinks_.msis[0].second, 0x101u);
  EXPECT_FALSE(sinks_.intx);
  EXPECT_EQ(fn_->isr(), 0);
  dev_.ChangeConfig();
  ASSERT_EQ(sinks_.msis.size(), 2u);
  EXPECT_EQ(sinks_.msis[1].second, 0x100u);
  // The config bit is set with MSI-X too (§4.1.4.5.1), without INTx.
  EXPECT_EQ(fn_->isr(), 2);
  EXPECT_FALSE(sinks_.intx);
  EXPECT_FALSE(fn_->intx_level());
  EXPECT_EQ(R(kModernBar, kModernIsrOffset, 1), 2u);
  EXPECT_EQ(fn_->isr(), 0);
  EXPECT_EQ(C(kCommonCfgGeneration, 1), 1u);
  // NO_VECTOR: no interrupt at all while MSI-X is on.
  CW(kCommonMsixConfig, 0xffff, 2);
  dev_.ChangeConfig();
  EXPECT_EQ(sinks_.msis.size(), 2u);
  EXPECT_FALSE(sinks_.intx);
  EXPECT_EQ(C(kCommonCfgGeneration, 1), 2u);
}

// ---------------------------------------------------------------------------
// Modern common configuration.

TEST_F(VirtioPciTest, CommonFieldWidths) {
  Make(VirtioPciMode::kModern);
  // 32-bit selects take 32-bit writes only.
  CW(kCommonDfSelect, 1, 2);
  EXPECT_EQ(C(kCommonDfSelect, 4), 0u);
  CW(kCommonDfSelect, 1, 4);
  EXPECT_EQ(C(kCommonDfSelect, 4), 1u);
  EXPECT_EQ(C(kCommonDf, 4), 1u);  // VERSION_1 is bit 32
  CW(kCommonDfSelect, 0, 4);
  EXPECT_EQ(C(kCommonDf, 4), 1u | 1u << 5 | 1u << virtio::kFEventIdx);
  EXPECT_EQ(C(kCommonDf, 1), 0x21u);  // a byte of the field
  CW(kCommonDfSelect, 7, 4);
  EXPECT_EQ(C(kCommonDf, 4), 0u);
  CW(kCommonDf, 0xffffffff, 4);  // read-only
  // num_queues is read-only.
  EXPECT_EQ(C(kCommonNumQueues, 2), 2u);
  CW(kCommonNumQueues, 9, 2);
  EXPECT_EQ(C(kCommonNumQueues, 2), 2u);
  // Status is one byte; queue_select two.
  CW(kCommonStatus, kAck, 2);
  EXPECT_EQ(C(kCommonStatus, 1), 0u);
  CW(kCommonQueueSelect, 1, 4);
  EXPECT_EQ(C(kCommonQueueSelect, 2), 0u);
  CW(kCommonQueueSelect, 1, 2);
  EXPECT_EQ(C(kCommonQueueSize, 2), 32u);
  // A 4-byte read across queue_select and queue_size.
  EXPECT_EQ(C(kCommonQueueSelect, 4), 1u | 32u << 16);
  // 64-bit fields: as 8 bytes, as two halves in either order; misaligned and
  // 2-byte writes are dropped.
  CW(kCommonQueueDesc, 0x1122334455667780ull, 8);
  EXPECT_EQ(C(kCommonQueueDesc, 8), 0x1122334455667780ull);
  EXPECT_EQ(C(kCommonQueueDesc, 4), 0x55667780u);
  EXPECT_EQ(C(kCommonQueueDesc + 4, 4), 0x11223344u);
  CW(kCommonQueueDriver + 4, 0xaabbccdd, 4);
  CW(kCommonQueueDriver, 0x10000, 4);
  EXPECT_EQ(C(kCommonQueueDriver, 8), 0xaabbccdd00010000ull);
  CW(kCommonQueueDevice, 0x2000, 4);
  CW(kCommonQueueDevice + 4, 0, 4);
  EXPECT_EQ(C(kCommonQueueDevice, 8), 0x2000u);
  CW(kCommonQueueDevice + 2, 0xffff, 2);
  CW(kCommonQueueDevice + 1, 0xff, 1);
  CW(kCommonQueueDevice, 0xffff, 2);
  EXPECT_EQ(C(kCommonQueueDevice, 8), 0x2000u);
  EXPECT_EQ(fn_->state().queue_config(1).used_ring(), 0x2000u);
  // queue_notify_off = queue index with multiplier 4; notify data likewise.
  EXPECT_EQ(C(kCommonQueueNotifyOff, 2), 1u);
  EXPECT_EQ(C(kCommonQueueNotifyData, 2), 1u);
  // Past the end of the structure: all-ones (a hole in BAR 4).
  EXPECT_EQ(R(kModernBar, kCommonCfgSize, 4), 0xffffffffu);
  EXPECT_EQ(R(kModernBar, kCommonCfgSize - 2, 4), 0xffffffffu);
  // 8-byte reads of 32-bit fields see the bytes they cover.
  CW(kCommonDfSelect, 7, 4);
  EXPECT_EQ(C(kCommonDfSelect, 8), 7u);  // select 7, feature word 0
}

TEST_F(VirtioPciTest, QueueEnableOnlyWithOne) {
  Make(VirtioPciMode::kModern);
  ModernFeatures();
  CW(kCommonQueueSelect, 0, 2);
  CW(kCommonQueueEnable, 2, 2);
  EXPECT_EQ(C(kCommonQueueEnable, 2), 0u);
  CW(kCommonQueueEnable, 1, 1);  // wrong width
  EXPECT_EQ(C(kCommonQueueEnable, 2), 0u);
  CW(kCommonQueueEnable, 1, 2);
  EXPECT_EQ(C(kCommonQueueEnable, 2), 1u);
  CW(kCommonQueueEnable, 0, 2);  // "MUST NOT write a 0": ignored
  EXPECT_EQ(C(kCommonQueueEnable, 2), 1u);
  // Once enabled, the queue's configuration is frozen.
  CW(kCommonQueueSize, 8, 2);
  EXPECT_EQ(C(kCommonQueueSize, 2), 64u);
  CW(kCommonQueueDesc, 0x5000, 8);
  EXPECT_EQ(C(kCommonQueueDesc, 8), 0u);
}

TEST_F(VirtioPciTest, QueueSizeLoweredAndChecked) {
  Make(VirtioPciMode::kModern);
  ModernFeatures();
  DriverQueue dq = ModernQueue(0, 0x20000);  // lowered from 64 to 16
  EXPECT_EQ(fn_->state().queue_config(0).size(), 16);
  CW(kCommonStatus, kAck | kDrv | kFeatOk | kDrvOk, 1);
  EXPECT_TRUE(fn_->state().active());
  EXPECT_EQ(C(kCommonStatus, 1) & kNeedsReset, 0u);
  ASSERT_OK(dq.AddChain({{0x40000, 4, true}}).status());
  W(kModernBar, kModernNotifyOffset, 0, 2);
  EXPECT_EQ(dq.PopUsed().has_value(), true);

  // Not a power of two, or above the maximum: NEEDS_RESET at DRIVER_OK.
  for (uint16_t size : {24, 128}) {
    CW(kCommonStatus, 0, 1);
    ModernFeatures();
    CW(kCommonQueueSelect, 0, 2);
    CW(kCommonQueueSize, size, 2);
    CW(kCommonQueueDesc, 0x20000, 8);
    CW(kCommonQueueDriver, 0x21000, 8);
    CW(kCommonQueueDevice, 0x22000, 8);
    CW(kCommonQueueEnable, 1, 2);
    CW(kCommonStatus, kAck | kDrv | kFeatOk | kDrvOk, 1);
    EXPECT_FALSE(fn_->state().active()) << size;
    EXPECT_NE(C(kCommonStatus, 1) & kNeedsReset, 0u) << size;
  }
}

TEST_F(VirtioPciTest, CommonQueueSelectOutOfRange) {
  Make(VirtioPciMode::kModern);
  SetMsix(true);
  ModernFeatures();
  for (uint16_t sel : {2, 100, 0xffff}) {
    CW(kCommonQueueSelect, sel, 2);
    EXPECT_EQ(C(kCommonQueueSelect, 2), sel);
    EXPECT_EQ(C(kCommonQueueSize, 2), 0u);
    EXPECT_EQ(C(kCommonQueueEnable, 2), 0u);
    EXPECT_EQ(C(kCommonQueueMsixVector, 2), 0xffffu);
    EXPECT_EQ(C(kCommonQueueDesc, 8), 0u);
    CW(kCommonQueueSize, 16, 2);
    CW(kCommonQueueDesc, 0x1000, 8);
    CW(kCommonQueueMsixVector, 0, 2);
    CW(kCommonQueueEnable, 1, 2);
    EXPECT_EQ(C(kCommonQueueSize, 2), 0u);
    EXPECT_EQ(C(kCommonQueueMsixVector, 2), 0xffffu);
    W(kModernBar, kModernNotifyOffset, sel, 2);
  }
  EXPECT_FALSE(fn_->state().queue_enabled(0));
  EXPECT_FALSE(fn_->state().queue_enabled(1));
}

TEST_F(VirtioPciTest, VectorOutOfRangeReadsNoVector) {
  Make(VirtioPciMode::kModern, {.msix_vectors = 2});
  CW(kCommonMsixConfig, 1, 2);
  EXPECT_EQ(C(kCommonMsixConfig, 2), 1u);
  CW(kCommonMsixConfig, 2, 2);
  EXPECT_EQ(C(kCommonMsixConfig, 2), 0xffffu);
  CW(kCommonQueueSelect, 1, 2);
  CW(kCommonQueueMsixVector, 0, 2);
  EXPECT_EQ(C(kCommonQueueMsixVector, 2), 0u);
  CW(kCommonQueueMsixVector, 5, 2);
  EXPECT_EQ(C(kCommonQueueMsixVector, 2), 0xffffu);
  CW(kCommonQueueMsixVector, 0, 4);  // wrong width: dropped
  EXPECT_EQ(C(kCommonQueueMsixVector, 2), 0xffffu);
}

TEST_F(VirtioPciTest, StatusZeroResetsSelectors) {
  Make(VirtioPciMode::kModern);
  CW(kCommonDfSelect, 1, 4);
  CW(kCommonGfSelect, 1, 4);
  CW(kCommonQueueSelect, 1, 2);
  CW(kCommonStatus, kAck, 1);
  CW(kCommonStatus, 0, 1);
  EXPECT_EQ(C(kCommonDfSelect, 4), 0u);
  EXPECT_EQ(C(kCommonGfSelect, 4), 0u);
  EXPECT_EQ(C(kCommonQueueSelect, 2), 0u);
  EXPECT_EQ(C(kCommonStatus, 1), 0u);
}

TEST_F(VirtioPciTest, FeaturesOkRefusedForUnofferedFeature) {
  Make(VirtioPciMode::kModern);
  CW(kCommonStatus, kAck | kDrv, 1);
  CW(kCommonGfSelect, 0, 4);
  CW(kCommonGf, 1u << 3, 4);  // not offered
  CW(kCommonGfSelect, 1, 4);
  CW(kCommonGf, 1, 4);
  CW(kCommonStatus, kAck | kDrv | kFeatOk, 1);
  EXPECT_EQ(C(kCommonStatus, 1), kAck | kDrv);
}

TEST_F(VirtioPciTest, ModernOnlyRefusesLegacyDriver) {
  Make(VirtioPciMode::kModern);
  CW(kCommonStatus, kAck | kDrv, 1);
  CW(kCommonGfSelect, 0, 4);
  CW(kCommonGf, 1u << 5, 4);  // no VERSION_1
  CW(kCommonStatus, kAck | kDrv | kFeatOk, 1);
  EXPECT_EQ(C(kCommonStatus, 1), kAck | kDrv);
}

TEST_F(VirtioPciTest, EnableBeforeAddressesNeedsReset) {
  // Guest memory that does not start at 0: the unset addresses (0) are not
  // memory, so DRIVER_OK fails with NEEDS_RESET.
  auto mem =
      GuestMemoryMmap::Create({{.guest_base = 1 << 20, .size = 1 << 20}});
  ASSERT_OK(mem.status());
  memory_ = *std::move(mem);
  Make(VirtioPciMode::kModern);
  ModernFeatures();
  CW(kCommonQueueSelect, 0, 2);
  CW(kCommonQueueEnable, 1, 2);
  CW(kCommonStatus, kAck | kDrv | kFeatOk | kDrvOk, 1);
  EXPECT_FALSE(fn_->state().active());
  EXPECT_EQ(C(kCommonStatus, 1), kAck | kDrv | kFeatOk | kDrvOk | kNeedsReset);
  EXPECT_THAT(fn_->state().last_error(),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(dev_.activations, 0);
  // The driver resets and starts over.
  CW(kCommonStatus, 0, 1);
  EXPECT_EQ(C(kCommonStatus, 1), 0u);
}

TEST_F(VirtioPciTest, LegacyPfnBeyondMemoryNeedsReset) {
  Make(VirtioPciMode::kLegacy);
  LW(kLegacyStatus, kAck | kDrv, 1);
  LW(kLegacyQueueSelect, 0, 2);
  LW(kLegacyQueuePfn, kMemSize >> 12, 4);  // just past the end
  LW(kLegacyQueueSelect, 1, 2);
  LW(kLegacyQueuePfn, 0xffffffff, 4);  // 2^44 - 4096
  LW(kLegacyStatus, kAck | kDrv | kDrvOk, 1);
  EXPECT_FALSE(fn_->state().active());
  EXPECT_EQ(L(kLegacyStatus, 1), kAck | kDrv | kDrvOk | kNeedsReset);
  EXPECT_EQ(fn_->isr(), 2);  // a configuration change notification
  LW(kLegacyQueueNotify, 0, 2);
  EXPECT_TRUE(dev_.processed.empty());
  // A ring that starts inside memory but ends outside.
  LW(kLegacyStatus, 0, 1);
  LW(kLegacyStatus, kAck | kDrv, 1);
  LW(kLegacyQueuePfn, (kMemSize >> 12) - 1, 4);
  LW(kLegacyStatus, kAck | kDrv | kDrvOk, 1);
  EXPECT_NE(L(kLegacyStatus, 1) & kNeedsReset, 0u);
}

TEST_F(VirtioPciTest, DeviceConfigRegion) {
  Make(VirtioPciMode::kModern);
  EXPECT_EQ(R(kModernBar, kModernDeviceOffset, 2), 0x1234u);
  EXPECT_EQ(R(kModernBar, kModernDeviceOffset + 1, 2), 0x7812u);
  EXPECT_EQ(R(kModernBar, kModernDeviceOffset + 4, 4), 0x9abcdef0u);
  EXPECT_EQ(R(kModernBar, kModernDeviceOffset + 4, 8), 0x9abcdef0u);
  W(kModernBar, kModernDeviceOffset + 8, 0xcafef00d, 4);
  EXPECT_EQ(dev_.emerg_wr(), 0xcafef00du);
  // Past the device config (12 bytes): a hole.
  EXPECT_EQ(R(kModernBar, kModernDeviceOffset + 12, 4), 0xffffffffu);
  EXPECT_EQ(R(kModernBar, kModernDeviceOffset + 10, 4), 0xffffffffu);
  W(kModernBar, kModernDeviceOffset + 10, 0, 4);
  EXPECT_EQ(dev_.emerg_wr(), 0xcafef00du);
}

// ---------------------------------------------------------------------------
// Notify.

TEST_F(VirtioPciTest, NotifyLayouts) {
  struct {
    NotifyLayout layout;
    uint32_t mult;
  } cases[] = {{NotifyLayout::kMultiplier4, 4},
               {NotifyLayout::kShared, 0},
               {NotifyLayout::kPagePerQueue, 4096}};
  for (const auto& c : cases) {
    dev_.processed.clear();
    Make(VirtioPciMode::kModern, {.notify_layout = c.layout});
    const uint32_t cap = FindCap(kVirtioPciCapNotifyCfg);
    ASSERT_NE(cap, 0u);
    EXPECT_EQ(Cfg(cap + 2, 1), 20u);  // cap_len
    EXPECT_EQ(Cfg(cap + 4, 1), kModernBar);
    EXPECT_EQ(Cfg(cap + 8, 4), kModernNotifyOffset);
    EXPECT_EQ(Cfg(cap + 16, 4), c.mult);
    EXPECT_GE(Cfg(cap + 12, 4), c.mult + 2);
    ModernFeatures();
    ModernQueue(0, 0x20000);
    ModernQueue(1, 0x30000);
    CW(kCommonStatus, kAck | kDrv | kFeatOk | kDrvOk, 1);
    ASSERT_TRUE(fn_->state().active());
    CW(kCommonQueueSelect, 1, 2);
    const uint64_t off = C(kCommonQueueNotifyOff, 2) * uint64_t{c.mult};
    EXPECT_EQ(off, c.mult);
    W(kModernBar, kModernNotifyOffset + off, 1, 2);
    W(kModernBar, kModernNotifyOffset, 0, 2);
    EXPECT_EQ(dev_.processed, (std::vector<uint16_t>{1, 0}));
    // Doorbells agree.
    std::vector<Doorbell> bells = fn_->doorbells();
    ASSERT_EQ(bells.size(), 2u);
    EXPECT_EQ(bells[1].offset, kModernNotifyOffset + off);
    EXPECT_EQ(bells[1].datamatch.has_value(), c.mult == 0);
    if (c.mult == 4) {
      // A write between doorbells is no doorbell.
      W(kModernBar, kModernNotifyOffset + 2, 1, 2);
      EXPECT_EQ(dev_.processed.size(), 2u);
    }
    EXPECT_EQ(R(kModernBar, kModernNotifyOffset, 2), 0u);  // reads 0
  }
}

TEST_F(VirtioPciTest, NotificationData) {
  Make(VirtioPciMode::kTransitional, {.notification_data = true});
  CW(kCommonDfSelect, 1, 4);
  EXPECT_EQ(C(kCommonDf, 4) >> (virtio::kFNotificationData - 32) & 1, 1u);
  CW(kCommonStatus, kAck | kDrv, 1);
  CW(kCommonGfSelect, 1, 4);
  CW(kCommonGf, 1 | 1u << (virtio::kFNotificationData - 32), 4);
  CW(kCommonStatus, kAck | kDrv | kFeatOk, 1);
  ASSERT_EQ(C(kCommonStatus, 1), kAck | kDrv | kFeatOk);
  ModernQueue(0, 0x20000);
  ModernQueue(1, 0x30000);
  CW(kCommonStatus, kAck | kDrv | kFeatOk | kDrvOk, 1);
  ASSERT_TRUE(fn_->state().active());
  // {le16 vqn, le16 next_off}: the value names the queue.
  W(kModernBar, kModernNotifyOffset + 4, 1 | 5u << 16, 4);
  W(kModernBar, kModernNotifyOffset, 0 | 9u << 16, 4);
  EXPECT_EQ(dev_.processed, (std::vector<uint16_t>{1, 0}));
  for (const Doorbell& b : fn_->doorbells()) {
    if (b.bar == kModernBar) {
      EXPECT_EQ(b.width, 4u);
      EXPECT_FALSE(b.datamatch.has_value());
    } else {
      EXPECT_EQ(b.offset, kLegacyQueueNotify);
      EXPECT_EQ(b.datamatch, b.queue);
    }
  }
}

// ---------------------------------------------------------------------------
// The PCI configuration access window.

class PciCfgTest : public VirtioPciTest {
 protected:
  void SetUp() override {
    VirtioPciTest::SetUp();
    Make(VirtioPciMode::kTransitional);
    cap_ = FindCap(kVirtioPciCapPciCfg);
    ASSERT_NE(cap_, 0u);
  }
  void Window(uint8_t bar, uint32_t offset, uint32_t length) {
    SetCfg(cap_ + 4, bar, 1);
    SetCfg(cap_ + 8, offset, 4);
    SetCfg(cap_ + 12, length, 4);
  }
  uint32_t WinRead(uint8_t bar, uint32_t offset, uint32_t length) {
    Window(bar, offset, length);
    return Cfg(cap_ + 16, 4);
  }
  void WinWrite(uint8_t bar, uint32_t offset, uint32_t length, uint32_t v) {
    Window(bar, offset, length);
    SetCfg(cap_ + 16, v, 4);
  }
  uint32_t cap_ = 0;
};

TEST_F(PciCfgTest, ReachesEveryRegion) {
  EXPECT_EQ(Cfg(cap_ + 2, 1), 20u);
  EXPECT_EQ(WinRead(4, kCommonNumQueues, 2) & 0xffff, 2u);
  EXPECT_EQ(WinRead(4, kModernDeviceOffset, 4), 0x56781234u);
  EXPECT_EQ(WinRead(4, kModernDeviceOffset + 2, 2) & 0xffff, 0x5678u);
  EXPECT_EQ(WinRead(4, kModernDeviceOffset + 3, 1) & 0xff, 0x56u);
  EXPECT_EQ(WinRead(0, kLegacyQueueNum, 2) & 0xffff, 64u);
  // Writes: status through the common config, then a queue select, then
  // the legacy BAR.
  WinWrite(4, kCommonStatus, 1, kAck);
  EXPECT_EQ(fn_->state().status(), kAck);
  WinWrite(4, kCommonQueueSelect, 2, 1);
  EXPECT_EQ(C(kCommonQueueSelect, 2), 1u);
  WinWrite(0, kLegacyStatus, 1, kAck | kDrv);
  EXPECT_EQ(fn_->state().status(), kAck | kDrv);
  // MSI-X table in BAR 1 (vector 0's data).
  WinWrite(1, 8, 4, 0x77);
  EXPECT_EQ(fn_->msix()->message(0).data, 0x77u);
  // Notify through the window.
  ModernFeatures();
  ModernQueue(0, 0x20000);
  CW(kCommonStatus, kAck | kDrv | kFeatOk | kDrvOk, 1);
  ASSERT_TRUE(fn_->state().active());
  WinWrite(4, kModernNotifyOffset, 2, 0);
  EXPECT_EQ(dev_.processed, std::vector<uint16_t>{0});
  // The ISR through the window clears it.
  dev_.ChangeConfig();
  EXPECT_EQ(fn_->isr(), 2);
  EXPECT_EQ(WinRead(4, kModernIsrOffset, 1) & 0xff, 2u);
  EXPECT_EQ(fn_->isr(), 0);
}

TEST_F(PciCfgTest, StrictWindow) {
  // Length other than 1, 2, 4; misaligned; beyond the BAR; absent BAR; BAR
  // index out of range: all-ones, and writes do nothing.
  EXPECT_EQ(WinRead(4, kCommonNumQueues, 3), 0xffffffffu);
  EXPECT_EQ(WinRead(4, kCommonNumQueues, 8), 0xffffffffu);
  EXPECT_EQ(WinRead(4, kCommonNumQueues, 0), 0xffffffffu);
  EXPECT_EQ(WinRead(4, kCommonNumQueues + 1, 2), 0xffffffffu);
  EXPECT_EQ(WinRead(4, kCommonDf + 2, 4), 0xffffffffu);
  const uint64_t size = fn_->config_space().bar(kModernBar).size;
  EXPECT_EQ(WinRead(4, static_cast<uint32_t>(size), 4), 0xffffffffu);
  EXPECT_EQ(WinRead(4, 0xfffffffc, 4), 0xffffffffu);
  EXPECT_EQ(WinRead(2, 0, 4), 0xffffffffu);
  EXPECT_EQ(WinRead(6, 0, 4), 0xffffffffu);
  EXPECT_EQ(WinRead(0xff, 0, 4), 0xffffffffu);
  // A hole inside BAR 4 reads all-ones too (the BAR's own rule).
  EXPECT_EQ(WinRead(4, 0x800, 4), 0xffffffffu);
  WinWrite(4, kCommonStatus + 1, 2, kAck);
  WinWrite(4, kCommonStatus, 3, kAck);
  WinWrite(5, 0, 4, kAck);
  EXPECT_EQ(fn_->state().status(), 0);
  // The data register is plain storage between accesses; a read of the
  // cap's other fields does not trigger an access.
  Window(4, kCommonStatus, 1);
  EXPECT_EQ(Cfg(cap_ + 4, 1), 4u);
  EXPECT_EQ(Cfg(cap_ + 8, 4), kCommonStatus);
  EXPECT_EQ(Cfg(cap_ + 12, 4), 1u);
}

TEST_F(VirtioPciTest, CapabilityLayout) {
  Make(VirtioPciMode::kTransitional);
  struct {
    uint8_t type;
    uint64_t offset;
    uint32_t length;
  } want[] = {{kVirtioPciCapCommonCfg, kModernCommonOffset, kCommonCfgSize},
              {kVirtioPciCapIsrCfg, kModernIsrOffset, 1},
              {kVirtioPciCapDeviceCfg, kModernDeviceOffset, 12}};
  for (const auto& w : want) {
    const uint32_t cap = FindCap(w.type);
    ASSERT_NE(cap, 0u) << int{w.type};
    EXPECT_EQ(Cfg(cap + 4, 1), kModernBar);
    EXPECT_EQ(Cfg(cap + 8, 4), w.offset);
    EXPECT_EQ(Cfg(cap + 12, 4), w.length);
  }
  // Legacy: no vendor capabilities at all, MSI-X only.
  Make(VirtioPciMode::kLegacy);
  EXPECT_EQ(FindCap(kVirtioPciCapCommonCfg), 0u);
  EXPECT_EQ(FindCap(kVirtioPciCapPciCfg), 0u);
  EXPECT_NE(fn_->msix(), nullptr);
}

// ---------------------------------------------------------------------------
// Malformed accesses: odd widths, offsets past the end, absent BARs.

TEST_F(VirtioPciTest, MalformedAccessesDoNotCrash) {
  for (VirtioPciMode mode :
       {VirtioPciMode::kModern, VirtioPciMode::kTransitional,
        VirtioPciMode::kLegacy}) {
    Make(mode);
    for (int bar = 0; bar < 6; ++bar) {
      const uint64_t size = fn_->config_space().bar(bar).size;
      for (uint64_t off :
           {uint64_t{0}, uint64_t{1}, uint64_t{3}, uint64_t{19}, uint64_t{23},
            size - 1, size, size + 4, ~uint64_t{0} - 2}) {
        for (size_t w : {0u, 1u, 2u, 3u, 4u, 5u, 8u}) {
          uint8_t buf[8];
          fn_->BarRead(bar, off, absl::MakeSpan(buf, w));
          fn_->BarWrite(bar, off, absl::MakeConstSpan(buf, w));
        }
      }
    }
    // Odd-width writes to the legacy registers change nothing.
    if (mode != VirtioPciMode::kModern) {
      for (uint64_t off = 0; off < 24; ++off) {
        uint8_t ones[3] = {0xff, 0xff, 0xff};
        fn_->BarWrite(kLegacyBar, off, absl::MakeConstSpan(ones, 3));
      }
    }
    uint8_t b[4];
    fn_->ConfigRead(0x100, absl::MakeSpan(b, 4));
    fn_->ConfigRead(0xfff, absl::MakeSpan(b, 1));
    fn_->ConfigWrite(0x1000, absl::MakeConstSpan(b, 4));
    EXPECT_FALSE(fn_->state().active());
  }
}

}  // namespace
}  // namespace vmmkit::pci
