// Group administration commands, driven through the owner's administration
// virtqueue by AdminQueueDriver (and by a raw DriverQueue for malformed
// chains), executed on modern-only members.
#include "pci/virtio_admin.h"

#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pci/admin_driver.h"
#include "pci/virtio_pci.h"
#include "virtio-device/config_space.h"
#include "virtio-device/device_state.h"
#include "virtio-device/rng.h"
#include "virtqueue/driver_queue.h"
#include "virtqueue/guest_memory.h"

namespace vmmkit::pci {
namespace {

using ::testing::ElementsAre;
using ::vmmkit::virtqueue::DriverQueue;
using ::vmmkit::virtqueue::GuestMemoryMmap;

// A device with a 12-byte config {le16 a, le16 b, le32 c, le32 w}; only w
// (8..11) is writable. Two queues; it counts kicks per queue.
class ConfigDevice final : public virtio::VirtioDevice {
 public:
  ConfigDevice() : config_(12) {
    config_.DeclareField(0, 2);
    config_.DeclareField(2, 2);
    config_.DeclareField(4, 4);
    config_.DeclareField(8, 4);
    config_.SetU16(0, 0x1234);
    config_.SetU16(2, 0x5678);
    config_.SetU32(4, 0x01020304);
  }
  virtio::DeviceType type() const override { return virtio::DeviceType::kNet; }
  absl::Span<const uint16_t> queue_max_sizes() const override { return sizes_; }
  virtio::Features offered_features() const override {
    return virtio::Features::Of({virtio::kFVersion1, 5});
  }
  uint32_t config_size() const override { return 12; }
  void ReadConfig(uint32_t offset, absl::Span<uint8_t> data,
                  virtio::Endian endian) override {
    config_.Read(offset, data, endian);
  }
  void WriteConfig(uint32_t offset, absl::Span<const uint8_t> data,
                   virtio::Endian endian) override {
    uint8_t le[12] = {};
    if (offset >= 12 || data.size() > 12 - offset) return;
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
  uint32_t w() const { return config_.U32(8); }

  int activations = 0;
  int kicks[2] = {0, 0};

 private:
  const uint16_t sizes_[2] = {64, 64};
  virtio::ConfigSpace config_;
};

// Two members behind an owner (an rng device with an admin queue).
class AdminTest : public ::testing::Test {
 protected:
  void SetUp() override {
    guest_ = *GuestMemoryMmap::Create({{.guest_base = 0, .size = 1 << 20}});
    vmm_ = *GuestMemoryMmap::Create({{.guest_base = 0, .size = 64 << 10}});
    for (int i = 0; i < 2; ++i) {
      auto m = VirtioPciFunction::Create(devices_[i], *guest_,
                                         {.admin_legacy = true});
      ASSERT_OK(m.status());
      members_[i] = *std::move(m);
    }
    auto owner = VirtioAdminOwner::Create(rng_, {});
    ASSERT_OK(owner.status());
    owner_dev_ = *std::move(owner);
    ASSERT_OK(owner_dev_->AddMember(members_[0].get()));
    ASSERT_OK(owner_dev_->AddMember(members_[1].get()));
    auto fn =
        VirtioPciFunction::Create(*owner_dev_, *vmm_, {.admin_queues = 1});
    ASSERT_OK(fn.status());
    owner_ = *std::move(fn);
    ASSERT_OK(owner_dev_->InstallSriovCapability(*owner_, 0x1041));
    ASSERT_OK(owner_dev_->InstallNotifyArea(*owner_, 2));
  }

  void StartDriver() {
    auto d = AdminQueueDriver::Create(*owner_, *vmm_, {});
    ASSERT_OK(d.status());
    driver_ = *std::move(d);
  }

  // A command through the admin queue; the completion (status) and the
  // result bytes.
  AdminCompletion Run(uint16_t opcode, uint64_t member,
                      std::vector<uint8_t> data, std::vector<uint8_t>* result,
                      uint16_t group = kAdminGroupSriov) {
    absl::StatusOr<AdminCompletion> c = driver_->Execute(
        opcode, group, member, data,
        result ? absl::MakeSpan(*result) : absl::Span<uint8_t>());
    EXPECT_OK(c.status());
    return c.value_or(AdminCompletion{0xffff, 0xffff, 0});
  }
  // LEGACY_*_CFG_READ of `len` bytes at `offset`.
  AdminCompletion ReadCfg(uint16_t opcode, uint64_t member, uint8_t offset,
                          size_t len, std::vector<uint8_t>* out) {
    out->assign(len, 0xee);
    return Run(opcode, member, {offset}, out);
  }
  AdminCompletion WriteCfg(uint16_t opcode, uint64_t member, uint8_t offset,
                           std::vector<uint8_t> bytes) {
    std::vector<uint8_t> d(8, 0);
    d[0] = offset;
    d.insert(d.end(), bytes.begin(), bytes.end());
    return Run(opcode, member, d, nullptr);
  }
  // What the owner's driver does to enable `n` VFs.
  void EnableVfs(uint16_t n, uint16_t control = kSriovVfEnable | kSriovVfMse) {
    const uint32_t cap =
        *owner_->config_space().FindExtendedCapability(kExtCapIdSriov);
    const uint8_t num[2] = {uint8_t(n), uint8_t(n >> 8)};
    const uint8_t ctl[2] = {uint8_t(control), uint8_t(control >> 8)};
    owner_->ConfigWrite(cap + kSriovNumVfs, num);
    owner_->ConfigWrite(cap + kSriovControl, ctl);
  }
  static void ExpectEinval(const AdminCompletion& c, uint16_t qualifier) {
    EXPECT_EQ(c.status, kAdminStatusEinval);
    EXPECT_EQ(c.status_qualifier, qualifier);
    EXPECT_EQ(c.result_length, 0u);
  }

