// benches/pci_notify_bench: the cost of a driver's doorbell write and of a
// device-config read through the virtio-pci transport, in ns per access.
//
// The device is a trivial one (ProcessQueue does nothing, 8 bytes of config)
// so that the figures are the transport's: register decode, DeviceState's
// checks, and the call into the device. Each function has been probed the
// way a driver does (legacy: status, features, PFN, DRIVER_OK; modern:
// status, features, FEATURES_OK, queue addresses, queue_enable, DRIVER_OK),
// so notifications reach ProcessQueue.
// - LegacyNotify: BarWrite(BAR 0, offset 16, le16 queue).
// - ModernNotify: BarWrite(BAR 4, notify + 4 * queue, le16 queue).
// - ModernNotifyData: the same, 4 bytes of notification data.
// - NotifyQueue: the ioeventfd path (no register decode), for reference.
// - LegacyConfigRead / ModernConfigRead: a 4-byte device-config read (legacy
//   at BAR 0 offset 20 without MSI-X; modern at BAR 4 device offset).
// - *Bus variants: the same access as a guest exit delivers it, through
//   RootBus::PioWrite / MmioWrite / MmioRead (BAR routing included).
//
//   bazel run -c opt //benches:pci_notify_bench
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "benchmark/benchmark.h"
#include "pci/root_bus.h"
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
  virtio::DeviceType type() const override {
    return virtio::DeviceType::kConsole;  // has a transitional id
  }
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

struct NullSinks : MsiSink, IntxSink {
  void SendMsi(uint64_t, uint32_t) override {}
  void SetIntx(bool) override {}
};

// One function on a bus, probed in legacy or modern mode.
struct Fixture {
  explicit Fixture(VirtioPciMode mode, bool notification_data = false) {
    auto mem = virtqueue::GuestMemoryMmap::Create(
        {{.guest_base = 0, .size = 4 << 20}});
    Check(mem.status());
    memory = *std::move(mem);
    auto f = VirtioPciFunction::Create(
        device, *memory,
        {.mode = mode, .notification_data = notification_data});
    Check(f.status());
    fn = *std::move(f);
    fn->set_msi_sink(&sinks);
    fn->set_intx_sink(&sinks);
    Check(bus.AddDevice(fn.get()).status());
    Check(bus.AssignBars());
    if (mode == VirtioPciMode::kLegacy) {
      Legacy(kLegacyStatus, 1, 1);
      Legacy(kLegacyStatus, 3, 1);
      Legacy(kLegacyGuestFeatures, 0, 4);
      for (uint16_t q = 0; q < 2; ++q) {
        Legacy(kLegacyQueueSelect, q, 2);
        Legacy(kLegacyQueuePfn, 0x10 + 0x10 * q, 4);
      }
      Legacy(kLegacyStatus, 7, 1);
    } else {
      Common(kCommonStatus, 1, 1);
      Common(kCommonStatus, 3, 1);
      Common(kCommonGfSelect, 1, 4);
      Common(kCommonGf, notification_data ? 1 | 1u << 6 : 1, 4);
      Common(kCommonStatus, 11, 1);
      for (uint16_t q = 0; q < 2; ++q) {
        const uint64_t base = 0x10000 + 0x10000 * q;
        Common(kCommonQueueSelect, q, 2);
        Common(kCommonQueueDesc, base, 8);
        Common(kCommonQueueDriver, base + 0x1000, 8);
        Common(kCommonQueueDevice, base + 0x2000, 8);
        Common(kCommonQueueEnable, 1, 2);
      }
      Common(kCommonStatus, 15, 1);
    }
    if (!fn->state().active()) {
      std::fprintf(stderr, "setup failed: device not active (status 0x%x)\n",
                   fn->state().status());
      std::abort();
    }
  }

