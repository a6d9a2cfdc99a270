// virtio-device/testing/test_driver.h: a virtio driver for device tests,
// speaking straight to a DeviceState (no PCI, no CCW).
//
// It does what every driver's probe does (§3.1.1): reset, ACKNOWLEDGE, DRIVER,
// features, FEATURES_OK (modern only), queue setup, DRIVER_OK; then it posts
// chains with virtqueue::testing::DriverQueue and kicks, and counts the
// interrupts the device raises.
//
//   TestDriver drv(state, memory, {.legacy = false});
//   ASSERT_OK(drv.Start(Features::Of({kFVersion1, kFEventIdx})));
//   uint64_t buf = drv.Alloc(512);
//   ASSERT_OK_AND_ASSIGN(uint16_t head, drv.queue(0).AddChain({{buf, 512,
//   true}})); drv.Kick(0); std::optional<VirtqUsedElem> used =
//   drv.queue(0).PopUsed();
//
// Thread-compatible. Test-only: aborts on its own misuse, never on the
// device's.
#ifndef VMMKIT_VIRTIO_DEVICE_TESTING_TEST_DRIVER_H_
#define VMMKIT_VIRTIO_DEVICE_TESTING_TEST_DRIVER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "virtio-device/device_state.h"
#include "virtio-device/virtio_device.h"
#include "virtqueue/guest_memory.h"
#include "virtqueue/testing/driver_queue.h"

namespace vmmkit::virtio::testing {

using virtqueue::testing::DriverQueue;

class TestDriver : public InterruptSink {
 public:
  struct Options {
    // A legacy driver: never accepts VERSION_1, lays queues out the legacy
    // way (one area, align 4096), uses guest-native byte order.
    bool legacy = false;
    // Queue size to choose (0: the device's maximum).
    uint16_t queue_size = 0;
    // Where rings are placed, then data buffers from Alloc().
    uint64_t ring_base = 0x100000;
    uint64_t data_base = 0x400000;
  };

  // `state` and `memory` must outlive the driver. The driver registers
  // itself as the state's interrupt sink.
  TestDriver(DeviceState& state, const GuestMemory& memory, Options options);
  TestDriver(DeviceState& state, const GuestMemory& memory)
      : TestDriver(state, memory, Options()) {}

  // The probe: features = wanted & offered (plus VERSION_1 for a modern
  // driver). Returns kFailedPrecondition if the device refused FEATURES_OK,
  // kInternal if DRIVER_OK ended in DEVICE_NEEDS_RESET.
  absl::Status Start(Features wanted);
  // Writes 0 to status.
  void Reset();

  DriverQueue& queue(uint16_t index) { return *queues_[index]; }
  void Kick(uint16_t index) { state_.Notify(index); }
  // Reads `n` bytes of configuration space as the driver sees it (guest
  // order for a legacy driver, little-endian otherwise).
  std::vector<uint8_t> ReadConfig(uint32_t offset, uint32_t n);
  uint64_t ReadConfigU64(uint32_t offset);
  uint32_t ReadConfigU32(uint32_t offset);
  uint16_t ReadConfigU16(uint32_t offset);

  // Guest memory for data buffers: a bump allocator, 16-byte aligned.
  uint64_t Alloc(uint64_t size);
  // Copies to / from guest memory (test helpers).
  void Put(uint64_t addr, absl::Span<const uint8_t> bytes);
  std::vector<uint8_t> Get(uint64_t addr, uint64_t n);

  int queue_interrupts(uint16_t index) const {
    return index < queue_irqs_.size() ? queue_irqs_[index] : 0;
  }
  int config_interrupts() const { return config_irqs_; }
  const Features& negotiated() const { return negotiated_; }
  Endian endian() const;

  // InterruptSink.
  void QueueInterrupt(uint16_t index) override;
  void ConfigInterrupt() override { ++config_irqs_; }

 private:
  DeviceState& state_;
  const GuestMemory& memory_;
  Options options_;
  std::vector<std::unique_ptr<DriverQueue>> queues_;
  std::vector<int> queue_irqs_;
  int config_irqs_ = 0;
  uint64_t next_data_;
  Features negotiated_;
};

}  // namespace vmmkit::virtio::testing

#endif  // VMMKIT_VIRTIO_DEVICE_TESTING_TEST_DRIVER_H_
