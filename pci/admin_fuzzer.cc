// pci/admin_fuzzer.cc: libFuzzer target for group administration commands.
//
// An owner (virtio-rng plus an admin queue, a notify area in BAR 2) with two
// modern-only members (virtio-rng and a 12-byte-config device), a legacy shim
// in front of member 1 and an AdminQueueDriver, over 1 MiB of guest memory
// and 64 KiB of VMM memory, receive a stream of operations (opcode byte, then
// arguments; zeros past the end of the input):
//   0 a raw command: arbitrary bytes (up to 64) and a result size, straight
//     to VirtioAdminOwner::Execute
//   1 a command through the admin queue: opcode, group, member (small values
//     mostly), up to 16 data bytes, a result size
//   2 a well-formed legacy register command for a member (offset from the
//     legacy table, its width, a value), through the queue
//   3/4 shim BAR 0 read/write (any offset near the BAR, widths 0..8)
//   5/6 shim configuration read/write (any offset, widths 1, 2, 4)
//   7 a 2-byte write into the owner's notify area (any offset)
//   8 a raw chain on the admin queue after taking it over (descriptor
//     shapes: readable/writable lengths, order, addresses in or out of
//     memory), then a kick
//   9 owner reset and a new AdminQueueDriver
//   10 guest-memory poke (member rings)
//   11 MSI-X of member 1 on or off
//   12 the owner's SR-IOV capability: NumVFs or SR-IOV Control written
// Invariants checked at every step: Execute writes at most the result
// buffer; a status is OK (qualifier 0) or EINVAL with a qualifier 2..5; an
// EINVAL command changes no member state; the shim's identity never changes;
// the owner is never DEVICE_NEEDS_RESET while only its driver used the queue.
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "absl/types/span.h"
#include "base/fuzz_input.h"
#include "pci/admin_driver.h"
#include "pci/legacy_shim.h"
#include "pci/virtio_admin.h"
#include "pci/virtio_pci.h"
#include "virtio-device/config_space.h"
#include "virtio-device/rng.h"
#include "virtqueue/driver_queue.h"
#include "virtqueue/guest_memory.h"

namespace vmmkit::pci {
namespace {

constexpr int kMaxSteps = 1024;
constexpr uint64_t kGuestSize = 1 << 20;
constexpr uint64_t kVmmSize = 64 << 10;

using Input = ::vmmkit::FuzzInput;

class CfgDevice final : public virtio::VirtioDevice {
 public:
  CfgDevice() : config_(12) {
    config_.DeclareField(0, 4);
    config_.DeclareField(4, 4);
    config_.DeclareField(8, 4);
    config_.SetU32(0, 0x11223344);
  }
  virtio::DeviceType type() const override {
    return virtio::DeviceType::kBlock;
  }
  absl::Span<const uint16_t> queue_max_sizes() const override { return sizes_; }
  virtio::Features offered_features() const override {
    return virtio::Features::Of({virtio::kFVersion1, 1, 2});
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
    for (size_t i = 0; i < data.size(); ++i) config_.SetU8(offset + i, le[i]);
  }
  absl::Status Activate(virtio::DeviceContext&) override {
    return absl::OkStatus();
  }
  void Reset() override {}
  void ProcessQueue(uint16_t) override {}

 private:
  const uint16_t sizes_[1] = {16};
  virtio::ConfigSpace config_;
};

// What a command must not change when it fails with EINVAL.
struct MemberSnapshot {
  uint8_t status;
  uint32_t features;
  uint16_t config_vector;
  bool q0;
  uint64_t q0_desc;
  bool operator==(const MemberSnapshot&) const = default;
};
MemberSnapshot Snap(const VirtioPciFunction& m) {
  const virtio::DeviceState& s = m.state();
  return {s.status(), s.DriverFeatures(0), s.config_vector(),
          s.queue_enabled(0), s.queue_config(0).desc_table()};
}

class Harness {
 public:
  Harness(const virtqueue::GuestMemory& guest,
          const virtqueue::GuestMemory& vmm)
      : guest_(guest), vmm_(vmm) {
    auto m1 = VirtioPciFunction::Create(rng1_, guest, {.admin_legacy = true});
    auto m2 = VirtioPciFunction::Create(cfg_, guest, {.admin_legacy = true});
    VMMKIT_FUZZ_CHECK(m1.ok() && m2.ok());
    members_[0] = *std::move(m1);
    members_[1] = *std::move(m2);
    auto o = VirtioAdminOwner::Create(owner_rng_, {.admin_queue_size = 16});
    VMMKIT_FUZZ_CHECK(o.ok());
    owner_ = *std::move(o);
    VMMKIT_FUZZ_CHECK(owner_->AddMember(members_[0].get()).ok());
    VMMKIT_FUZZ_CHECK(owner_->AddMember(members_[1].get()).ok());
    auto f = VirtioPciFunction::Create(*owner_, vmm, {.admin_queues = 1});
    VMMKIT_FUZZ_CHECK(f.ok());
    owner_fn_ = *std::move(f);
    VMMKIT_FUZZ_CHECK(owner_->InstallSriovCapability(*owner_fn_, 0x1044).ok());
    VMMKIT_FUZZ_CHECK(owner_->InstallNotifyArea(*owner_fn_, 2).ok());
    NewDriver();
  }

