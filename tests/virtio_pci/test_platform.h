// tests/virtio_pci/test_platform.h: PlatformAccess over a pci::RootBus and a
// GuestMemory, for running VirtioPciDriver against real transports in a test,
// and FakeConfigDevice, a small device with a configuration space.
//
//   auto mem = *GuestMemoryMmap::Create({{.guest_base = 0, .size = 4 << 20}});
//   pci::RootBus bus;
//   TestPlatform platform(bus, *mem);
//   fn->set_msi_sink(&platform);  fn->set_intx_sink(&platform);
//   VirtioPciDriver driver(platform);
//
// DMA memory is handed out from 1 MiB upwards by a bump allocator. Devices
// complete requests synchronously inside the kick, so WaitForInterrupt has
// nothing to wait for. Thread-compatible.
#ifndef VMMKIT_TESTS_VIRTIO_PCI_TEST_PLATFORM_H_
#define VMMKIT_TESTS_VIRTIO_PCI_TEST_PLATFORM_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <utility>
#include <vector>

#include "pci/function.h"
#include "pci/msix.h"
#include "pci/root_bus.h"
#include "tests/virtio_pci/driver.h"
#include "virtio-device/config_space.h"
#include "virtio-device/virtio_device.h"
#include "virtqueue/guest_memory.h"

