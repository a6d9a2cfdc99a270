// virtio-device/device_state.h: the transport-independent state of one virtio
// device, and the rules of the virtio specification that govern it, written
// once for every transport.
//
// A transport (virtio-pci legacy, modern or transitional; virtio-ccw revisions
// 0..2) owns registers and maps every register access onto a DeviceState:
//
//   DeviceState state(device, memory, {.guest_endian = Endian::kLittle});
//   state.set_interrupt_sink(&my_interrupts);       // MSI-X, INTx+ISR,
//   indicators state.SetStatus(kStatusAcknowledge | kStatusDriver); uint32_t
//   offered = state.DeviceFeatures(0); state.SetDriverFeatures(0, ...);
//   state.SetDriverFeatures(1, ...); state.SetStatus(... | kStatusFeaturesOk);
//   // refused -> bit stays clear state.queue(0).set_size(128);
//   state.queue(0).set_desc_table(...); ... state.EnableQueue(0);
//   state.SetStatus(... | kStatusDriverOk);         // queues validated, device
//   started state.Notify(0);                                // the driver
//   kicked queue 0
//
// The rules (virtio 1.2 §2.1, §2.2, §3.1):
// - Writing 0 to status resets the device; the driver never clears a status bit
//   otherwise (such a write is ignored and counted).
// - Driver features may be written until FEATURES_OK is set. FEATURES_OK is
//   refused (stays clear) if the driver took a feature that was not offered, if
//   a device that refuses legacy drivers sees no VERSION_1, or if the device
//   refuses the combination.
// - A driver that did not accept VERSION_1 is a legacy driver: guest-native
//   byte order for the rings and the configuration space, the legacy queue
//   layout. Until features are written every driver is assumed legacy (a legacy
//   driver may read the configuration before it writes features).
// - DRIVER_OK validates every enabled queue against guest memory and starts the
//   device; a modern driver must have had FEATURES_OK accepted first. Any
//   failure sets DEVICE_NEEDS_RESET with a configuration change notification
//   (§2.1.2), as does a device error at run time. Nothing the driver writes
//   stops the process.
//
// Thread-compatible: the VMM serializes register accesses and queue work on
// one device (one lock per device).
#ifndef VMMKIT_VIRTIO_DEVICE_DEVICE_STATE_H_
#define VMMKIT_VIRTIO_DEVICE_DEVICE_STATE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "virtio-device/virtio_device.h"
#include "virtqueue/guest_memory.h"
#include "virtqueue/split_queue.h"

namespace vmmkit::virtio {

// How interrupts leave the device; implemented by the transport (an MSI-X
// vector, INTx and the ISR byte, CCW indicators).
class InterruptSink {
 public:
  virtual ~InterruptSink() = default;
  // A used buffer notification for queue `index`.
  virtual void QueueInterrupt(uint16_t index) = 0;
  // A configuration change notification (also sent for DEVICE_NEEDS_RESET).
  virtual void ConfigInterrupt() = 0;
};

// Counters for metrics (GetMetrics in the VMM's API).
struct DeviceStats {
  uint64_t notifications = 0;           // driver kicks delivered to the device
  uint64_t spurious_notifications = 0;  // kicks for disabled/absent queues
  uint64_t queue_interrupts = 0;
  uint64_t suppressed_interrupts = 0;  // NotifyUsed the driver did not want
  uint64_t config_interrupts = 0;
  uint64_t ignored_status_writes = 0;
  uint64_t refused_features_ok = 0;
  uint64_t resets = 0;
};

class DeviceState final : public DeviceContext {
 public:
  static constexpr uint16_t kNoVector = 0xffff;  // VIRTIO_MSI_NO_VECTOR

  struct Options {
    // The guest's native byte order: what a legacy driver uses.
    Endian guest_endian = Endian::kLittle;
    // False for a modern-only (non-transitional) device: a driver that does
    // not accept VERSION_1 is refused.
    bool allow_legacy = true;
    // Features the transport adds to the device's offer (for example
    // VIRTIO_F_NOTIFICATION_DATA, which only the transport implements).
    Features transport_features;
  };

  // `device` and `memory` must outlive the state.
  DeviceState(VirtioDevice& device, const GuestMemory& memory, Options options);
  DeviceState(VirtioDevice& device, const GuestMemory& memory)
      : DeviceState(device, memory, Options()) {}
  ~DeviceState() override;

  VirtioDevice& device() { return device_; }
  const VirtioDevice& device() const { return device_; }
  const Options& options() const { return options_; }
  void set_interrupt_sink(InterruptSink* sink) { sink_ = sink; }

