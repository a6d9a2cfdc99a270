// virtio-device/virtio_device.h: what a virtio device implements, and what it
// is given when the driver starts it.
//
// A device knows requests and its backend, never registers: the transports
// (virtio-pci legacy/modern/transitional, virtio-ccw revisions 0..2,
// vhost-user) map the driver's register accesses onto one DeviceState, which
// calls the device. A new device is a small class:
//
//   class RngDevice final : public VirtioDevice {
//    public:
//     DeviceType type() const override { return DeviceType::kRng; }
//     absl::Span<const uint16_t> queue_max_sizes() const override { ... }
//     Features offered_features() const override { return
//     Features::Of({kFVersion1}); } absl::Status Activate(DeviceContext& ctx)
//     override { ctx_ = &ctx; ... } void Reset() override { ctx_ = nullptr; }
//     void ProcessQueue(uint16_t q) override {
//       while (auto chain = ctx_->queue(q)->Pop()) { ...;
//       ctx_->queue(q)->AddUsed(...); } ctx_->NotifyUsed(q);
//     }
//   };
//
// Thread-compatibility: a device and its DeviceState are used by one thread at
// a time; a VMM that touches registers from vCPU threads and runs queues on an
// I/O thread serializes them (one lock per device).
#ifndef VMMKIT_VIRTIO_DEVICE_VIRTIO_DEVICE_H_
#define VMMKIT_VIRTIO_DEVICE_VIRTIO_DEVICE_H_

#include <array>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "virtqueue/guest_memory.h"
#include "virtqueue/split_queue.h"

namespace vmmkit::virtio {

using virtqueue::Endian;
using virtqueue::GuestMemory;
using virtqueue::SplitQueue;

// Device IDs (virtio 1.2 §5).
enum class DeviceType : uint16_t {
  kNet = 1,
  kBlock = 2,
  kConsole = 3,
  kRng = 4,
  kBalloon = 5,
  kScsi = 8,
  k9p = 9,
  kGpu = 16,
  kInput = 18,
  kVsock = 19,
  kFs = 26,
};
const char* DeviceTypeName(DeviceType type);

// Device-independent feature bits (virtio 1.2 §6).
inline constexpr unsigned kFNotifyOnEmpty = 24;  // legacy
inline constexpr unsigned kFAnyLayout = 27;      // legacy
inline constexpr unsigned kFIndirectDesc = 28;
inline constexpr unsigned kFEventIdx = 29;
inline constexpr unsigned kFBadFeature = 30;  // legacy PCI: "UNUSED"
inline constexpr unsigned kFVersion1 = 32;
inline constexpr unsigned kFAccessPlatform = 33;
inline constexpr unsigned kFRingPacked = 34;
inline constexpr unsigned kFInOrder = 35;
inline constexpr unsigned kFOrderPlatform = 36;
inline constexpr unsigned kFSrIov = 37;
inline constexpr unsigned kFNotificationData = 38;
inline constexpr unsigned kFRingReset = 40;
inline constexpr unsigned kFAdminVq = 41;

// Device status bits (virtio 1.2 §2.1).
inline constexpr uint8_t kStatusAcknowledge = 1;
inline constexpr uint8_t kStatusDriver = 2;
inline constexpr uint8_t kStatusDriverOk = 4;
inline constexpr uint8_t kStatusFeaturesOk = 8;
inline constexpr uint8_t kStatusNeedsReset = 64;
inline constexpr uint8_t kStatusFailed = 128;

// A set of feature bits, 128 of them, read and written by the driver in
// 32-bit words (select 0..3).
class Features {
 public:
  static constexpr unsigned kBits = 128;
  static constexpr unsigned kWords = kBits / 32;

  constexpr Features() = default;
  static Features Of(std::initializer_list<unsigned> bits) {
    Features f;
    for (unsigned b : bits) f.Set(b);
    return f;
  }
  static Features FromU64(uint64_t low) {
    Features f;
    f.words_[0] = static_cast<uint32_t>(low);
    f.words_[1] = static_cast<uint32_t>(low >> 32);
    return f;
  }

  bool Has(unsigned bit) const {
    return bit < kBits && (words_[bit / 32] >> (bit % 32)) & 1;
  }
  Features& Set(unsigned bit, bool on = true) {
    if (bit >= kBits) return *this;
    if (on) {
      words_[bit / 32] |= 1u << (bit % 32);
    } else {
      words_[bit / 32] &= ~(1u << (bit % 32));
    }
    return *this;
  }
  // Word `select` (bits 32*select .. 32*select+31); 0 beyond the set.
  uint32_t Word(uint32_t select) const {
    return select < kWords ? words_[select] : 0;
  }
  void SetWord(uint32_t select, uint32_t value) {
    if (select < kWords) words_[select] = value;
  }
  uint64_t Low64() const { return words_[0] | uint64_t{words_[1]} << 32; }

