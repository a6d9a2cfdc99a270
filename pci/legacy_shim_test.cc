// The legacy shim against a native transitional function of the same
// device: every BAR 0 offset and width reads the same, the same writes have
// the same effect, the identity and BARs are a transitional device's; and
// what the shim does when the owner misbehaves.
#include "pci/legacy_shim.h"

#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pci/admin_driver.h"
#include "pci/virtio_admin.h"
#include "pci/virtio_pci.h"
#include "virtio-device/config_space.h"
#include "virtqueue/guest_memory.h"

namespace vmmkit::pci {
namespace {

using ::vmmkit::virtqueue::GuestMemoryMmap;

// A net-typed device with a 10-byte config {u8 mac[6]; le16 a; le16 w},
// w writable; two queues.
class Dev final : public virtio::VirtioDevice {
 public:
  Dev() : config_(10) {
    for (uint32_t i = 0; i < 6; ++i) config_.DeclareField(i, 1);
    config_.DeclareField(6, 2);
    config_.DeclareField(8, 2);
    for (uint32_t i = 0; i < 6; ++i) config_.SetU8(i, uint8_t(0x50 + i));
    config_.SetU16(6, 0xa1b2);
  }
  virtio::DeviceType type() const override { return virtio::DeviceType::kNet; }
  absl::Span<const uint16_t> queue_max_sizes() const override { return sizes_; }
  virtio::Features offered_features() const override {
    return virtio::Features::Of({virtio::kFVersion1, 5, 16});
  }
  uint32_t config_size() const override { return 10; }
  void ReadConfig(uint32_t offset, absl::Span<uint8_t> data,
                  virtio::Endian endian) override {
    config_.Read(offset, data, endian);
  }
  void WriteConfig(uint32_t offset, absl::Span<const uint8_t> data,
                   virtio::Endian endian) override {
    uint8_t le[10] = {};
    if (offset >= 10 || data.size() > 10 - offset) return;
    config_.DecodeWrite(offset, data, endian, absl::MakeSpan(le, data.size()));
    for (size_t i = 0; i < data.size(); ++i) {
      if (offset + i >= 8) config_.SetU8(offset + i, le[i]);
    }
  }
  absl::Status Activate(virtio::DeviceContext&) override {
    ++activations;
    return absl::OkStatus();
  }
  void Reset() override {}
  void ProcessQueue(uint16_t index) override { ++kicks[index]; }
  int activations = 0;
  int kicks[2] = {0, 0};

 private:
  const uint16_t sizes_[2] = {16, 32};
  virtio::ConfigSpace config_;
};

// The owner's executor called directly, with a hook to change answers.
class DirectTransport final : public AdminCommandTransport {
 public:
  explicit DirectTransport(VirtioAdminOwner& owner) : owner_(owner) {}
  absl::StatusOr<AdminCompletion> Execute(uint16_t opcode, uint16_t group,
                                          uint64_t member,
                                          absl::Span<const uint8_t> data,
                                          absl::Span<uint8_t> result) override {
    ++calls;
    if (fail_transport) return absl::UnavailableError("owner gone");
    std::vector<uint8_t> cmd(24, 0);
    cmd[0] = uint8_t(opcode);
    cmd[1] = uint8_t(opcode >> 8);
    cmd[2] = uint8_t(group);
    cmd[3] = uint8_t(group >> 8);
    for (int i = 0; i < 8; ++i) cmd[16 + i] = uint8_t(member >> (8 * i));
    cmd.insert(cmd.end(), data.begin(), data.end());
    std::vector<uint8_t> res(8 + result.size(), 0);
    const size_t n = owner_.Execute(cmd, absl::MakeSpan(res));
    AdminCompletion c;
    c.status = uint16_t(res[0] | res[1] << 8);
    c.status_qualifier = uint16_t(res[2] | res[3] << 8);
    c.result_length = n > 8 ? uint32_t(n - 8) : 0;
    std::copy(res.begin() + 8, res.end(), result.begin());
    if (rewrite) rewrite(opcode, c, result);
    return c;
  }
  void WriteOwnerBar16(int bar, uint64_t offset, uint16_t value) override {
    owner_bar_writes.push_back({bar, offset, value});
    const uint8_t le[2] = {uint8_t(value), uint8_t(value >> 8)};
    if (owner_fn != nullptr) owner_fn->BarWrite(bar, offset, le);
  }
  struct BarWrite16 {
    int bar;
    uint64_t offset;
    uint16_t value;
  };
  std::function<void(uint16_t, AdminCompletion&, absl::Span<uint8_t>)> rewrite;
  bool fail_transport = false;
  PciFunction* owner_fn = nullptr;  // where WriteOwnerBar16 goes
  int calls = 0;
  std::vector<BarWrite16> owner_bar_writes;

