// benches/admin_shim_bench: a legacy register read, a register write and a
// queue notification through the legacy shim (pci/legacy_shim.h: each access
// an administration command on the owner's admin queue, driven by
// AdminQueueDriver, executed on the member) against the same access on a
// native transitional function's legacy I/O BAR. ns per access.
//
// The device is trivial (ProcessQueue counts, 8 bytes of config), so the
// figures are the transport's. Both functions were probed as a legacy
// driver does (status, features, PFN, DRIVER_OK). Accesses go through
// PciFunction::BarRead/BarWrite on BAR 0, as the bus delivers them.
// - StatusRead: 1-byte read of the status register (18).
// - ConfigRead4: 4-byte device-config read at 20 (one LEGACY_DEV_CFG_READ).
// - ConfigRead1x4: the same 4 bytes one at a time, as Linux's legacy
//   vp_get does (4 commands through the shim).
// - QueueSelectWrite: 2-byte write of QUEUE_SELECT (14).
// - Notify: 2-byte QUEUE_NOTIFY write (16): the shim writes the owner's
//   notify area (LEGACY_NOTIFY_INFO), no command.
// - NotifyByCommand: the shim's fallback when the owner gives no notify
//   address (a LEGACY_COMMON_CFG_WRITE per kick).
//
//   bazel run -c opt //benches:admin_shim_bench
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "benchmark/benchmark.h"
#include "pci/admin_driver.h"
#include "pci/legacy_shim.h"
#include "pci/virtio_admin.h"
#include "pci/virtio_pci.h"
#include "virtio-device/virtio_device.h"
#include "virtqueue/guest_memory.h"

namespace vmmkit::pci {
namespace {

void Check(const absl::Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "setup failed: %s\n", s.ToString().c_str());
    std::abort();
  }
}

class NullDevice final : public virtio::VirtioDevice {
 public:
  virtio::DeviceType type() const override { return virtio::DeviceType::kNet; }
  absl::Span<const uint16_t> queue_max_sizes() const override { return sizes_; }
  virtio::Features offered_features() const override {
    return virtio::Features::Of({virtio::kFVersion1});
  }
  uint32_t config_size() const override { return 8; }
  void ReadConfig(uint32_t offset, absl::Span<uint8_t> data,
                  virtio::Endian) override {
    for (size_t i = 0; i < data.size(); ++i) {
      data[i] = static_cast<uint8_t>(offset + i);
    }
  }
  absl::Status Activate(virtio::DeviceContext&) override {
    return absl::OkStatus();
  }
  void Reset() override {}
  void ProcessQueue(uint16_t) override { ++kicks; }
  uint64_t kicks = 0;

 private:
  const uint16_t sizes_[2] = {256, 256};
};

// Forwards to the admin queue driver but hides the notify address, so that
// kicks become LEGACY_COMMON_CFG_WRITE commands.
class NoNotifyInfo final : public AdminCommandTransport {
 public:
  explicit NoNotifyInfo(AdminCommandTransport& t) : t_(t) {}
  absl::StatusOr<AdminCompletion> Execute(uint16_t opcode, uint16_t group,
                                          uint64_t member,
                                          absl::Span<const uint8_t> data,
                                          absl::Span<uint8_t> result) override {
    if (opcode == kAdminCmdLegacyNotifyInfo) {
      return AdminCompletion{kAdminStatusEinval, kAdminQualifierInvalidOpcode,
                             0};
    }
    return t_.Execute(opcode, group, member, data, result);
  }
  void WriteOwnerBar16(int bar, uint64_t offset, uint16_t value) override {
    t_.WriteOwnerBar16(bar, offset, value);
  }

 private:
  AdminCommandTransport& t_;
};