  Features operator&(const Features& o) const {
    Features f;
    for (unsigned i = 0; i < kWords; ++i) f.words_[i] = words_[i] & o.words_[i];
    return f;
  }
  Features operator|(const Features& o) const {
    Features f;
    for (unsigned i = 0; i < kWords; ++i) f.words_[i] = words_[i] | o.words_[i];
    return f;
  }
  Features operator~() const {
    Features f;
    for (unsigned i = 0; i < kWords; ++i) f.words_[i] = ~words_[i];
    return f;
  }
  bool operator==(const Features& o) const = default;
  bool empty() const { return *this == Features(); }
  // True if every bit of this set is in `other`.
  bool SubsetOf(const Features& other) const {
    return (*this & ~other).empty();
  }

 private:
  std::array<uint32_t, kWords> words_{};
};

// What a started device is given. Implemented by DeviceState (and by the
// vhost-user back end, which starts devices its own way).
class DeviceContext {
 public:
  virtual ~DeviceContext() = default;

  virtual const GuestMemory& memory() const = 0;
  // Queue `index`, configured, validated and ready; nullptr if the driver did
  // not enable it (or index is out of range).
  virtual SplitQueue* queue(uint16_t index) = 0;
  // The features the driver accepted.
  virtual const Features& features() const = 0;
  // True for a legacy driver (VERSION_1 not accepted): guest-native byte order
  // for the rings and config space, legacy header sizes (virtio-net).
  virtual bool legacy() const = 0;

  // After used entries were added to queue `index`: interrupts the driver
  // unless it suppressed the notification (SplitQueue::NeedsNotification).
  virtual void NotifyUsed(uint16_t index) = 0;
  // The device changed its configuration space: bumps the configuration
  // generation and sends a configuration change notification.
  virtual void NotifyConfigChange() = 0;
  // The device met an error it cannot report per request (a malformed chain,
  // a backend failure): sets DEVICE_NEEDS_RESET and notifies the driver
  // (§2.1.2). The device should stop processing until Reset().
  virtual void MarkNeedsReset(const absl::Status& why) = 0;
};

class VirtioDevice {
 public:
  virtual ~VirtioDevice() = default;

  virtual DeviceType type() const = 0;
  // One entry per virtqueue: the largest size the device supports (a power
  // of two, at most 32768).
  virtual absl::Span<const uint16_t> queue_max_sizes() const = 0;
  // The features offered, device-specific and device-independent ones alike
  // (VERSION_1, EVENT_IDX, INDIRECT_DESC, ...). Transports add none; they may
  // mask some (a legacy-only transport cannot offer bits above 31).
  virtual Features offered_features() const = 0;
  // Called when the driver sets FEATURES_OK (or, for a legacy driver, starts
  // the device) with a subset of the offered features. An error refuses the
  // combination: FEATURES_OK stays clear (§2.2.2: "The device SHOULD NOT
  // offer a feature which requires another feature which was not offered").
  virtual absl::Status AcceptFeatures(const Features& features) {
    (void)features;
    return absl::OkStatus();
  }

  // Device-specific configuration space (§2.5), in `endian` byte order
  // (little-endian for VERSION_1 drivers, guest-native for legacy ones).
  // Offsets and widths are checked by the caller against config_size().
  virtual uint32_t config_size() const { return 0; }
  virtual void ReadConfig(uint32_t offset, absl::Span<uint8_t> data,
                          Endian endian) {
    (void)offset;
    (void)endian;
    for (uint8_t& b : data) b = 0;
  }
  virtual void WriteConfig(uint32_t offset, absl::Span<const uint8_t> data,
                           Endian endian) {
    (void)offset;
    (void)data;
    (void)endian;
  }
  // Changes whenever the device changes its configuration by itself.
  virtual uint32_t config_generation() const { return 0; }

  // DRIVER_OK: start serving queues through `context`, which stays valid
  // until Reset(). An error marks the device DEVICE_NEEDS_RESET.
  virtual absl::Status Activate(DeviceContext& context) = 0;
  // Stop and forget the driver's state (status 0 written, or a transport
  // reset), whether or not the device was activated. After it the device
  // must not touch guest memory.
  virtual void Reset() = 0;
  // The driver notified queue `index` (index < queue count; the device is
  // active).
  virtual void ProcessQueue(uint16_t index) = 0;

  // Backends that produce input on their own (a TAP, a console's input)
  // expose file descriptors; the VMM polls them and calls ProcessBackend()
  // when one is readable. No threads are started by devices.
  virtual std::vector<int> backend_fds() const { return {}; }
  virtual void ProcessBackend() {}
  // Makes everything written so far durable (disks flush); called on VM stop.
  virtual absl::Status Flush() { return absl::OkStatus(); }
};

}  // namespace vmmkit::virtio

#endif  // VMMKIT_VIRTIO_DEVICE_VIRTIO_DEVICE_H_