 private:
  VirtioAdminOwner& owner_;
};

class ShimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mem_ = *GuestMemoryMmap::Create({{.guest_base = 0, .size = 1 << 20}});
    native_ = *VirtioPciFunction::Create(
        native_dev_, *mem_, {.mode = VirtioPciMode::kTransitional});
    member_ =
        *VirtioPciFunction::Create(member_dev_, *mem_, {.admin_legacy = true});
    owner_ = *VirtioAdminOwner::Create(owner_inner_, {});
    ASSERT_OK(owner_->AddMember(member_.get()));
    owner_fn_ = *VirtioPciFunction::Create(*owner_, *mem_, {.admin_queues = 1});
    ASSERT_OK(owner_->InstallSriovCapability(*owner_fn_, 0x1041));
    ASSERT_OK(owner_->InstallNotifyArea(*owner_fn_, 3));
    // VF Enable, as the owner's driver would set it.
    const uint32_t cap =
        *owner_fn_->config_space().FindExtendedCapability(kExtCapIdSriov);
    const uint8_t one[2] = {1, 0};
    owner_fn_->ConfigWrite(cap + kSriovNumVfs, one);
    owner_fn_->ConfigWrite(cap + kSriovControl, one);
    ASSERT_EQ(owner_->enabled_members(), 1u);
    // The commands in use, as a driver would set them.
    uint8_t use[24 + 8] = {1, 0, 1, 0};
    use[24] = 0x7f;
    uint8_t res[8];
    ASSERT_EQ(owner_->Execute(use, absl::MakeSpan(res)), 8u);
    ASSERT_EQ(res[0], 0);
    transport_ = std::make_unique<DirectTransport>(*owner_);
    transport_->owner_fn = owner_fn_.get();
  }
  absl::StatusOr<std::unique_ptr<LegacyShimFunction>> MakeShim() {
    return LegacyShimFunction::Create(*member_, *transport_,
                                      {.member_id = 1,
                                       .type = virtio::DeviceType::kNet,
                                       .device_config_size = 10});
  }
  void SetMsix(bool on) {
    for (VirtioPciFunction* f : {native_.get(), member_.get()}) {
      const uint32_t cap = *f->config_space().FindCapability(kCapIdMsix);
      const uint8_t v[2] = {0, uint8_t(on ? 0x80 : 0)};
      f->ConfigWrite(cap + 2, absl::MakeConstSpan(v, 2));
      ASSERT_EQ(f->msix()->enabled(), on);
    }
  }
  // Every offset and width of BAR 0 reads the same on both.
  void ExpectSameReads(LegacyShimFunction& shim) {
    const uint64_t size = native_->config_space().bar(0).size;
    ASSERT_EQ(shim.config_space().bar(0).size, size);
    for (size_t width : {1, 2, 3, 4, 8}) {
      for (uint64_t off = 0; off + width <= size; ++off) {
        uint8_t a[8], b[8];
        std::memset(a, 0x11, sizeof(a));
        std::memset(b, 0x22, sizeof(b));
        native_->BarRead(0, off, absl::MakeSpan(a, width));
        shim.BarRead(0, off, absl::MakeSpan(b, width));
        ASSERT_EQ(0, std::memcmp(a, b, width))
            << "offset " << off << " width " << width;
      }
    }
  }
  void WriteBoth(LegacyShimFunction& shim, uint64_t off,
                 std::vector<uint8_t> bytes) {
    native_->BarWrite(0, off, bytes);
    shim.BarWrite(0, off, bytes);
  }

  std::unique_ptr<GuestMemoryMmap> mem_;
  Dev native_dev_, member_dev_, owner_inner_;
  std::unique_ptr<VirtioPciFunction> native_, member_;
  std::unique_ptr<VirtioAdminOwner> owner_;
  std::unique_ptr<VirtioPciFunction> owner_fn_;
  std::unique_ptr<DirectTransport> transport_;
};