  // ---- Status (§2.1).
  uint8_t status() const { return status_; }
  void SetStatus(uint8_t status);
  // DRIVER_OK accepted and the device started.
  bool active() const { return active_; }
  // How many times the device started, and the features in force the last
  // time; both survive resets, so that a report taken after the driver let go
  // (Linux resets its virtio devices at shutdown) still says what was used.
  uint64_t starts() const { return starts_; }
  const Features& last_started_features() const {
    return last_started_features_;
  }
  // Back to the state after construction (also what writing 0 does).
  void Reset();

  // ---- Features (§2.2), in 32-bit words: select 0..3 for 128 bits.
  uint32_t DeviceFeatures(uint32_t select) const {
    return offered_.Word(select);
  }
  uint32_t DriverFeatures(uint32_t select) const {
    return driver_features_.Word(select);
  }
  // Ignored once FEATURES_OK or DRIVER_OK is set.
  void SetDriverFeatures(uint32_t select, uint32_t value);
  const Features& offered_features() const { return offered_; }
  const Features& driver_features() const { return driver_features_; }

  // ---- Mode.
  // VERSION_1 not (yet) accepted: a legacy driver.
  bool legacy() const override { return !driver_features_.Has(kFVersion1); }
  // The byte order of a legacy view (configuration space through a legacy
  // register file): guest-native for a legacy driver, little-endian otherwise.
  Endian legacy_endian() const {
    return legacy() ? options_.guest_endian : Endian::kLittle;
  }

  // ---- Queues.
  uint16_t num_queues() const { return static_cast<uint16_t>(queues_.size()); }
  // Queue `index`'s ring configuration (size, addresses), written by the
  // transport before DRIVER_OK. The index must be < num_queues().
  SplitQueue& queue_config(uint16_t index) { return queues_[index].ring; }
  const SplitQueue& queue_config(uint16_t index) const {
    return queues_[index].ring;
  }
  bool queue_enabled(uint16_t index) const {
    return index < queues_.size() && queues_[index].enabled;
  }
  // Marks a queue enabled (modern queue_enable = 1; legacy: a page frame
  // number was written). Ignored for an index out of range.
  void EnableQueue(uint16_t index);
  // Resets one queue's configuration (legacy QUEUE_PFN / CCW with address 0).
  void DisableQueue(uint16_t index);
  // The transport's per-queue interrupt route (MSI-X vector or CCW
  // indicator bit): stored here so that every view sees the same value.
  uint16_t queue_vector(uint16_t index) const {
    return index < queues_.size() ? queues_[index].vector : kNoVector;
  }
  void set_queue_vector(uint16_t index, uint16_t vector) {
    if (index < queues_.size()) queues_[index].vector = vector;
  }
  uint16_t config_vector() const { return config_vector_; }
  void set_config_vector(uint16_t vector) { config_vector_ = vector; }

  // ---- Configuration space (§2.5). Reads beyond config_size() return 0;
  // writes beyond it are dropped.
  uint32_t config_size() const { return device_.config_size(); }
  void ReadConfig(uint32_t offset, absl::Span<uint8_t> data, Endian endian);
  void WriteConfig(uint32_t offset, absl::Span<const uint8_t> data,
                   Endian endian);
  // Advances whenever the configuration space changed by itself.
  uint32_t config_generation() const { return device_.config_generation(); }

  // ---- Driver notifications.
  // The driver kicked queue `index`. Ignored (counted) unless the device is
  // active and the queue enabled.
  void Notify(uint16_t index);

  // ---- DeviceContext, for the device.
  const GuestMemory& memory() const override { return memory_; }
  SplitQueue* queue(uint16_t index) override;
  const Features& features() const override { return driver_features_; }
  void NotifyUsed(uint16_t index) override;
  void NotifyConfigChange() override;
  void MarkNeedsReset(const absl::Status& why) override;

  const DeviceStats& stats() const { return stats_; }
  // Why DEVICE_NEEDS_RESET was last set (ok if it was not).
  const absl::Status& last_error() const { return last_error_; }

 private:
  struct QueueState {
    explicit QueueState(uint16_t max) : ring(max) {}
    SplitQueue ring;
    bool enabled = false;
    uint16_t vector = kNoVector;
  };

  // FEATURES_OK: may the driver's features stand?
  absl::Status CheckFeatures() const;
  // DRIVER_OK: validate the queues and start the device.
  absl::Status Start();

  VirtioDevice& device_;
  const GuestMemory& memory_;
  const Options options_;
  InterruptSink* sink_ = nullptr;
  const Features offered_;

  uint8_t status_ = 0;
  bool active_ = false;
  uint64_t starts_ = 0;
  Features last_started_features_;
  Features driver_features_;
  std::vector<QueueState> queues_;
  uint16_t config_vector_ = kNoVector;
  absl::Status last_error_;
  DeviceStats stats_;
};

}  // namespace vmmkit::virtio

#endif  // VMMKIT_VIRTIO_DEVICE_DEVICE_STATE_H_
