// virtio-device/rng.h: virtio-rng (virtio 1.2 §5.4) over the kernel's random
// source (getrandom(2)).
//
//   auto rng = std::make_unique<RngDevice>();
//   DeviceState state(*rng, memory);   // then a transport in front of state
//
// One request queue; every device-writable byte the driver posts is filled.
// Thread-compatible.
#ifndef VMMKIT_VIRTIO_DEVICE_RNG_H_
#define VMMKIT_VIRTIO_DEVICE_RNG_H_

#include <cstdint>

#include "virtio-device/virtio_device.h"

namespace vmmkit::virtio {

struct RngStats {
  uint64_t requests = 0;
  uint64_t bytes = 0;
};

class RngDevice final : public VirtioDevice {
 public:
  static constexpr uint16_t kQueueSize = 256;

  RngDevice() = default;

  DeviceType type() const override { return DeviceType::kRng; }
  absl::Span<const uint16_t> queue_max_sizes() const override {
    return queue_sizes_;
  }
  Features offered_features() const override {
    return Features::Of({kFVersion1, kFEventIdx, kFIndirectDesc});
  }
  absl::Status Activate(DeviceContext& context) override;
  void Reset() override { context_ = nullptr; }
  void ProcessQueue(uint16_t index) override;

  const RngStats& stats() const { return stats_; }

 private:
  const uint16_t queue_sizes_[1] = {kQueueSize};
  DeviceContext* context_ = nullptr;
  RngStats stats_;
};

}  // namespace vmmkit::virtio

#endif  // VMMKIT_VIRTIO_DEVICE_RNG_H_