TEST_F(ShimTest, IdentityAndBarsOfATransitionalDevice) {
  auto shim = MakeShim();
  ASSERT_OK(shim.status());
  LegacyShimFunction& s = **shim;
  auto cfg = [&](PciFunction& f, uint32_t off, int w) {
    uint8_t b[4] = {};
    f.ConfigRead(off, absl::MakeSpan(b, w));
    return b[0] | b[1] << 8 | b[2] << 16 | uint32_t(b[3]) << 24;
  };
  // The header registers a driver looks at: as the native function's.
  for (uint32_t off : {kRegVendorId, kRegDeviceId, kRegRevisionId, 0x09u,
                       kRegSubsystemVendorId, kRegSubsystemId, kRegBar0,
                       kRegInterruptPin, kRegHeaderType}) {
    EXPECT_EQ(cfg(s, off, 2), cfg(*native_, off, 2)) << off;
  }
  EXPECT_EQ(cfg(s, kRegDeviceId, 2), 0x1000u);
  EXPECT_EQ(cfg(s, kRegSubsystemId, 2), 1u);
  EXPECT_EQ(cfg(*member_, kRegDeviceId, 2), 0x1041u);
  // Unaligned reads across the overrides (seed 001's range intersection).
  EXPECT_EQ(cfg(s, 1, 2), cfg(*native_, 1, 2));
  EXPECT_EQ(cfg(s, 0x2d, 2), cfg(*native_, 0x2d, 2));
  // BAR 0 is I/O; sizing reads back the size mask.
  EXPECT_EQ(s.config_space().bar(0).type, BarType::kIo);
  EXPECT_EQ(s.config_space().bar(0).size, 64u);  // 24 + 10, rounded up
  const uint8_t ones[4] = {0xff, 0xff, 0xff, 0xff};
  s.ConfigWrite(kRegBar0, ones);
  EXPECT_EQ(cfg(s, kRegBar0, 4),
            ~static_cast<uint32_t>(s.config_space().bar(0).size - 1) | 1);
  // The member's BARs (MSI-X, modern) are the shim's too; the member's BAR
  // registers are not written by the guest's BAR programming.
  EXPECT_EQ(s.config_space().bar(kMsixBar).size,
            member_->config_space().bar(kMsixBar).size);
  EXPECT_EQ(s.config_space().bar(kModernBar).type, BarType::kMemory64);
  const uint8_t addr[4] = {0, 0, 0, 0xc0};
  s.ConfigWrite(kRegBar0 + 4 * kMsixBar, addr);
  EXPECT_EQ(s.config_space().BarAddress(kMsixBar), 0xc0000000u);
  EXPECT_EQ(member_->config_space().BarAddress(kMsixBar), 0u);
  // Capabilities are the member's: MSI-X and the virtio structures.
  EXPECT_EQ(cfg(s, kRegCapabilitiesPointer, 1),
            cfg(*member_, kRegCapabilitiesPointer, 1));
  // The command register goes to both.
  const uint8_t cmd[2] = {uint8_t(kCommandIo | kCommandBusMaster),
                          uint8_t(kCommandIntxDisable >> 8)};
  s.ConfigWrite(kRegCommand, cmd);
  EXPECT_TRUE(s.config_space().io_enabled());
  EXPECT_TRUE(member_->config_space().bus_master_enabled());
  EXPECT_TRUE(member_->config_space().intx_disabled());
  // MSI-X enable through the shim reaches the member.
  const uint32_t cap = *member_->config_space().FindCapability(kCapIdMsix);
  const uint8_t en[2] = {0, 0x80};
  s.ConfigWrite(cap + 2, en);
  EXPECT_TRUE(member_->msix()->enabled());
  EXPECT_TRUE(s.msix_enabled());
}

TEST_F(ShimTest, EveryReadMatchesTheNativeDevice) {
  auto shim = MakeShim();
  ASSERT_OK(shim.status());
  for (bool msix : {false, true, false}) {
    SCOPED_TRACE(msix ? "MSI-X" : "INTx");
    SetMsix(msix);
    ExpectSameReads(**shim);
  }
  EXPECT_EQ((*shim)->stats().failed_commands, 0u);
}