  void Step(Input& in) {
    switch (in.U8() % 13) {
      case 0:
        RawExecute(in);
        break;
      case 1:
        QueueCommand(in);
        break;
      case 2:
        LegacyRegister(in);
        break;
      case 3:
      case 4: {
        const bool write = in.U8() & 1;
        const uint64_t off = in.U8() % 80;
        const size_t width = in.U8() % 9;
        uint8_t b[8];
        for (uint8_t& x : b) x = in.U8();
        if (shim_ == nullptr) break;
        if (write) {
          shim_->BarWrite(0, off, absl::MakeConstSpan(b, width));
        } else {
          shim_->BarRead(0, off, absl::MakeSpan(b, width));
        }
        break;
      }
      case 5:
      case 6: {
        const bool write = in.U8() & 1;
        const uint32_t off = in.U8();
        static constexpr size_t kW[] = {1, 2, 4, 4};
        const size_t width = kW[in.U8() % 4];
        uint8_t b[4];
        for (uint8_t& x : b) x = in.U8();
        if (shim_ == nullptr) break;
        const uint32_t aligned = off & ~static_cast<uint32_t>(width - 1);
        if (write) {
          shim_->ConfigWrite(aligned, absl::MakeConstSpan(b, width));
        } else {
          shim_->ConfigRead(aligned, absl::MakeSpan(b, width));
        }
        break;
      }
      case 7: {
        const uint64_t off = in.U8() % 16;
        const uint8_t q[2] = {static_cast<uint8_t>(in.U8() % 3), 0};
        owner_fn_->BarWrite(2, off, absl::MakeConstSpan(q, 2));
        break;
      }
      case 8:
        RawChain(in);
        break;
      case 9:
        NewDriver();
        break;
      case 10: {
        const uint64_t addr = in.U32() % kGuestSize;
        const uint8_t v = in.U8();
        (void)guest_.Write(addr, absl::MakeConstSpan(&v, 1));
        break;
      }
      case 11: {
        const uint32_t cap =
            members_[0]->config_space().FindCapability(kCapIdMsix).value_or(0);
        const uint8_t v[2] = {0, static_cast<uint8_t>(in.U8() & 0x80)};
        if (cap != 0)
          members_[0]->ConfigWrite(cap + 2, absl::MakeConstSpan(v, 2));
        break;
      }
      case 12: {
        const uint32_t cap =
            *owner_fn_->config_space().FindExtendedCapability(kExtCapIdSriov);
        const uint32_t reg = (in.U8() & 1) ? kSriovNumVfs : kSriovControl;
        const uint8_t v[2] = {in.U8(), in.U8()};
        owner_fn_->ConfigWrite(cap + reg, absl::MakeConstSpan(v, 2));
        VMMKIT_FUZZ_CHECK(owner_->enabled_members() <= owner_->num_members());
        break;
      }
    }
    CheckInvariants();
  }

 private:
  void NewDriver() {
    shim_.reset();
    driver_.reset();
    raw_.reset();
    const uint8_t zero = 0;
    owner_fn_->BarWrite(kModernBar, kCommonStatus,
                        absl::MakeConstSpan(&zero, 1));
    auto d = AdminQueueDriver::Create(*owner_fn_, vmm_, {.max_polls = 2});
    VMMKIT_FUZZ_CHECK(d.ok());  // an owner we hold always probes
    driver_ = *std::move(d);
    driver_owns_queue_ = true;
    auto s = LegacyShimFunction::Create(
        *members_[0], *driver_,
        {.member_id = 1, .type = virtio::DeviceType::kRng});
    VMMKIT_FUZZ_CHECK(s.ok());
    shim_ = *std::move(s);
  }