namespace vmmkit::tests::virtio_pci {

class TestPlatform final : public PlatformAccess,
                           public pci::MsiSink,
                           public pci::IntxSink {
 public:
  TestPlatform(pci::RootBus& bus, const virtqueue::GuestMemory& memory,
               uint64_t dma_base = 1 << 20)
      : bus_(bus), memory_(memory), next_dma_(dma_base) {}

  // ---- PlatformAccess.
  uint32_t InPort(uint16_t port, int width) override {
    uint8_t b[4] = {};
    bus_.PioRead(port, absl::MakeSpan(b, width));
    ++pio_reads;
    return static_cast<uint32_t>(Le(b, width));
  }
  void OutPort(uint16_t port, uint32_t value, int width) override {
    uint8_t b[4];
    ToLe(b, value, width);
    bus_.PioWrite(port, absl::MakeConstSpan(b, width));
    ++pio_writes;
  }
  uint64_t MmioRead(uint64_t address, int width) override {
    uint8_t b[8] = {};
    bus_.MmioRead(address, absl::MakeSpan(b, width));
    ++mmio_reads;
    return Le(b, width);
  }
  void MmioWrite(uint64_t address, uint64_t value, int width) override {
    uint8_t b[8];
    ToLe(b, value, width);
    bus_.MmioWrite(address, absl::MakeConstSpan(b, width));
    ++mmio_writes;
  }
  uint64_t AllocDma(uint64_t size, uint64_t align) override {
    const uint64_t a = (next_dma_ + align - 1) & ~(align - 1);
    const uint64_t p = a + size;
    if (!memory_.Translate(a, size).ok()) return 0;
    next_dma_ = p;
    return a;
  }
  void MemRead(uint64_t address, void* out, uint64_t length) override {
    if (!memory_
             .Read(address, absl::MakeSpan(static_cast<uint8_t*>(out), length))
             .ok()) {
      ++bad_dma;
    }
  }
  void MemWrite(uint64_t address, const void* in, uint64_t length) override {
    if (!memory_
             .Write(address, absl::MakeConstSpan(
                                 static_cast<const uint8_t*>(in), length))
             .ok()) {
      ++bad_dma;
    }
  }
  void MemoryBarrier() override {
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  bool TakeMsi(uint64_t* address, uint32_t* data) override {
    if (msis.empty()) return false;
    *address = msis.front().first;
    *data = msis.front().second;
    msis.pop_front();
    return true;
  }
  bool IntxAsserted() override { return intx; }
  void WaitForInterrupt() override { ++waits; }

  // ---- pci::MsiSink / IntxSink.
  void SendMsi(uint64_t address, uint32_t data) override {
    msis.emplace_back(address, data);
    msi_log.emplace_back(address, data);
  }
  void SetIntx(bool asserted) override {
    if (asserted && !intx) ++intx_edges;
    intx = asserted;
  }

  std::deque<std::pair<uint64_t, uint32_t>> msis;      // not yet taken
  std::vector<std::pair<uint64_t, uint32_t>> msi_log;  // every message
  bool intx = false;
  int intx_edges = 0;
  int bad_dma = 0;
  int waits = 0;
  uint64_t pio_reads = 0, pio_writes = 0, mmio_reads = 0, mmio_writes = 0;

 private:
  static uint64_t Le(const uint8_t* b, int width) {
    uint64_t v = 0;
    for (int i = 0; i < width; ++i) v |= uint64_t{b[i]} << (8 * i);
    return v;
  }
  static void ToLe(uint8_t* b, uint64_t v, int width) {
    for (int i = 0; i < width; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  }

  pci::RootBus& bus_;
  const virtqueue::GuestMemory& memory_;
  uint64_t next_dma_;
};

// A virtio-console-shaped device (type 3, so it has a transitional id) with
// a 12-byte configuration space {le16 cols, le16 rows, le32 max_nr_ports,
// le32 emerg_wr} and two queues. It completes every chain, writing
// `fill` into its writable bytes, and counts what it saw.
class FakeConfigDevice final : public virtio::VirtioDevice {
 public:
  static constexpr uint32_t kConfigSize = 12;

  FakeConfigDevice() : config_(kConfigSize) {
    config_.DeclareField(0, 2);
    config_.DeclareField(2, 2);
    config_.DeclareField(4, 4);
    config_.DeclareField(8, 4);
    config_.SetU16(0, 80);
    config_.SetU16(2, 25);
    config_.SetU32(4, 0x01020304);
  }

  virtio::DeviceType type() const override {
    return virtio::DeviceType::kConsole;
  }
  absl::Span<const uint16_t> queue_max_sizes() const override { return sizes_; }
  virtio::Features offered_features() const override { return offered; }
  uint32_t config_size() const override { return kConfigSize; }
  void ReadConfig(uint32_t offset, absl::Span<uint8_t> data,
                  virtio::Endian endian) override {
    config_.Read(offset, data, endian);
  }
  void WriteConfig(uint32_t offset, absl::Span<const uint8_t> data,
                   virtio::Endian endian) override {
    // Only emerg_wr (8..11) is writable.
    uint8_t le[kConfigSize] = {};
    if (offset >= kConfigSize || data.size() > kConfigSize - offset) return;
    config_.DecodeWrite(offset, data, endian, absl::MakeSpan(le, data.size()));
    for (size_t i = 0; i < data.size(); ++i) {
      if (offset + i >= 8) config_.SetU8(offset + i, le[i]);
    }
    ++config_writes;
  }
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
    ++kicks;
    if (context_ == nullptr) return;
    virtio::SplitQueue* q = context_->queue(index);
    if (q == nullptr) return;
    bool added = false;
    while (std::optional<virtqueue::DescriptorChain> chain = q->Pop()) {
      uint32_t written = 0;
      for (const virtqueue::Descriptor& d : *chain) {
        if (!d.writable()) continue;
        std::vector<uint8_t> bytes(d.len, fill);
        if (!context_->memory().Write(d.addr, bytes).ok()) break;
        written += d.len;
      }
      if (!chain->ok()) {
        context_->MarkNeedsReset(chain->status());
        return;
      }
      q->AddUsed(chain->head(), written);
      ++requests;
      added = true;
    }
    if (added) context_->NotifyUsed(index);
  }

  // Changes the configuration by itself (a console resize).
  void Resize(uint16_t cols, uint16_t rows) {
    config_.SetU16(0, cols);
    config_.SetU16(2, rows);
    ++generation_;
    if (context_ != nullptr) context_->NotifyConfigChange();
  }
  uint32_t config_generation() const override { return generation_; }
  uint32_t emerg_wr() const { return config_.U32(8); }

  virtio::Features offered =
      virtio::Features::Of({virtio::kFVersion1, virtio::kFEventIdx});
  uint8_t fill = 0xa5;
  int activations = 0, resets = 0, kicks = 0, requests = 0, config_writes = 0;

 private:
  const uint16_t sizes_[2] = {64, 64};
  virtio::ConfigSpace config_;
  virtio::DeviceContext* context_ = nullptr;
  uint32_t generation_ = 0;
};

}  // namespace vmmkit::tests::virtio_pci

#endif  // VMMKIT_TESTS_VIRTIO_PCI_TEST_PLATFORM_H_