TEST_F(ShimTest, TheSameWritesHaveTheSameEffect) {
  auto shim = MakeShim();
  ASSERT_OK(shim.status());
  LegacyShimFunction& s = **shim;
  struct W {
    uint64_t off;
    std::vector<uint8_t> bytes;
  };
  const std::vector<W> writes = {
      {18, {1}},             // ACKNOWLEDGE
      {18, {3}},             // DRIVER
      {4, {0x20, 0, 1, 0}},  // guest features (bit 5, 16)
      {4, {0xff, 0xff}},     // partial: dropped
      {14, {1, 0}},          // select queue 1
      {12, {0x40, 0}},       // read-only QUEUE_NUM
      {8, {0x20, 0, 0, 0}},  // PFN
      {14, {0, 1}},          // select 256: absent
      {8, {0x30, 0, 0, 0}},  // PFN of an absent queue
      {14, {0, 0}},
      {6, {0xaa, 0xbb, 0xcc, 0xdd}},  // across two registers
      {18, {7, 0xff}},                // status + ISR: dropped
      {19, {0x55, 0x66}},             // ISR + first config byte
      {26, {0x34, 0x12}},             // read-only config field
      {28, {0x78, 0x56}},             // the writable one
      {16, {0, 0, 0, 0}},             // notify, 4 bytes wide: dropped
      {29, {0x99, 0x88, 0x77}},       // past the end of the config
      {18, {7}},                      // DRIVER_OK
  };
  for (bool msix : {false, true}) {
    SCOPED_TRACE(msix ? "MSI-X" : "INTx");
    SetMsix(msix);
    for (const W& w : writes) {
      const uint64_t off = w.off >= 20 && msix ? w.off + 4 : w.off;
      SCOPED_TRACE(::testing::Message() << "write at " << off);
      WriteBoth(s, off, w.bytes);
      ExpectSameReads(s);
      EXPECT_EQ(native_->state().status(), member_->state().status());
      EXPECT_EQ(native_->state().queue_enabled(1),
                member_->state().queue_enabled(1));
    }
    EXPECT_TRUE(member_->state().active());
    EXPECT_EQ(member_dev_.activations, native_dev_.activations);
    // A legacy vector write (MSI-X on) and a kick.
    if (msix) {
      WriteBoth(s, 20, {1, 0});
      WriteBoth(s, 22, {2, 0});
      EXPECT_EQ(member_->state().config_vector(), 1);
      EXPECT_EQ(member_->state().queue_vector(0), 2);
      ExpectSameReads(s);
    }
    WriteBoth(s, 16, {1, 0});
    EXPECT_EQ(member_dev_.kicks[1], native_dev_.kicks[1]);
    EXPECT_EQ(member_dev_.kicks[1], msix ? 2 : 1);
    // Reset through PFN 0.
    WriteBoth(s, 8, {0, 0, 0, 0});
    EXPECT_FALSE(member_->state().active());
    ExpectSameReads(s);
  }
  // The kick went to the owner's notify area (DirectTransport records it).
  ASSERT_EQ(transport_->owner_bar_writes.size(), 2u);
  EXPECT_EQ(transport_->owner_bar_writes[0].bar, 3);
  EXPECT_EQ(transport_->owner_bar_writes[0].offset, 0u);
  EXPECT_EQ(transport_->owner_bar_writes[0].value, 1);
  EXPECT_EQ(s.stats().failed_commands, 0u);
}