  void CheckResult(absl::Span<const uint8_t> result, size_t n) {
    VMMKIT_FUZZ_CHECK(n <= result.size());
    if (n < 4) return;
    const uint16_t status = result[0] | result[1] << 8;
    const uint16_t q = result[2] | result[3] << 8;
    VMMKIT_FUZZ_CHECK(status == kAdminStatusOk || status == kAdminStatusEinval);
    if (status == kAdminStatusOk) VMMKIT_FUZZ_CHECK(q == kAdminQualifierOk);
    if (status == kAdminStatusEinval) {
      VMMKIT_FUZZ_CHECK(q >= kAdminQualifierInvalidOpcode &&
                        q <= kAdminQualifierInvalidMember);
    }
  }

  void RawExecute(Input& in) {
    const size_t len = in.U8() % 65;
    std::vector<uint8_t> cmd(len);
    for (uint8_t& b : cmd) b = in.U8();
    if (len >= 2) cmd[1] = 0;  // opcodes mostly in range
    if (len >= 4) cmd[3] = 0;
    std::vector<uint8_t> res(in.U8() % 96, 0xcc);
    const MemberSnapshot before[2] = {Snap(*members_[0]), Snap(*members_[1])};
    const size_t n = owner_->Execute(cmd, absl::MakeSpan(res));
    CheckResult(res, n);
    for (size_t i = n; i < res.size(); ++i) VMMKIT_FUZZ_CHECK(res[i] == 0xcc);
    if (n >= 2 && (res[0] | res[1] << 8) == kAdminStatusEinval) {
      VMMKIT_FUZZ_CHECK(Snap(*members_[0]) == before[0]);
      VMMKIT_FUZZ_CHECK(Snap(*members_[1]) == before[1]);
    }
  }

  void QueueCommand(Input& in) {
    if (!driver_owns_queue_) return;
    const uint16_t opcode = in.U8() % 9;
    const uint16_t group = in.U8() % 3;
    const uint64_t member = in.U8() % 4;
    std::vector<uint8_t> data(in.U8() % 17);
    for (uint8_t& b : data) b = in.U8();
    std::vector<uint8_t> res(in.U8() % 72);
    absl::StatusOr<AdminCompletion> c =
        driver_->Execute(opcode, group, member, data, absl::MakeSpan(res));
    VMMKIT_FUZZ_CHECK(c.ok());  // the owner completes every well-formed chain
    VMMKIT_FUZZ_CHECK(c->result_length <= res.size());
    VMMKIT_FUZZ_CHECK(c->status == kAdminStatusOk ||
                      c->status == kAdminStatusEinval);
  }

  void LegacyRegister(Input& in) {
    if (!driver_owns_queue_) return;
    static constexpr uint8_t kOff[] = {0, 4, 8, 12, 14, 16, 18, 19, 20, 22};
    static constexpr uint8_t kWidth[] = {4, 4, 4, 2, 2, 2, 1, 1, 2, 2};
    static constexpr uint8_t kStatus[] = {0, 1, 3, 7, 0x80, 0x40, 11};
    const int r = in.U8() % 10;
    const uint64_t member = 1 + in.U8() % 2;
    const bool read = in.U8() & 1;
    uint32_t v = in.U32();
    if (kOff[r] == 18) v = kStatus[v % 7];
    if (kOff[r] == 8) v &= 0xff;  // PFNs inside guest memory mostly
    if (read) {
      std::vector<uint8_t> res(kWidth[r]);
      const uint8_t off = kOff[r];
      auto c = driver_->Execute(kAdminCmdLegacyCommonCfgRead, kAdminGroupSriov,
                                member, absl::MakeConstSpan(&off, 1),
                                absl::MakeSpan(res));
      VMMKIT_FUZZ_CHECK(c.ok());
      return;
    }
    std::vector<uint8_t> data(8 + kWidth[r], 0);
    data[0] = kOff[r];
    for (int i = 0; i < kWidth[r]; ++i) data[8 + i] = uint8_t(v >> (8 * i));
    auto c = driver_->Execute(kAdminCmdLegacyCommonCfgWrite, kAdminGroupSriov,
                              member, data, {});
    VMMKIT_FUZZ_CHECK(c.ok());
  }