  std::unique_ptr<GuestMemoryMmap> guest_, vmm_;
  ConfigDevice devices_[2];
  virtio::RngDevice rng_;
  std::unique_ptr<VirtioPciFunction> members_[2];
  std::unique_ptr<VirtioAdminOwner> owner_dev_;
  std::unique_ptr<VirtioPciFunction> owner_;
  std::unique_ptr<AdminQueueDriver> driver_;
};

uint64_t Le(const std::vector<uint8_t>& b, size_t off, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= uint64_t{b[off + i]} << (8 * i);
  return v;
}

TEST_F(AdminTest, OwnerCommonConfigReportsTheAdminQueue) {
  uint8_t b[2];
  owner_->BarRead(kModernBar, kCommonNumQueues, absl::MakeSpan(b));
  EXPECT_EQ(b[0] | b[1] << 8, 1);  // rng's queue, not the admin queue
  owner_->BarRead(kModernBar, kCommonAdminQueueIndex, absl::MakeSpan(b));
  EXPECT_EQ(b[0] | b[1] << 8, 1);
  owner_->BarRead(kModernBar, kCommonAdminQueueNum, absl::MakeSpan(b));
  EXPECT_EQ(b[0] | b[1] << 8, 1);
  // A function without admin queues reports none.
  members_[0]->BarRead(kModernBar, kCommonAdminQueueNum, absl::MakeSpan(b));
  EXPECT_EQ(b[0] | b[1] << 8, 0);
  EXPECT_TRUE(owner_->state().offered_features().Has(virtio::kFAdminVq));
}

TEST_F(AdminTest, ProbeQueriesAndUsesTheLegacyCommands) {
  StartDriver();
  EXPECT_EQ(driver_->admin_queue_index(), 1);
  EXPECT_TRUE(owner_->state().active());
  EXPECT_TRUE(owner_->state().driver_features().Has(virtio::kFAdminVq));
  EXPECT_EQ(driver_->supported_commands(), 0x7fu);
  EXPECT_EQ(driver_->used_commands(), 0x7fu);
  EXPECT_EQ(owner_dev_->used_commands(), 0x7fu);
  std::vector<uint8_t> r(8);
  AdminCompletion c = Run(kAdminCmdListQuery, 0, {}, &r);
  EXPECT_EQ(c.status, kAdminStatusOk);
  EXPECT_EQ(c.status_qualifier, kAdminQualifierOk);
  EXPECT_EQ(c.result_length, 8u);
  EXPECT_EQ(Le(r, 0, 8), 0x7fu);
  // A shorter result buffer gets what fits; the member id is not used.
  std::vector<uint8_t> short_r(1);
  c = Run(kAdminCmdListQuery, 99, {}, &short_r);
  EXPECT_EQ(c.status, kAdminStatusOk);
  EXPECT_EQ(c.result_length, 1u);
  EXPECT_EQ(short_r[0], 0x7f);
}

TEST_F(AdminTest, OwnerWithoutNotifyAreaDoesNotOfferNotifyInfo) {
  virtio::RngDevice rng;
  auto dev = *VirtioAdminOwner::Create(rng, {});
  ASSERT_OK(dev->AddMember(members_[0].get()));
  auto mem = *GuestMemoryMmap::Create({{.guest_base = 0, .size = 64 << 10}});
  auto fn = *VirtioPciFunction::Create(*dev, *mem, {.admin_queues = 1});
  ASSERT_OK(dev->InstallSriovCapability(*fn, 0x1041));
  auto d = AdminQueueDriver::Create(*fn, *mem, {});
  ASSERT_OK(d.status());
  EXPECT_EQ((*d)->supported_commands(), 0x3fu);
  EXPECT_EQ((*d)->used_commands(), 0x3fu);
  uint8_t r[64];
  auto c = (*d)->Execute(kAdminCmdLegacyNotifyInfo, kAdminGroupSriov, 1, {},
                         absl::MakeSpan(r));
  ASSERT_OK(c.status());
  EXPECT_EQ(c->status, kAdminStatusEinval);
  EXPECT_EQ(c->status_qualifier, kAdminQualifierInvalidOpcode);
}

TEST_F(AdminTest, SriovCapabilityGatesTheGroup) {
  ConfigSpace& cfg = owner_->config_space();
  const std::optional<uint32_t> cap =
      cfg.FindExtendedCapability(kExtCapIdSriov);
  ASSERT_TRUE(cap.has_value());
  EXPECT_EQ(*cap, 0x100u);
  EXPECT_EQ(cfg.Get16(*cap + kSriovTotalVfs), 2);
  EXPECT_EQ(cfg.Get16(*cap + kSriovInitialVfs), 2);
  EXPECT_EQ(cfg.Get16(*cap + kSriovVfDeviceId), 0x1041);
  EXPECT_EQ(cfg.Get16(*cap + kSriovNumVfs), 0);
  EXPECT_EQ(owner_dev_->enabled_members(), 0u);
  // VF BAR0 is hardwired to zero (§2.12.1.2 with NOTIFY_INFO).
  const uint8_t ones[4] = {0xff, 0xff, 0xff, 0xff};
  owner_->ConfigWrite(*cap + kSriovVfBar0, ones);
  EXPECT_EQ(cfg.Get32(*cap + kSriovVfBar0), 0u);

  // The driver enables both VFs before LIST_QUERY.
  StartDriver();
  EXPECT_EQ(cfg.Get16(*cap + kSriovNumVfs), 2);
  EXPECT_EQ(owner_dev_->enabled_members(), 2u);
  std::vector<uint8_t> out;
  EXPECT_EQ(ReadCfg(kAdminCmdLegacyCommonCfgRead, 2, 18, 1, &out).status,
            kAdminStatusOk);

  // NumVFs 1: member 2 is gone, its doorbell too.
  EnableVfs(1);
  EXPECT_EQ(ReadCfg(kAdminCmdLegacyCommonCfgRead, 1, 18, 1, &out).status,
            kAdminStatusOk);
  ExpectEinval(ReadCfg(kAdminCmdLegacyCommonCfgRead, 2, 18, 1, &out),
               kAdminQualifierInvalidMember);
  std::vector<uint8_t> info(64);
  ExpectEinval(Run(kAdminCmdLegacyNotifyInfo, 2, {}, &info),
               kAdminQualifierInvalidMember);
  const uint8_t q0[2] = {0, 0};
  owner_->BarWrite(2, 4, absl::MakeConstSpan(q0, 2));
  EXPECT_EQ(owner_dev_->stats().notifications, 0u);

  // VF Enable clear: every command, LIST_QUERY included, INVALID_GROUP.
  EnableVfs(2, 0);
  EXPECT_EQ(owner_dev_->enabled_members(), 0u);
  std::vector<uint8_t> r(8);
  ExpectEinval(Run(kAdminCmdListQuery, 0, {}, &r), kAdminQualifierInvalidGroup);
  ExpectEinval(ReadCfg(kAdminCmdLegacyCommonCfgRead, 1, 18, 1, &out),
               kAdminQualifierInvalidGroup);
  EnableVfs(2);
  EXPECT_EQ(Run(kAdminCmdListQuery, 0, {}, &r).status, kAdminStatusOk);
}

TEST_F(AdminTest, OwnerWithoutSriovCapabilityHasNoGroup) {
  virtio::RngDevice rng;
  auto dev = *VirtioAdminOwner::Create(rng, {});
  ASSERT_OK(dev->AddMember(members_[0].get()));
  auto mem = *GuestMemoryMmap::Create({{.guest_base = 0, .size = 64 << 10}});
  auto fn = *VirtioPciFunction::Create(*dev, *mem, {.admin_queues = 1});
  // LIST_QUERY fails with INVALID_GROUP, so the driver gives up.
  EXPECT_THAT(AdminQueueDriver::Create(*fn, *mem, {}).status(),
              testing::StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(dev->stats().failed, 1u);
}

TEST_F(AdminTest, ListUseRejectsWhatTheDeviceCannotUse) {
  StartDriver();
  auto list = [](uint64_t bits, size_t words = 1) {
    std::vector<uint8_t> v(8 * words, 0);
    for (int i = 0; i < 8; ++i) v[i] = static_cast<uint8_t>(bits >> (8 * i));
    return v;
  };
  // Not offered (opcode 7), partial legacy set, NOTIFY_INFO alone, a
  // non-zero second word: INVALID_FIELD, and the list in use is unchanged.
  ExpectEinval(Run(kAdminCmdListUse, 0, list(0xff), nullptr),
               kAdminQualifierInvalidField);
  ExpectEinval(Run(kAdminCmdListUse, 0, list(0x07), nullptr),
               kAdminQualifierInvalidField);
  ExpectEinval(Run(kAdminCmdListUse, 0, list(0x43), nullptr),
               kAdminQualifierInvalidField);
  std::vector<uint8_t> two = list(0x7f, 2);
  two[8] = 1;  // opcode 64
  ExpectEinval(Run(kAdminCmdListUse, 0, two, nullptr),
               kAdminQualifierInvalidField);
  EXPECT_EQ(owner_dev_->used_commands(), 0x7fu);
  // Extra all-zero words are fine.
  EXPECT_EQ(Run(kAdminCmdListUse, 0, list(0x7f, 3), nullptr).status,
            kAdminStatusOk);

  // Only the list commands: legacy commands are now not in use.
  EXPECT_EQ(Run(kAdminCmdListUse, 0, list(0x03), nullptr).status,
            kAdminStatusOk);
  std::vector<uint8_t> out;
  ExpectEinval(ReadCfg(kAdminCmdLegacyCommonCfgRead, 1, 18, 1, &out),
               kAdminQualifierInvalidOpcode);
  ExpectEinval(WriteCfg(kAdminCmdLegacyCommonCfgWrite, 1, 18, {1}),
               kAdminQualifierInvalidOpcode);
  EXPECT_EQ(members_[0]->state().status(), 0);
  EXPECT_EQ(Run(kAdminCmdListUse, 0, list(0x7f), nullptr).status,
            kAdminStatusOk);
  EXPECT_EQ(ReadCfg(kAdminCmdLegacyCommonCfgRead, 1, 18, 1, &out).status,
            kAdminStatusOk);

  // An empty list blocks everything, LIST_QUERY and LIST_USE included,
  // until the owner is reset.
  EXPECT_EQ(Run(kAdminCmdListUse, 0, {}, nullptr).status, kAdminStatusOk);
  std::vector<uint8_t> r(8);
  ExpectEinval(Run(kAdminCmdListQuery, 0, {}, &r),
               kAdminQualifierInvalidOpcode);
  ExpectEinval(Run(kAdminCmdListUse, 0, list(0x7f), nullptr),
               kAdminQualifierInvalidOpcode);
  // Reset: LIST_QUERY and LIST_USE only, and a new driver sets it up again.
  uint8_t zero = 0;
  owner_->BarWrite(kModernBar, kCommonStatus, absl::MakeConstSpan(&zero, 1));
  EXPECT_EQ(owner_dev_->used_commands(), 0x3u);
  StartDriver();
  EXPECT_EQ(owner_dev_->used_commands(), 0x7fu);
}

TEST_F(AdminTest, GroupTypeOpcodeAndMemberAreCheckedInThatOrder) {
  StartDriver();
  std::vector<uint8_t> r(8);
  // Self group (0) and reserved types: INVALID_GROUP, before the opcode.
  for (uint16_t group : {uint16_t{0}, uint16_t{2}, uint16_t{0xffff}}) {
    ExpectEinval(Run(kAdminCmdListQuery, 0, {}, &r, group),
                 kAdminQualifierInvalidGroup);
    ExpectEinval(Run(0x7000, 0, {}, &r, group), kAdminQualifierInvalidGroup);
    ExpectEinval(Run(kAdminCmdLegacyCommonCfgRead, 9, {18}, &r, group),
                 kAdminQualifierInvalidGroup);
  }
  // Unknown opcodes, the reserved range, an opcode >= 64: INVALID_OPCODE,
  // before the member.
  for (uint16_t op : {uint16_t{7}, uint16_t{0x11}, uint16_t{0x40},
                      uint16_t{0x8000}, uint16_t{0xffff}}) {
    ExpectEinval(Run(op, 1, {}, &r), kAdminQualifierInvalidOpcode);
    ExpectEinval(Run(op, 1000, {}, &r), kAdminQualifierInvalidOpcode);
  }
  // Members are 1..2.
  for (uint64_t id :
       {uint64_t{0}, uint64_t{3}, uint64_t{1} << 63, ~uint64_t{0}}) {
    std::vector<uint8_t> out;
    ExpectEinval(ReadCfg(kAdminCmdLegacyCommonCfgRead, id, 18, 1, &out),
                 kAdminQualifierInvalidMember);
    ExpectEinval(WriteCfg(kAdminCmdLegacyCommonCfgWrite, id, 18, {1}),
                 kAdminQualifierInvalidMember);
    ExpectEinval(ReadCfg(kAdminCmdLegacyDevCfgRead, id, 0, 2, &out),
                 kAdminQualifierInvalidMember);
    ExpectEinval(WriteCfg(kAdminCmdLegacyDevCfgWrite, id, 8, {1}),
                 kAdminQualifierInvalidMember);
    std::vector<uint8_t> info(64);
    ExpectEinval(Run(kAdminCmdLegacyNotifyInfo, id, {}, &info),
                 kAdminQualifierInvalidMember);
  }
  EXPECT_EQ(members_[0]->state().status(), 0);
  EXPECT_EQ(members_[1]->state().status(), 0);
  EXPECT_EQ(owner_dev_->stats().failed, 3u * 3 + 5u * 2 + 4u * 5);
}

TEST_F(AdminTest, LegacyCommonConfigReadsAndWritesTheMembersRegisters) {
  StartDriver();
  std::vector<uint8_t> out;
  // Host features: the member's word 0 plus VIRTIO_F_BAD_FEATURE.
  AdminCompletion c = ReadCfg(kAdminCmdLegacyCommonCfgRead, 2, 0, 4, &out);
  ASSERT_EQ(c.status, kAdminStatusOk);
  EXPECT_EQ(c.result_length, 4u);
  EXPECT_EQ(Le(out, 0, 4), (1u << 5) | (1u << virtio::kFBadFeature));
  // Part of a register is one field too.
  ASSERT_EQ(ReadCfg(kAdminCmdLegacyCommonCfgRead, 2, 1, 2, &out).status,
            kAdminStatusOk);
  EXPECT_EQ(Le(out, 0, 2), 0u);
  // QUEUE_NUM of queue 1.
  ASSERT_EQ(
      WriteCfg(kAdminCmdLegacyCommonCfgWrite, 2, kLegacyQueueSelect, {1, 0})
          .status,
      kAdminStatusOk);
  ASSERT_EQ(
      ReadCfg(kAdminCmdLegacyCommonCfgRead, 2, kLegacyQueueNum, 2, &out).status,
      kAdminStatusOk);
  EXPECT_EQ(Le(out, 0, 2), 64u);

  // A legacy driver's probe on member 2 only.
  ASSERT_EQ(
      WriteCfg(kAdminCmdLegacyCommonCfgWrite, 2, kLegacyStatus, {1}).status,
      kAdminStatusOk);
  ASSERT_EQ(
      WriteCfg(kAdminCmdLegacyCommonCfgWrite, 2, kLegacyStatus, {3}).status,
      kAdminStatusOk);
  ASSERT_EQ(WriteCfg(kAdminCmdLegacyCommonCfgWrite, 2, kLegacyGuestFeatures,
                     {0x20, 0, 0, 0})
                .status,
            kAdminStatusOk);
  // A part of guest features is accepted as a command and dropped, as the
  // legacy I/O BAR drops it.
  ASSERT_EQ(WriteCfg(kAdminCmdLegacyCommonCfgWrite, 2, kLegacyGuestFeatures,
                     {0xff, 0xff})
                .status,
            kAdminStatusOk);
  EXPECT_EQ(members_[1]->state().DriverFeatures(0), 0x20u);
  // Queue 1 at PFN 0x10 (64 KiB): the legacy layout, enabled.
  ASSERT_EQ(WriteCfg(kAdminCmdLegacyCommonCfgWrite, 2, kLegacyQueuePfn,
                     {0x10, 0, 0, 0})
                .status,
            kAdminStatusOk);
  EXPECT_TRUE(members_[1]->state().queue_enabled(1));
  EXPECT_EQ(members_[1]->state().queue_config(1).desc_table(), 0x10000u);
  ASSERT_EQ(
      ReadCfg(kAdminCmdLegacyCommonCfgRead, 2, kLegacyQueuePfn, 4, &out).status,
      kAdminStatusOk);
  EXPECT_EQ(Le(out, 0, 4), 0x10u);
  ASSERT_EQ(
      WriteCfg(kAdminCmdLegacyCommonCfgWrite, 2, kLegacyStatus, {7}).status,
      kAdminStatusOk);
  EXPECT_TRUE(members_[1]->state().active());
  EXPECT_TRUE(members_[1]->state().legacy());
  EXPECT_EQ(devices_[1].activations, 1);
  EXPECT_EQ(members_[0]->state().status(), 0);
  ASSERT_EQ(
      ReadCfg(kAdminCmdLegacyCommonCfgRead, 2, kLegacyStatus, 1, &out).status,
      kAdminStatusOk);
  EXPECT_EQ(out[0], 7);
  // QUEUE_NOTIFY through the command.
  ASSERT_EQ(
      WriteCfg(kAdminCmdLegacyCommonCfgWrite, 2, kLegacyQueueNotify, {1, 0})
          .status,
      kAdminStatusOk);
  EXPECT_EQ(devices_[1].kicks[1], 1);
}

TEST_F(AdminTest, LegacyCommonConfigRejectsBadOffsetsAndLengths) {
  StartDriver();
  std::vector<uint8_t> out;
  struct Bad {
    uint8_t offset;
    size_t len;
  };
  // Across two registers, empty, past the common area (20 without MSI-X:
  // the vectors at 20 and 22 do not exist), far out.
  for (Bad b : {Bad{2, 4}, Bad{12, 4}, Bad{18, 2}, Bad{0, 0}, Bad{0, 5},
                Bad{20, 2}, Bad{22, 2}, Bad{19, 2}, Bad{255, 1}}) {
    SCOPED_TRACE(::testing::Message()
                 << "offset " << int{b.offset} << " len " << b.len);
    ExpectEinval(
        ReadCfg(kAdminCmdLegacyCommonCfgRead, 1, b.offset, b.len, &out),
        kAdminQualifierInvalidField);
    ExpectEinval(WriteCfg(kAdminCmdLegacyCommonCfgWrite, 1, b.offset,
                          std::vector<uint8_t>(b.len, 1)),
                 kAdminQualifierInvalidField);
  }
  // No side effect from the rejected writes (status at 18 untouched).
  EXPECT_EQ(members_[0]->state().status(), 0);
  EXPECT_EQ(members_[0]->state().stats().resets, 0u);

  // With the member's MSI-X enabled, 20 and 22 are the vectors.
  MsixController* msix = members_[0]->msix();
  ASSERT_NE(msix, nullptr);
  const uint32_t cap = *members_[0]->config_space().FindCapability(kCapIdMsix);
  const uint8_t enable[2] = {0, 0x80};
  members_[0]->ConfigWrite(cap + 2, absl::MakeConstSpan(enable, 2));
  ASSERT_TRUE(msix->enabled());
  ASSERT_EQ(
      WriteCfg(kAdminCmdLegacyCommonCfgWrite, 1, kLegacyConfigVector, {1, 0})
          .status,
      kAdminStatusOk);
  EXPECT_EQ(members_[0]->state().config_vector(), 1);
  ASSERT_EQ(
      ReadCfg(kAdminCmdLegacyCommonCfgRead, 1, kLegacyQueueVector, 2, &out)
          .status,
      kAdminStatusOk);
  EXPECT_EQ(Le(out, 0, 2), 0xffffu);
  ExpectEinval(ReadCfg(kAdminCmdLegacyCommonCfgRead, 1, 24, 1, &out),
               kAdminQualifierInvalidField);
}

TEST_F(AdminTest, LegacyDeviceConfig) {
  StartDriver();
  std::vector<uint8_t> out;
  ASSERT_EQ(ReadCfg(kAdminCmdLegacyDevCfgRead, 1, 0, 8, &out).status,
            kAdminStatusOk);
  EXPECT_THAT(out, ElementsAre(0x34, 0x12, 0x78, 0x56, 0x04, 0x03, 0x02, 0x01));
  ASSERT_EQ(ReadCfg(kAdminCmdLegacyDevCfgRead, 1, 5, 1, &out).status,
            kAdminStatusOk);
  EXPECT_EQ(out[0], 0x03);
  // Little-endian data, whatever the driver.
  ASSERT_EQ(WriteCfg(kAdminCmdLegacyDevCfgWrite, 1, 8, {0x78, 0x56, 0x34, 0x12})
                .status,
            kAdminStatusOk);
  EXPECT_EQ(devices_[0].w(), 0x12345678u);
  EXPECT_EQ(devices_[1].w(), 0u);
  ASSERT_EQ(ReadCfg(kAdminCmdLegacyDevCfgRead, 1, 8, 4, &out).status,
            kAdminStatusOk);
  EXPECT_EQ(Le(out, 0, 4), 0x12345678u);
  // Past the 12 bytes, empty, wider than any field.
  struct Bad {
    uint8_t offset;
    size_t len;
  };
  for (Bad b : {Bad{12, 1}, Bad{11, 2}, Bad{0, 0}, Bad{0, 9}, Bad{200, 4}}) {
    ExpectEinval(ReadCfg(kAdminCmdLegacyDevCfgRead, 1, b.offset, b.len, &out),
                 kAdminQualifierInvalidField);
    ExpectEinval(WriteCfg(kAdminCmdLegacyDevCfgWrite, 1, b.offset,
                          std::vector<uint8_t>(b.len, 0xaa)),
                 kAdminQualifierInvalidField);
  }
  EXPECT_EQ(devices_[0].w(), 0x12345678u);
}

TEST_F(AdminTest, NotifyInfoAndTheNotifyArea) {
  StartDriver();
  std::vector<uint8_t> info(64, 0xee);
  AdminCompletion c = Run(kAdminCmdLegacyNotifyInfo, 2, {}, &info);
  ASSERT_EQ(c.status, kAdminStatusOk);
  EXPECT_EQ(c.result_length, 64u);
  EXPECT_EQ(info[0], kNotifyInfoOwner);
  EXPECT_EQ(info[1], 2);  // BAR 2
  EXPECT_EQ(Le(info, 8, 8), 4u);
  EXPECT_EQ(info[16], kNotifyInfoEnd);
  EXPECT_EQ(owner_->config_space().bar(2).type, BarType::kMemory32);

  // Start member 2 as a legacy driver would, then kick queue 0 through the
  // owner's BAR.
  for (uint8_t s : {1, 3}) {
    ASSERT_EQ(
        WriteCfg(kAdminCmdLegacyCommonCfgWrite, 2, kLegacyStatus, {s}).status,
        kAdminStatusOk);
  }
  ASSERT_EQ(WriteCfg(kAdminCmdLegacyCommonCfgWrite, 2, kLegacyQueuePfn,
                     {0x20, 0, 0, 0})
                .status,
            kAdminStatusOk);
  ASSERT_EQ(
      WriteCfg(kAdminCmdLegacyCommonCfgWrite, 2, kLegacyStatus, {7}).status,
      kAdminStatusOk);
  const uint8_t q0[2] = {0, 0};
  owner_->BarWrite(2, 4, absl::MakeConstSpan(q0, 2));
  EXPECT_EQ(devices_[1].kicks[0], 1);
  EXPECT_EQ(devices_[0].kicks[0], 0);
  // Wrong width, unaligned, another member's slot past the members: nothing.
  owner_->BarWrite(2, 4, absl::MakeConstSpan(q0, 1));
  owner_->BarWrite(2, 6, absl::MakeConstSpan(q0, 2));
  owner_->BarWrite(2, 8, absl::MakeConstSpan(q0, 2));
  EXPECT_EQ(devices_[1].kicks[0], 1);
  EXPECT_EQ(owner_dev_->stats().notifications, 1u);
  // A short result buffer gets the first entry's flags and bar only.
  std::vector<uint8_t> two(2);
  c = Run(kAdminCmdLegacyNotifyInfo, 1, {}, &two);
  EXPECT_EQ(c.status, kAdminStatusOk);
  EXPECT_EQ(c.result_length, 2u);
  EXPECT_THAT(two, ElementsAre(kNotifyInfoOwner, 2));
}

TEST_F(AdminTest, MemberRefusesLegacyDriversOnItsModernInterface) {
  VirtioPciFunction& m = *members_[0];
  EXPECT_EQ(m.config_space().Get16(kRegDeviceId), 0x1041);  // 0x1040 + net
  EXPECT_EQ(m.config_space().bar(kLegacyBar).type, BarType::kNone);
  EXPECT_TRUE(m.state().offered_features().Has(virtio::kFVersion1));
  auto status = [&](uint8_t s) {
    m.BarWrite(kModernBar, kCommonStatus, absl::MakeConstSpan(&s, 1));
    uint8_t r = 0;
    m.BarRead(kModernBar, kCommonStatus, absl::MakeSpan(&r, 1));
    return r;
  };
  status(1);
  status(3);
  // Features without VERSION_1: FEATURES_OK is refused.
  EXPECT_EQ(status(3 | virtio::kStatusFeaturesOk), 3);
  // DRIVER_OK without it fails the device.
  EXPECT_EQ(status(3 | virtio::kStatusDriverOk), 3 | virtio::kStatusNeedsReset);
  EXPECT_FALSE(m.state().active());
  // A modern driver is fine.
  status(0);
  const uint8_t sel1[4] = {1, 0, 0, 0}, v1[4] = {1, 0, 0, 0};
  m.BarWrite(kModernBar, kCommonGfSelect, absl::MakeConstSpan(sel1, 4));
  m.BarWrite(kModernBar, kCommonGf, absl::MakeConstSpan(v1, 4));
  status(1);
  status(3);
  EXPECT_EQ(status(3 | virtio::kStatusFeaturesOk),
            3 | virtio::kStatusFeaturesOk);
}

TEST(AdminOwnerTest, LegacyViewOfATransitionalOwnerHasNoAdminQueue) {
  virtio::RngDevice rng;
  auto mem = *GuestMemoryMmap::Create({{.guest_base = 0, .size = 64 << 10}});
  auto owner = *VirtioAdminOwner::Create(rng, {});
  auto fn = *VirtioPciFunction::Create(
      *owner, *mem, {.mode = VirtioPciMode::kTransitional, .admin_queues = 1});
  auto legacy16 = [&](uint32_t off) {
    uint8_t b[2] = {};
    fn->BarRead(kLegacyBar, off, absl::MakeSpan(b));
    return b[0] | b[1] << 8;
  };
  const uint8_t sel0[2] = {0, 0}, sel1[2] = {1, 0};
  fn->BarWrite(kLegacyBar, kLegacyQueueSelect, sel0);
  EXPECT_EQ(legacy16(kLegacyQueueNum), virtio::RngDevice::kQueueSize);
  fn->BarWrite(kLegacyBar, kLegacyQueueSelect, sel1);  // the admin queue
  EXPECT_EQ(legacy16(kLegacyQueueNum), 0);
  const uint8_t pfn[4] = {4, 0, 0, 0};
  fn->BarWrite(kLegacyBar, kLegacyQueuePfn, pfn);
  EXPECT_FALSE(fn->state().queue_enabled(1));
}

TEST(AdminCreateTest, BadConfigurations) {
  virtio::RngDevice rng;
  auto mem = *GuestMemoryMmap::Create({{.guest_base = 0, .size = 64 << 10}});
  // admin_queues without VIRTIO_F_ADMIN_VQ, or more than the queues.
  EXPECT_THAT(
      VirtioPciFunction::Create(rng, *mem, {.admin_queues = 1}).status(),
      testing::StatusIs(absl::StatusCode::kInvalidArgument));
  auto owner = *VirtioAdminOwner::Create(rng, {});
  EXPECT_THAT(
      VirtioPciFunction::Create(*owner, *mem, {.admin_queues = 3}).status(),
      testing::StatusIs(absl::StatusCode::kInvalidArgument));
  // admin_legacy only for modern, little-endian.
  EXPECT_THAT(VirtioPciFunction::Create(
                  rng, *mem,
                  {.mode = VirtioPciMode::kTransitional, .admin_legacy = true})
                  .status(),
              testing::StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(VirtioPciFunction::Create(
                  rng, *mem,
                  {.guest_endian = virtio::Endian::kBig, .admin_legacy = true})
                  .status(),
              testing::StatusIs(absl::StatusCode::kInvalidArgument));
  // Members need admin_legacy; the notify area needs members and BAR 1..5.
  auto plain = *VirtioPciFunction::Create(rng, *mem, {});
  EXPECT_THAT(owner->AddMember(plain.get()),
              testing::StatusIs(absl::StatusCode::kInvalidArgument));
  auto ofn = *VirtioPciFunction::Create(*owner, *mem, {.admin_queues = 1});
  EXPECT_THAT(owner->InstallNotifyArea(*ofn, 2),
              testing::StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(owner->InstallSriovCapability(*ofn, 0x1044),
              testing::StatusIs(absl::StatusCode::kFailedPrecondition));
  auto member = *VirtioPciFunction::Create(rng, *mem, {.admin_legacy = true});
  ASSERT_OK(owner->AddMember(member.get()));
  EXPECT_THAT(owner->InstallNotifyArea(*ofn, 0),
              testing::StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(owner->InstallNotifyArea(*ofn, 1),  // MSI-X's BAR
              testing::StatusIs(absl::StatusCode::kAlreadyExists));
  // SR-IOV needs a PCI Express (4 KiB) configuration space; once only.
  EXPECT_THAT(owner->InstallSriovCapability(*plain, 0x1044),
              testing::StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_OK(owner->InstallSriovCapability(*ofn, 0x1044));
  EXPECT_THAT(owner->InstallSriovCapability(*ofn, 0x1044),
              testing::StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(VirtioAdminOwner::Create(rng, {.admin_queue_size = 3}).status(),
              testing::StatusIs(absl::StatusCode::kInvalidArgument));
  // The driver needs an owner with an admin queue.
  EXPECT_THAT(AdminQueueDriver::Create(*plain, *mem, {}).status(),
              testing::StatusIs(absl::StatusCode::kFailedPrecondition));
  auto tiny = *GuestMemoryMmap::Create({{.guest_base = 0, .size = 4096}});
  EXPECT_THAT(AdminQueueDriver::Create(*ofn, *tiny, {}).status(),
              testing::StatusIs(absl::StatusCode::kResourceExhausted));
}

// Raw chains on the admin queue: the owner set up by hand so that the test
// lays out any buffers.
class RawQueueTest : public AdminTest {
 protected:
  void SetUp() override {
    AdminTest::SetUp();
    auto w = [&](uint32_t off, uint64_t v, int width) {
      uint8_t b[8];
      for (int i = 0; i < width; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
      owner_->BarWrite(kModernBar, off, absl::MakeConstSpan(b, width));
    };
    w(kCommonStatus, 3, 1);
    w(kCommonGfSelect, 1, 4);
    w(kCommonGf, (1u << 0) | (1u << (virtio::kFAdminVq - 32)), 4);
    w(kCommonStatus, 3 | virtio::kStatusFeaturesOk, 1);
    w(kCommonQueueSelect, 1, 2);
    w(kCommonQueueSize, 8, 2);
    queue_.emplace(
        *vmm_, DriverQueue::Layout{
                   .size = 8, .desc = 0x1000, .avail = 0x2000, .used = 0x3000});
    w(kCommonQueueDesc, 0x1000, 8);
    w(kCommonQueueDriver, 0x2000, 8);
    w(kCommonQueueDevice, 0x3000, 8);
    w(kCommonQueueEnable, 1, 2);
    w(kCommonStatus, 7 | virtio::kStatusFeaturesOk, 1);
    ASSERT_TRUE(owner_->state().active());
    EnableVfs(2);
  }
  void Kick() {
    const uint8_t q[2] = {1, 0};
    owner_->BarWrite(kModernBar, kModernNotifyOffset + 4,
                     absl::MakeConstSpan(q, 2));
  }
  std::optional<DriverQueue> queue_;
};

TEST_F(RawQueueTest, ShortAndOddChains) {
  // A 4-byte readable part {opcode 0, group 1}: the member id and the rest
  // read as zero: LIST_QUERY works. Result of 16 bytes.
  const uint8_t cmd[4] = {0, 0, 1, 0};
  ASSERT_OK(vmm_->Write(0x8000, cmd));
  ASSERT_OK(vmm_->Fill(0x9000, 64, 0xee));
  ASSERT_OK(
      queue_->AddChain({{0x8000, 4, false}, {0x9000, 16, true}}).status());
  Kick();
  std::optional<virtqueue::VirtqUsedElem> u = queue_->PopUsed();
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->len, 16u);
  uint8_t res[18];
  ASSERT_OK(vmm_->Read(0x9000, absl::MakeSpan(res)));
  EXPECT_EQ(res[0] | res[1] << 8, kAdminStatusOk);
  EXPECT_EQ(res[8], 0x7f);   // the notify area is installed
  EXPECT_EQ(res[16], 0xee);  // untouched past the used length

  // Nothing readable at all: group 0, INVALID_GROUP; status only (8 bytes
  // of a 64-byte writable part).
  ASSERT_OK(queue_->AddChain({{0x9000, 64, true}}).status());
  Kick();
  u = queue_->PopUsed();
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->len, 8u);
  ASSERT_OK(vmm_->Read(0x9000, absl::MakeSpan(res, 4)));
  EXPECT_EQ(res[0] | res[1] << 8, kAdminStatusEinval);
  EXPECT_EQ(res[2] | res[3] << 8, kAdminQualifierInvalidGroup);

  // A writable part of 3 bytes: status and half the qualifier.
  ASSERT_OK(queue_->AddChain({{0x8000, 4, false}, {0x9000, 3, true}}).status());
  Kick();
  u = queue_->PopUsed();
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->len, 3u);

  // No writable part: the command runs, nothing is written.
  ASSERT_OK(queue_->AddChain({{0x8000, 4, false}}).status());
  Kick();
  u = queue_->PopUsed();
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->len, 0u);

  // A readable part split over three descriptors and a long tail.
  uint8_t rd[24 + 1] = {};
  rd[0] = kAdminCmdLegacyCommonCfgRead;  // not in use yet: INVALID_OPCODE
  rd[2] = 1;
  rd[16] = 1;
  rd[24] = 18;
  ASSERT_OK(vmm_->Write(0x8000, rd));
  ASSERT_OK(queue_
                ->AddChain({{0x8000, 3, false},
                            {0x8003, 20, false},
                            {0x8017, 2000, false},
                            {0x9000, 9, true}})
                .status());
  Kick();
  u = queue_->PopUsed();
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->len, 8u);
  ASSERT_OK(vmm_->Read(0x9000, absl::MakeSpan(res, 4)));
  EXPECT_EQ(res[2] | res[3] << 8, kAdminQualifierInvalidOpcode);
  EXPECT_EQ(owner_->state().status() & virtio::kStatusNeedsReset, 0);
}

TEST_F(RawQueueTest, MalformedChainsNeedReset) {
  // Writable before readable: the ring's rule, DEVICE_NEEDS_RESET.
  ASSERT_OK(
      queue_->AddChain({{0x9000, 8, true}, {0x8000, 24, false}}).status());
  Kick();
  EXPECT_NE(owner_->state().status() & virtio::kStatusNeedsReset, 0);
  EXPECT_FALSE(queue_->PopUsed().has_value());
  EXPECT_EQ(owner_dev_->stats().commands, 0u);
}

TEST_F(RawQueueTest, BufferOutsideMemoryNeedsReset) {
  ASSERT_OK(
      queue_->AddChain({{0x8000, 24, false}, {0xfff0, 0x100, true}}).status());
  Kick();
  EXPECT_NE(owner_->state().status() & virtio::kStatusNeedsReset, 0);
  EXPECT_EQ(owner_dev_->stats().commands, 0u);
}

TEST_F(RawQueueTest, AdminQueueIgnoredWithoutTheFeature) {
  // Same owner, a driver that did not accept VIRTIO_F_ADMIN_VQ: kicks of the
  // admin queue do nothing.
  uint8_t zero = 0;
  owner_->BarWrite(kModernBar, kCommonStatus, absl::MakeConstSpan(&zero, 1));
  auto w = [&](uint32_t off, uint64_t v, int width) {
    uint8_t b[8];
    for (int i = 0; i < width; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    owner_->BarWrite(kModernBar, off, absl::MakeConstSpan(b, width));
  };
  w(kCommonStatus, 3, 1);
  w(kCommonGfSelect, 1, 4);
  w(kCommonGf, 1, 4);
  w(kCommonStatus, 3 | virtio::kStatusFeaturesOk, 1);
  w(kCommonQueueSelect, 1, 2);
  w(kCommonQueueSize, 8, 2);
  queue_.emplace(
      *vmm_, DriverQueue::Layout{
                 .size = 8, .desc = 0x1000, .avail = 0x2000, .used = 0x3000});
  w(kCommonQueueDesc, 0x1000, 8);
  w(kCommonQueueDriver, 0x2000, 8);
  w(kCommonQueueDevice, 0x3000, 8);
  w(kCommonQueueEnable, 1, 2);
  w(kCommonStatus, 7 | virtio::kStatusFeaturesOk, 1);
  ASSERT_TRUE(owner_->state().active());
  ASSERT_OK(
      queue_->AddChain({{0x8000, 24, false}, {0x9000, 16, true}}).status());
  Kick();
  EXPECT_FALSE(queue_->PopUsed().has_value());
  EXPECT_EQ(owner_dev_->stats().commands, 0u);
}

TEST_F(AdminTest, ExecuteDirectlyWithShortBuffers) {
  // Execute is what the queue calls; spans of any size are safe.
  uint8_t res[8];
  EXPECT_EQ(owner_dev_->Execute({}, {}), 0u);
  EXPECT_EQ(owner_dev_->Execute({}, absl::MakeSpan(res, 1)), 1u);
  EXPECT_EQ(res[0], kAdminStatusEinval);
  const uint8_t q[2] = {0, 0};
  EXPECT_EQ(owner_dev_->Execute(q, absl::MakeSpan(res)), 8u);
  EXPECT_EQ(res[2], kAdminQualifierInvalidGroup);
}

}  // namespace
}  // namespace vmmkit::pci