TEST_F(ShimTest, CreateChecks) {
  // No transitional id for the type.
  EXPECT_THAT(LegacyShimFunction::Create(*member_, *transport_,
                                         {.type = virtio::DeviceType::kGpu})
                  .status(),
              testing::StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(LegacyShimFunction::Create(
                  *member_, *transport_,
                  {.type = virtio::DeviceType::kNet, .device_config_size = 233})
                  .status(),
              testing::StatusIs(absl::StatusCode::kInvalidArgument));
  // A member with a BAR 0 (a transitional function).
  EXPECT_THAT(LegacyShimFunction::Create(*native_, *transport_, {}).status(),
              testing::StatusIs(absl::StatusCode::kInvalidArgument));
  // A member the owner does not have.
  EXPECT_THAT(LegacyShimFunction::Create(
                  *member_, *transport_,
                  {.member_id = 2, .type = virtio::DeviceType::kNet})
                  .status(),
              testing::StatusIs(absl::StatusCode::kFailedPrecondition));
  // The owner is unreachable.
  transport_->fail_transport = true;
  EXPECT_THAT(MakeShim().status(),
              testing::StatusIs(absl::StatusCode::kUnavailable));
  transport_->fail_transport = false;
  // No NOTIFY_INFO and no legacy commands in use.
  uint8_t use[24 + 8] = {1, 0, 1, 0};
  use[24] = 0x03;
  uint8_t res[8];
  ASSERT_EQ(owner_->Execute(use, absl::MakeSpan(res)), 8u);
  EXPECT_THAT(MakeShim().status(),
              testing::StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(ShimTest, NotifyInfoEntriesAreValidated) {
  auto entry = [](absl::Span<uint8_t> r, int i, uint8_t flags, uint8_t bar,
                  uint64_t off) {
    uint8_t* e = r.data() + 16 * i;
    std::memset(e, 0, 16);
    e[0] = flags;
    e[1] = bar;
    for (int k = 0; k < 8; ++k) e[8 + k] = uint8_t(off >> (8 * k));
  };
  // Reserved flags, BAR 0, an odd offset, a member BAR offset past its end:
  // all skipped; then a valid member entry is taken.
  transport_->rewrite = [&](uint16_t op, AdminCompletion&,
                            absl::Span<uint8_t> r) {
    if (op != kAdminCmdLegacyNotifyInfo) return;
    entry(r, 0, 3, 3, 0);
    entry(r, 1, 1, 0, 0);
    entry(r, 2, 1, 3, 5);
    entry(r, 3, 2, kModernBar, kModernNotifyOffset + 4);
  };
  auto shim = MakeShim();
  ASSERT_OK(shim.status());
  EXPECT_EQ((*shim)->notify_flags(), kNotifyInfoMember);
  EXPECT_EQ((*shim)->notify_bar(), kModernBar);
  EXPECT_EQ((*shim)->notify_offset(), kModernNotifyOffset + 4);

  // None valid (an end entry first): kicks become LEGACY_COMMON_CFG_WRITE.
  transport_->rewrite = [&](uint16_t op, AdminCompletion&,
                            absl::Span<uint8_t> r) {
    if (op != kAdminCmdLegacyNotifyInfo) return;
    entry(r, 0, 0, 3, 0);
    entry(r, 1, 1, 3, 0);
  };
  shim = MakeShim();
  ASSERT_OK(shim.status());
  EXPECT_EQ((*shim)->notify_flags(), kNotifyInfoEnd);
  // Start the member as a legacy driver, then kick queue 0.
  for (std::vector<uint8_t> w : {std::vector<uint8_t>{1}, {3}}) {
    (*shim)->BarWrite(0, 18, w);
  }
  const uint8_t pfn[4] = {0x40, 0, 0, 0};
  (*shim)->BarWrite(0, 8, pfn);
  const uint8_t ok[1] = {7};
  (*shim)->BarWrite(0, 18, ok);
  ASSERT_TRUE(member_->state().active());
  const int calls = transport_->calls;
  const uint8_t q0[2] = {0, 0};
  (*shim)->BarWrite(0, 16, q0);
  EXPECT_EQ(member_dev_.kicks[0], 1);
  EXPECT_EQ(transport_->calls, calls + 1);
  // The ioeventfd path does the same.
  const Doorbell bell = LegacyShimFunction::LegacyDoorbell(0);
  EXPECT_EQ(bell.bar, 0);
  EXPECT_EQ(bell.offset, 16u);
  EXPECT_EQ(bell.width, 2u);
  EXPECT_EQ(bell.datamatch, 0u);
  (*shim)->NotifyQueue(0);
  EXPECT_EQ(member_dev_.kicks[0], 2);
  EXPECT_TRUE(transport_->owner_bar_writes.empty());
}

TEST_F(ShimTest, FailedCommandsReadAllOnesAndWriteNothing) {
  auto shim = MakeShim();
  ASSERT_OK(shim.status());
  transport_->fail_transport = true;
  uint8_t b[4] = {};
  (*shim)->BarRead(0, 0, absl::MakeSpan(b, 4));
  EXPECT_THAT(b, ::testing::Each(0xff));
  const uint8_t s[1] = {1};
  (*shim)->BarWrite(0, 18, s);
  EXPECT_EQ(member_->state().status(), 0);
  // A status error the same way.
  transport_->fail_transport = false;
  transport_->rewrite = [](uint16_t, AdminCompletion& c, absl::Span<uint8_t>) {
    c.status = kAdminStatusEbusy;
  };
  (*shim)->BarRead(0, 20, absl::MakeSpan(b, 2));
  EXPECT_EQ(b[0], 0xff);
  EXPECT_EQ(b[1], 0xff);
  EXPECT_EQ((*shim)->stats().failed_commands, 3u);
  // Non-BAR-0 accesses go to the member unchanged.
  uint8_t m[2], n[2];
  (*shim)->BarRead(kModernBar, kCommonNumQueues, absl::MakeSpan(m));
  member_->BarRead(kModernBar, kCommonNumQueues, absl::MakeSpan(n));
  EXPECT_EQ(m[0], 2);
  EXPECT_EQ(n[0], 2);
}

}  // namespace
}  // namespace vmmkit::pci