  void RawChain(Input& in) {
    if (driver_owns_queue_) {
      // Take the queue over: the driver's ring state is gone.
      shim_.reset();
      driver_.reset();
      driver_owns_queue_ = false;
      // The driver's layout (admin_driver.cc): desc 0, avail 0x1000, used
      // 0x2000, size 8. The owner's queue has consumed everything the driver
      // published: carry on from there.
      const uint16_t published = LoadAvailIdx();
      raw_.emplace(vmm_,
                   virtqueue::DriverQueue::Layout{
                       .size = 8, .desc = 0, .avail = 0x1000, .used = 0x2000});
      raw_->SetAvailIdx(published);
    }
    const int n = 1 + in.U8() % 4;
    std::vector<virtqueue::DriverQueue::Buffer> bufs;
    for (int i = 0; i < n; ++i) {
      const uint8_t shape = in.U8();
      uint64_t addr = 0x8000 + (in.U8() % 32) * 256;
      if (shape & 0x80) addr = kVmmSize - 16;  // runs off the end
      bufs.push_back({addr, static_cast<uint32_t>(in.U8()), (shape & 1) != 0});
    }
    for (int i = 0; i < 64; ++i) {
      const uint8_t b = in.U8();
      (void)vmm_.Write(0x8000 + i, absl::MakeConstSpan(&b, 1));
    }
    if (!raw_->AddChain(bufs).ok()) return;
    const uint8_t q[2] = {1, 0};
    owner_fn_->BarWrite(kModernBar, kModernNotifyOffset + 4,
                        absl::MakeConstSpan(q, 2));
    while (raw_->PopUsed().has_value()) {
    }
  }

  uint16_t LoadAvailIdx() {
    uint8_t b[2] = {};
    (void)vmm_.Read(0x1000 + 2, absl::MakeSpan(b));
    return static_cast<uint16_t>(b[0] | b[1] << 8);
  }

  void CheckInvariants() {
    if (shim_ != nullptr) {
      VMMKIT_FUZZ_CHECK(shim_->config_space().Get16(kRegDeviceId) == 0x1005);
      VMMKIT_FUZZ_CHECK(shim_->config_space().Get8(kRegRevisionId) == 0);
      VMMKIT_FUZZ_CHECK(shim_->config_space().Get16(kRegSubsystemId) == 4);
    }
    if (driver_owns_queue_) {
      VMMKIT_FUZZ_CHECK(
          !(owner_fn_->state().status() & virtio::kStatusNeedsReset));
    }
  }

  const virtqueue::GuestMemory& guest_;
  const virtqueue::GuestMemory& vmm_;
  virtio::RngDevice rng1_, owner_rng_;
  CfgDevice cfg_;
  std::unique_ptr<VirtioPciFunction> members_[2];
  std::unique_ptr<VirtioAdminOwner> owner_;
  std::unique_ptr<VirtioPciFunction> owner_fn_;
  std::unique_ptr<AdminQueueDriver> driver_;
  std::unique_ptr<LegacyShimFunction> shim_;
  std::optional<virtqueue::DriverQueue> raw_;
  bool driver_owns_queue_ = false;
};

void Clear(const virtqueue::GuestMemoryMmap& m, uint64_t size) {
  uint8_t* host = m.HostPointer(0, size);
  if (madvise(host, size, MADV_DONTNEED) != 0) std::memset(host, 0, size);
}

}  // namespace
}  // namespace vmmkit::pci

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using vmmkit::virtqueue::GuestMemoryMmap;
  static GuestMemoryMmap* guest = [] {
    auto m = GuestMemoryMmap::Create(
        {{.guest_base = 0, .size = vmmkit::pci::kGuestSize}});
    if (!m.ok()) std::abort();
    return m->release();
  }();
  static GuestMemoryMmap* vmm = [] {
    auto m = GuestMemoryMmap::Create(
        {{.guest_base = 0, .size = vmmkit::pci::kVmmSize}});
    if (!m.ok()) std::abort();
    return m->release();
  }();
  vmmkit::pci::Clear(*guest, vmmkit::pci::kGuestSize);
  vmmkit::pci::Clear(*vmm, vmmkit::pci::kVmmSize);
  vmmkit::pci::Input in(data, size);
  vmmkit::pci::Harness h(*guest, *vmm);
  for (int i = 0; i < vmmkit::pci::kMaxSteps && !in.done(); ++i) h.Step(in);
  return 0;
}
