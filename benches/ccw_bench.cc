// benches/ccw_bench: channel programs per second through the virtio-ccw
// transport (ccw::Subchannel + ccw::VirtioCcwDevice), START SUBCHANNEL to
// TEST SUBCHANNEL, with the program already in guest memory.
//
// Programs (format-1 CCWs at 0x1000, data blocks at 0x2000.., revision 1):
//   FeatConf   READ_FEAT (CC) -> WRITE_FEAT (CC) -> READ_CONF of a 60-byte
//              configuration (virtio-blk's size): the notify-free sequence a
//              driver runs during probe and on config changes.
//   SetVq      one SET_VQ of a 256-entry queue with the revision-1 block
//              (checks against the device maximum and guest memory).
//   SetVqLegacy the same with the revision-0 block (align 4096).
//   Noop       one NOOP: the interpreter's fixed cost.
// Counter: items_per_second = channel programs per second.
//
//   bazel run -c opt //benches:ccw_bench
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <vector>

#include "benchmark/benchmark.h"
#include "ccw/ccw.h"
#include "ccw/subchannel.h"
#include "ccw/virtio_ccw.h"
#include "virtio-device/virtio_device.h"
#include "virtqueue/guest_memory.h"

namespace vmmkit::ccw {
namespace {

using virtqueue::GuestMemoryMmap;

constexpr uint32_t kProgram = 0x1000;
constexpr uint32_t kData = 0x2000;
constexpr uint64_t kRings = 0x10000;

// A device with one 256-entry queue and a 60-byte configuration.
class BenchDevice final : public virtio::VirtioDevice {
 public:
  virtio::DeviceType type() const override {
    return virtio::DeviceType::kBlock;
  }
  absl::Span<const uint16_t> queue_max_sizes() const override { return sizes_; }
  virtio::Features offered_features() const override {
    return virtio::Features::Of({virtio::kFVersion1, 0, 9});
  }
  uint32_t config_size() const override { return 60; }
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
  void ProcessQueue(uint16_t) override {}

 private:
  const uint16_t sizes_[1] = {256};
};

class NullSink final : public InterruptSink, public VirtioCcwInterrupts {
 public:
  void StatusPending(Subchannel&, uint32_t) override {}
  void ClassicInterrupt() override {}
  void AdapterInterrupt(uint8_t) override {}
};

void PutBe(uint8_t* p, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i)
    p[n - 1 - i] = static_cast<uint8_t>(v >> (8 * i));
}

struct Rig {
  explicit Rig(uint16_t revision) {
    auto mem = GuestMemoryMmap::Create({{.guest_base = 0, .size = 4 << 20}});
    if (!mem.ok()) std::abort();
    memory = std::move(*mem);
    dev = std::make_unique<VirtioCcwDevice>(device, *memory,
                                            VirtioCcwDevice::Options{}, &sink);
    sch = std::make_unique<Subchannel>(*memory, *dev, sink);
    uint8_t rev[4] = {0, static_cast<uint8_t>(revision), 0, 0};
    Write(0x8000, rev, 4);
    Program(
        {{.cmd = kVirtioCcwSetVirtioRev, .count = 4, .data_address = 0x8000}});
    if (Run().scsw.device_status != (kDevStatChannelEnd | kDevStatDeviceEnd) ||
        dev->revision() != revision) {
      std::abort();
    }
  }
  void Write(uint64_t addr, const uint8_t* p, size_t n) {
    if (!memory->Write(addr, absl::MakeConstSpan(p, n)).ok()) std::abort();
  }
  void Program(const std::vector<Ccw>& ccws) {
    for (size_t i = 0; i < ccws.size(); ++i) {
      if (!memory->WriteObj(kProgram + 8 * i, EncodeCcw1(ccws[i])).ok()) {
        std::abort();
      }
    }
  }
  Irb Run() {
    if (!sch->Start(orb).ok()) std::abort();
    std::optional<Irb> irb = sch->Test();
    if (!irb.has_value()) std::abort();
    return *irb;
  }

  BenchDevice device;
  NullSink sink;
  std::unique_ptr<GuestMemoryMmap> memory;
  std::unique_ptr<VirtioCcwDevice> dev;
  std::unique_ptr<Subchannel> sch;
  Orb orb{.intparm = 1, .control = kOrbFormat1 | kOrbPrefetch, .cpa = kProgram};
};

void RunLoop(benchmark::State& state, Rig& rig) {
  // Check once that the program completes cleanly.
  const Irb first = rig.Run();
  if (first.scsw.device_status != (kDevStatChannelEnd | kDevStatDeviceEnd) ||
      first.scsw.subchannel_status != 0) {
    state.SkipWithError("program did not complete cleanly");
    return;
  }
  for (auto _ : state) {
    Irb irb = rig.Run();
    benchmark::DoNotOptimize(irb);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_FeatConf(benchmark::State& state) {
  Rig rig(1);
  const uint8_t read_feat[5] = {0, 0, 0, 0, 1};
  const uint8_t write_feat[5] = {1, 0, 0, 0, 1};
  rig.Write(kData, read_feat, 5);
  rig.Write(kData + 0x10, write_feat, 5);
  rig.Program({{.cmd = kVirtioCcwReadFeat,
                .flags = kCcwFlagCc,
                .count = 5,
                .data_address = kData},
               {.cmd = kVirtioCcwWriteFeat,
                .flags = kCcwFlagCc,
                .count = 5,
                .data_address = kData + 0x10},
               {.cmd = kVirtioCcwReadConf,
                .count = 60,
                .data_address = kData + 0x100}});
  RunLoop(state, rig);
}
BENCHMARK(BM_FeatConf);

void BM_SetVq(benchmark::State& state) {
  Rig rig(1);
  VqInfoBlock b{};
  PutBe(b.desc, kRings, 8);
  PutBe(b.index, 0, 2);
  PutBe(b.num, 256, 2);
  PutBe(b.avail, kRings + 0x1000, 8);
  PutBe(b.used, kRings + 0x2000, 8);
  rig.Write(kData, reinterpret_cast<const uint8_t*>(&b), sizeof(b));
  rig.Program(
      {{.cmd = kVirtioCcwSetVq, .count = sizeof(b), .data_address = kData}});
  RunLoop(state, rig);
}
BENCHMARK(BM_SetVq);

void BM_SetVqLegacy(benchmark::State& state) {
  Rig rig(0);
  VqInfoBlockLegacy b{};
  PutBe(b.queue, kRings, 8);
  PutBe(b.align, 4096, 4);
  PutBe(b.index, 0, 2);
  PutBe(b.num, 256, 2);
  rig.Write(kData, reinterpret_cast<const uint8_t*>(&b), sizeof(b));
  rig.Program(
      {{.cmd = kVirtioCcwSetVq, .count = sizeof(b), .data_address = kData}});
  RunLoop(state, rig);
}
BENCHMARK(BM_SetVqLegacy);

void BM_Noop(benchmark::State& state) {
  Rig rig(1);
  rig.Program({{.cmd = kCmdNoop, .count = 0}});
  RunLoop(state, rig);
}
BENCHMARK(BM_Noop);

}  // namespace
}  // namespace vmmkit::ccw

BENCHMARK_MAIN();