  void Legacy(uint64_t off, uint64_t v, size_t w) {
    Write(kLegacyBar, off, v, w);
  }
  void Common(uint64_t off, uint64_t v, size_t w) {
    Write(kModernBar, kModernCommonOffset + off, v, w);
  }
  void Write(int bar, uint64_t off, uint64_t v, size_t w) {
    uint8_t b[8];
    for (size_t i = 0; i < w; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    fn->BarWrite(bar, off, absl::MakeConstSpan(b, w));
  }
  uint64_t BarAddress(int bar) { return fn->config_space().BarAddress(bar); }

  NullDevice device;
  std::unique_ptr<virtqueue::GuestMemoryMmap> memory;
  NullSinks sinks;
  std::unique_ptr<VirtioPciFunction> fn;
  RootBus bus;
};

void Finish(benchmark::State& state, const Fixture& f, uint64_t expected) {
  if (f.device.kicks != expected) {
    state.SkipWithError("notifications did not reach the device");
  }
}

void BM_LegacyNotify(benchmark::State& state) {
  Fixture f(VirtioPciMode::kLegacy);
  const uint8_t q[2] = {1, 0};
  for (auto _ : state) f.fn->BarWrite(kLegacyBar, kLegacyQueueNotify, q);
  Finish(state, f, state.iterations());
}
BENCHMARK(BM_LegacyNotify);

void BM_LegacyNotifyBus(benchmark::State& state) {
  Fixture f(VirtioPciMode::kLegacy);
  const uint64_t port = f.BarAddress(kLegacyBar) + kLegacyQueueNotify;
  const uint8_t q[2] = {1, 0};
  for (auto _ : state) f.bus.PioWrite(port, q);
  Finish(state, f, state.iterations());
}
BENCHMARK(BM_LegacyNotifyBus);

void BM_ModernNotify(benchmark::State& state) {
  Fixture f(VirtioPciMode::kModern);
  const uint8_t q[2] = {1, 0};
  for (auto _ : state) f.fn->BarWrite(kModernBar, kModernNotifyOffset + 4, q);
  Finish(state, f, state.iterations());
}
BENCHMARK(BM_ModernNotify);

void BM_ModernNotifyBus(benchmark::State& state) {
  Fixture f(VirtioPciMode::kModern);
  const uint64_t addr = f.BarAddress(kModernBar) + kModernNotifyOffset + 4;
  const uint8_t q[2] = {1, 0};
  for (auto _ : state) f.bus.MmioWrite(addr, q);
  Finish(state, f, state.iterations());
}
BENCHMARK(BM_ModernNotifyBus);

void BM_ModernNotifyData(benchmark::State& state) {
  Fixture f(VirtioPciMode::kModern, /*notification_data=*/true);
  const uint8_t q[4] = {1, 0, 7, 0};
  for (auto _ : state) f.fn->BarWrite(kModernBar, kModernNotifyOffset + 4, q);
  Finish(state, f, state.iterations());
}
BENCHMARK(BM_ModernNotifyData);

void BM_NotifyQueue(benchmark::State& state) {
  Fixture f(VirtioPciMode::kModern);
  for (auto _ : state) f.fn->NotifyQueue(1);
  Finish(state, f, state.iterations());
}
BENCHMARK(BM_NotifyQueue);

void BM_LegacyConfigRead(benchmark::State& state) {
  Fixture f(VirtioPciMode::kLegacy);
  uint8_t out[4];
  for (auto _ : state) {
    f.fn->BarRead(kLegacyBar, kLegacyConfigNoMsix, out);
    benchmark::DoNotOptimize(out);
  }
  if (out[0] != 0 || out[3] != 3) state.SkipWithError("wrong config bytes");
}
BENCHMARK(BM_LegacyConfigRead);

void BM_LegacyConfigReadBus(benchmark::State& state) {
  Fixture f(VirtioPciMode::kLegacy);
  const uint64_t port = f.BarAddress(kLegacyBar) + kLegacyConfigNoMsix;
  uint8_t out[4];
  for (auto _ : state) {
    f.bus.PioRead(port, out);
    benchmark::DoNotOptimize(out);
  }
  if (out[0] != 0 || out[3] != 3) state.SkipWithError("wrong config bytes");
}
BENCHMARK(BM_LegacyConfigReadBus);

void BM_ModernConfigRead(benchmark::State& state) {
  Fixture f(VirtioPciMode::kModern);
  uint8_t out[4];
  for (auto _ : state) {
    f.fn->BarRead(kModernBar, kModernDeviceOffset + 4, out);
    benchmark::DoNotOptimize(out);
  }
  if (out[0] != 4 || out[3] != 7) state.SkipWithError("wrong config bytes");
}
BENCHMARK(BM_ModernConfigRead);

void BM_ModernConfigReadBus(benchmark::State& state) {
  Fixture f(VirtioPciMode::kModern);
  const uint64_t addr = f.BarAddress(kModernBar) + kModernDeviceOffset + 4;
  uint8_t out[4];
  for (auto _ : state) {
    f.bus.MmioRead(addr, out);
    benchmark::DoNotOptimize(out);
  }
  if (out[0] != 4 || out[3] != 7) state.SkipWithError("wrong config bytes");
}
BENCHMARK(BM_ModernConfigReadBus);

}  // namespace
}  // namespace vmmkit::pci

BENCHMARK_MAIN();