struct Fixture {
  explicit Fixture(bool shim, bool notify_info = true) {
    guest = *virtqueue::GuestMemoryMmap::Create(
        {{.guest_base = 0, .size = 4 << 20}});
    vmm = *virtqueue::GuestMemoryMmap::Create(
        {{.guest_base = 0, .size = 64 << 10}});
    if (!shim) {
      auto f = VirtioPciFunction::Create(
          dev, *guest, {.mode = VirtioPciMode::kTransitional});
      Check(f.status());
      fn = *std::move(f);
      target = fn.get();
    } else {
      auto f = VirtioPciFunction::Create(dev, *guest, {.admin_legacy = true});
      Check(f.status());
      fn = *std::move(f);
      owner_dev = *VirtioAdminOwner::Create(owner_inner, {});
      Check(owner_dev->AddMember(fn.get()));
      auto o = VirtioPciFunction::Create(*owner_dev, *vmm, {.admin_queues = 1});
      Check(o.status());
      owner = *std::move(o);
      Check(owner_dev->InstallSriovCapability(*owner, 0x1041));
      Check(owner_dev->InstallNotifyArea(*owner, 2));
      auto d = AdminQueueDriver::Create(*owner, *vmm, {});
      Check(d.status());
      admin = *std::move(d);
      hide = std::make_unique<NoNotifyInfo>(*admin);
      AdminCommandTransport& t =
          notify_info ? static_cast<AdminCommandTransport&>(*admin) : *hide;
      auto s = LegacyShimFunction::Create(*fn, t,
                                          {.member_id = 1,
                                           .type = virtio::DeviceType::kNet,
                                           .device_config_size = 8});
      Check(s.status());
      legacy_shim = *std::move(s);
      target = legacy_shim.get();
    }
    // A legacy driver's probe: reset, ACK, DRIVER, features, two queues,
    // DRIVER_OK.
    Write(18, {0});
    Write(18, {1});
    Write(18, {3});
    Write(4, {0, 0, 0, 0});
    for (uint8_t q = 0; q < 2; ++q) {
      Write(14, {q, 0});
      Write(8, {static_cast<uint8_t>(0x10 + 0x10 * q), 0, 0, 0});
    }
    Write(18, {7});
    if (!fn->state().active()) {
      std::fprintf(stderr, "setup failed: device not active\n");
      std::abort();
    }
  }
  void Write(uint64_t off, std::initializer_list<uint8_t> b) {
    target->BarWrite(0, off, absl::MakeConstSpan(b.begin(), b.size()));
  }

  NullDevice dev, owner_inner;
  std::unique_ptr<virtqueue::GuestMemoryMmap> guest, vmm;
  std::unique_ptr<VirtioPciFunction> fn;
  std::unique_ptr<VirtioAdminOwner> owner_dev;
  std::unique_ptr<VirtioPciFunction> owner;
  std::unique_ptr<AdminQueueDriver> admin;
  std::unique_ptr<NoNotifyInfo> hide;
  std::unique_ptr<LegacyShimFunction> legacy_shim;
  PciFunction* target = nullptr;
};

void StatusRead(benchmark::State& state) {
  Fixture f(state.range(0) != 0);
  uint8_t b = 0;
  for (auto _ : state) {
    f.target->BarRead(0, 18, absl::MakeSpan(&b, 1));
    benchmark::DoNotOptimize(b);
  }
  if (b != 7) state.SkipWithError("status is not 7");
}

void ConfigRead4(benchmark::State& state) {
  Fixture f(state.range(0) != 0);
  uint8_t b[4] = {};
  for (auto _ : state) {
    f.target->BarRead(0, 20, absl::MakeSpan(b, 4));
    benchmark::DoNotOptimize(b);
  }
  if (b[3] != 3) state.SkipWithError("wrong config bytes");
}

void ConfigRead1x4(benchmark::State& state) {
  Fixture f(state.range(0) != 0);
  uint8_t b[4] = {};
  for (auto _ : state) {
    for (int i = 0; i < 4; ++i)
      f.target->BarRead(0, 20 + i, absl::MakeSpan(b + i, 1));
    benchmark::DoNotOptimize(b);
  }
  if (b[3] != 3) state.SkipWithError("wrong config bytes");
}

void QueueSelectWrite(benchmark::State& state) {
  Fixture f(state.range(0) != 0);
  uint8_t q[2] = {0, 0};
  for (auto _ : state) {
    q[0] ^= 1;
    f.target->BarWrite(0, 14, absl::MakeConstSpan(q, 2));
  }
}

void Notify(benchmark::State& state) {
  Fixture f(state.range(0) != 0);
  const uint8_t q[2] = {1, 0};
  const uint64_t before = f.dev.kicks;
  for (auto _ : state) f.target->BarWrite(0, 16, absl::MakeConstSpan(q, 2));
  if (f.dev.kicks - before != static_cast<uint64_t>(state.iterations())) {
    state.SkipWithError("kicks lost");
  }
}

void NotifyByCommand(benchmark::State& state) {
  Fixture f(/*shim=*/true, /*notify_info=*/false);
  const uint8_t q[2] = {1, 0};
  const uint64_t before = f.dev.kicks;
  for (auto _ : state) f.target->BarWrite(0, 16, absl::MakeConstSpan(q, 2));
  if (f.dev.kicks - before != static_cast<uint64_t>(state.iterations())) {
    state.SkipWithError("kicks lost");
  }
}

// Arg 0: native transitional function; 1: through the shim.
BENCHMARK(StatusRead)->ArgName("shim")->Arg(0)->Arg(1);
BENCHMARK(ConfigRead4)->ArgName("shim")->Arg(0)->Arg(1);
BENCHMARK(ConfigRead1x4)->ArgName("shim")->Arg(0)->Arg(1);
BENCHMARK(QueueSelectWrite)->ArgName("shim")->Arg(0)->Arg(1);
BENCHMARK(Notify)->ArgName("shim")->Arg(0)->Arg(1);
BENCHMARK(NotifyByCommand);

}  // namespace
}  // namespace vmmkit::pci

BENCHMARK_MAIN();
