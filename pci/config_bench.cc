// pci/config_bench: the cost of a guest's configuration-space read through the
// root bus, and of a BAR access's routing, in ns per access.
//
// The bus holds the host bridge and 8 devices (slots 1..8, each with an I/O
// BAR, a 32-bit BAR with MSI-X and a 64-bit BAR, BARs assigned and decoding
// on); the device read is the last one, so BAR routing walks all of them.
// - Cf8Cfc: outl(0xCF8, address) + inl(0xCFC), what Linux's pci_conf1_read
//   does for one dword (two port exits on real hardware).
// - CfcOnly: inl(0xCFC) with the address already latched.
// - Ecam: one 4-byte MMIO read in the ECAM window.
// - EcamCapability: the same at the MSI-X capability (no hook on reads).
// - MmioBar / PioBar: a 4-byte read of a BAR register (routing + region).
// - MsixTableRead: a 4-byte read of an MSI-X table entry through the bus.
//
//   bazel run -c opt //pci:config_bench
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "benchmark/benchmark.h"
#include "pci/config_space.h"
#include "pci/function.h"
#include "pci/msix.h"
#include "pci/root_bus.h"

namespace vmmkit::pci {
namespace {

constexpr int kDevices = 8;

class Regs : public RegionHandler {
 public:
  void Read(uint64_t offset, absl::Span<uint8_t> data) override {
    for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(offset + i);
  }
  void Write(uint64_t, absl::Span<const uint8_t>) override {}
};

class NullSink : public MsiSink {
 public:
  void SendMsi(uint64_t, uint32_t) override {}
};

struct Fixture {
  Fixture() {
    for (int i = 0; i < kDevices; ++i) {
      auto fn = std::make_unique<GenericPciFunction>(
          ConfigSpace::Options{.vendor_id = 0x1af4,
                               .device_id = static_cast<uint16_t>(0x1040 + i),
                               .class_code = 0xff0000,
                               .interrupt_pin = 1});
      Check(fn->AddBar(0, {.type = BarType::kIo, .size = 0x40}));
      Check(fn->AddBar(1, {.type = BarType::kMemory32, .size = 0x1000}));
      Check(fn->AddBar(
          4,
          {.type = BarType::kMemory64, .size = 0x4000, .prefetchable = true}));
      Check(fn->AddRegion(0, 0, 0x40, &regs));
      Check(fn->AddRegion(4, 0, 0x4000, &regs));
      Check(fn->AddMsix({.num_vectors = 8,
                         .table_bar = 1,
                         .table_offset = 0,
                         .pba_bar = 1,
                         .pba_offset = 0x800},
                        &sink)
                .status());
      Check(bus.AddDevice(fn.get()).status());
      fns.push_back(std::move(fn));
    }
    Check(bus.AssignBars());
  }
  static void Check(const absl::Status& s) {
    if (!s.ok()) {
      std::fprintf(stderr, "setup: %s\n", s.ToString().c_str());
      std::abort();
    }
  }
  GenericPciFunction& last() { return *fns.back(); }
  uint8_t last_slot() const { return kDevices; }

  Regs regs;
  NullSink sink;
  RootBus bus;
  std::vector<std::unique_ptr<GenericPciFunction>> fns;
};

uint32_t ConfigAddress(uint8_t dev, uint8_t reg) {
  return kConfigAddressEnable | (uint32_t{dev} << 11) | reg;
}

void BM_Cf8Cfc(benchmark::State& state) {
  Fixture f;
  const uint32_t a = ConfigAddress(f.last_slot(), kRegVendorId);
  uint8_t addr[4] = {uint8_t(a), uint8_t(a >> 8), uint8_t(a >> 16),
                     uint8_t(a >> 24)};
  uint8_t out[4];
  for (auto _ : state) {
    f.bus.PioWrite(kConfigAddressPort, addr);
    f.bus.PioRead(kConfigDataPort, absl::MakeSpan(out));
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_Cf8Cfc);

void BM_CfcOnly(benchmark::State& state) {
  Fixture f;
  const uint32_t a = ConfigAddress(f.last_slot(), kRegVendorId);
  uint8_t addr[4] = {uint8_t(a), uint8_t(a >> 8), uint8_t(a >> 16),
                     uint8_t(a >> 24)};
  f.bus.PioWrite(kConfigAddressPort, addr);
  uint8_t out[4];
  for (auto _ : state) {
    f.bus.PioRead(kConfigDataPort, absl::MakeSpan(out));
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_CfcOnly);

void BM_Ecam(benchmark::State& state) {
  Fixture f;
  const uint64_t addr = f.bus.options().ecam_base +
                        (uint64_t{f.last_slot()} << 15) + kRegVendorId;
  uint8_t out[4];
  for (auto _ : state) {
    f.bus.MmioRead(addr, absl::MakeSpan(out));
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_Ecam);

void BM_EcamCapability(benchmark::State& state) {
  Fixture f;
  const uint64_t addr = f.bus.options().ecam_base +
                        (uint64_t{f.last_slot()} << 15) +
                        f.last().msix()->capability_offset();
  uint8_t out[4];
  for (auto _ : state) {
    f.bus.MmioRead(addr, absl::MakeSpan(out));
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_EcamCapability);

void BM_MmioBar(benchmark::State& state) {
  Fixture f;
  const uint64_t addr = f.last().config_space().BarAddress(4) + 0x100;
  uint8_t out[4];
  for (auto _ : state) {
    f.bus.MmioRead(addr, absl::MakeSpan(out));
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_MmioBar);

void BM_PioBar(benchmark::State& state) {
  Fixture f;
  const uint64_t port = f.last().config_space().BarAddress(0) + 0x10;
  uint8_t out[4];
  for (auto _ : state) {
    f.bus.PioRead(port, absl::MakeSpan(out));
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_PioBar);

void BM_MsixTableRead(benchmark::State& state) {
  Fixture f;
  const uint64_t addr = f.last().config_space().BarAddress(1) + 16 * 3 + 8;
  uint8_t out[4];
  for (auto _ : state) {
    f.bus.MmioRead(addr, absl::MakeSpan(out));
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_MsixTableRead);

}  // namespace
}  // namespace vmmkit::pci

BENCHMARK_MAIN();
