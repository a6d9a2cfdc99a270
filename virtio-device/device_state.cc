#include "virtio-device/device_state.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace vmmkit::virtio {

const char* DeviceTypeName(DeviceType type) {
  switch (type) {
    case DeviceType::kNet:
      return "net";
    case DeviceType::kBlock:
      return "blk";
    case DeviceType::kConsole:
      return "console";
    case DeviceType::kRng:
      return "rng";
    case DeviceType::kBalloon:
      return "balloon";
    case DeviceType::kScsi:
      return "scsi";
    case DeviceType::k9p:
      return "9p";
    case DeviceType::kGpu:
      return "gpu";
    case DeviceType::kInput:
      return "input";
    case DeviceType::kVsock:
      return "vsock";
    case DeviceType::kFs:
      return "fs";
  }
  return "unknown";
}

namespace {

Features OfferedFeatures(const VirtioDevice& device, bool allow_legacy,
                         const Features& transport_features) {
  Features f = device.offered_features() | transport_features;
  // §6.1: a device that cannot work without VERSION_1 (modern-only) offers it;
  // a legacy-capable one offers it too, so that modern drivers can take it.
  if (!allow_legacy) f.Set(kFVersion1);
  return f;
}

}  // namespace

DeviceState::DeviceState(VirtioDevice& device, const GuestMemory& memory,
                         Options options)
    : device_(device),
      memory_(memory),
      options_(options),
      offered_(OfferedFeatures(device, options.allow_legacy,
                               options.transport_features)) {
  for (uint16_t max : device_.queue_max_sizes()) queues_.emplace_back(max);
}

DeviceState::~DeviceState() {
  if (active_) device_.Reset();
}

void DeviceState::Reset() {
  // Always: a device may have taken state from AcceptFeatures before
  // DRIVER_OK, and a reset must forget it too.
  device_.Reset();
  active_ = false;
  status_ = 0;
  driver_features_ = Features();
  for (QueueState& q : queues_) {
    q.ring.Reset();
    q.enabled = false;
    q.vector = kNoVector;
  }
  config_vector_ = kNoVector;
  last_error_ = absl::OkStatus();
  ++stats_.resets;
}

void DeviceState::SetDriverFeatures(uint32_t select, uint32_t value) {
  // §2.2.2 / §3.1.1: features are negotiated before FEATURES_OK (modern) or
  // DRIVER_OK (legacy); later writes are ignored.
  if (status_ & (kStatusFeaturesOk | kStatusDriverOk)) return;
  driver_features_.SetWord(select, value);
}

absl::Status DeviceState::CheckFeatures() const {
  // §2.2.1: "The driver MUST NOT accept a feature which the device did not
  // offer".
  if (!driver_features_.SubsetOf(offered_)) {
    return absl::InvalidArgumentError(
        "driver accepted features the device did not offer");
  }
  if (!options_.allow_legacy && !driver_features_.Has(kFVersion1)) {
    return absl::FailedPreconditionError(
        "modern-only device and the driver did not accept VERSION_1");
  }
  return device_.AcceptFeatures(driver_features_);
}

void DeviceState::SetStatus(uint8_t status) {
  if (status == 0) {
    Reset();
    return;
  }
  const uint8_t old = status_;
  // DEVICE_NEEDS_RESET belongs to the device: the driver can neither set nor
  // clear it (only a reset does).
  uint8_t next = static_cast<uint8_t>((status & ~kStatusNeedsReset) |
                                      (old & kStatusNeedsReset));
  // §2.1.2: "The driver MUST NOT clear a device status bit."
  if ((old & ~next) != 0) {
    ++stats_.ignored_status_writes;
    return;
  }
  if ((next & kStatusFeaturesOk) && !(old & kStatusFeaturesOk)) {
    if (!CheckFeatures().ok()) {
      // §3.1.1: the driver re-reads status to learn that FEATURES_OK was
      // not accepted.
      next &= static_cast<uint8_t>(~kStatusFeaturesOk);
      ++stats_.refused_features_ok;
    }
  }
  status_ = next;
  if ((next & kStatusDriverOk) && !(old & kStatusDriverOk) &&
      !(next & (kStatusFailed | kStatusNeedsReset))) {
    if (absl::Status s = Start(); !s.ok()) {
      MarkNeedsReset(s);
    } else {
      ++starts_;
      last_started_features_ = driver_features_;
    }
  }
}

absl::Status DeviceState::Start() {
  if (!legacy()) {
    // §3.1.1: a modern driver sets FEATURES_OK (and sees it accepted) before
    // DRIVER_OK.
    if (!(status_ & kStatusFeaturesOk)) {
      return absl::FailedPreconditionError(
          "DRIVER_OK without accepted FEATURES_OK");
    }
  } else {
    // A legacy driver has no FEATURES_OK: its features take effect now, cut
    // to what was offered in the 32 bits it can see.
    if (!options_.allow_legacy) {
      return absl::FailedPreconditionError(
          "legacy driver on a modern-only device");
    }
    driver_features_ =
        driver_features_ & offered_ & Features::FromU64(0xffffffffu);
    if (absl::Status s = device_.AcceptFeatures(driver_features_); !s.ok()) {
      return s;
    }
  }
  const Endian ring_endian = legacy() ? options_.guest_endian : Endian::kLittle;
  for (uint16_t i = 0; i < queues_.size(); ++i) {
    QueueState& q = queues_[i];
    if (!q.enabled) continue;
    q.ring.set_event_idx(driver_features_.Has(kFEventIdx));
    q.ring.set_indirect_allowed(driver_features_.Has(kFIndirectDesc));
    q.ring.set_endian(ring_endian);
    if (absl::Status s = q.ring.Activate(memory_); !s.ok()) {
      return absl::Status(s.code(),
                          absl::StrFormat("queue %u: %s", i, s.message()));
    }
  }
  active_ = true;
  if (absl::Status s = device_.Activate(*this); !s.ok()) {
    active_ = false;
    device_.Reset();
    return s;
  }
  return absl::OkStatus();
}

void DeviceState::EnableQueue(uint16_t index) {
  if (index >= queues_.size() || active_) return;
  queues_[index].enabled = true;
}

void DeviceState::DisableQueue(uint16_t index) {
  if (index >= queues_.size()) return;
  QueueState& q = queues_[index];
  const uint16_t vector = q.vector;
  q.ring.Reset();
  q.enabled = false;
  q.vector = vector;
}

void DeviceState::ReadConfig(uint32_t offset, absl::Span<uint8_t> data,
                             Endian endian) {
  std::fill(data.begin(), data.end(), 0);
  const uint32_t size = device_.config_size();
  if (offset >= size) return;
  const size_t n = std::min<size_t>(data.size(), size - offset);
  device_.ReadConfig(offset, data.subspan(0, n), endian);
}

void DeviceState::WriteConfig(uint32_t offset, absl::Span<const uint8_t> data,
                              Endian endian) {
  const uint32_t size = device_.config_size();
  if (offset >= size) return;
  const size_t n = std::min<size_t>(data.size(), size - offset);
  device_.WriteConfig(offset, data.subspan(0, n), endian);
}

void DeviceState::Notify(uint16_t index) {
  if (!active_ || index >= queues_.size() || !queues_[index].enabled ||
      (status_ & kStatusNeedsReset)) {
    ++stats_.spurious_notifications;
    return;
  }
  ++stats_.notifications;
  device_.ProcessQueue(index);
  // A ring the driver broke cannot be served any more.
  if (queues_[index].ring.broken()) {
    MarkNeedsReset(queues_[index].ring.status());
  }
}

SplitQueue* DeviceState::queue(uint16_t index) {
  if (!active_ || index >= queues_.size() || !queues_[index].enabled) {
    return nullptr;
  }
  return &queues_[index].ring;
}

void DeviceState::NotifyUsed(uint16_t index) {
  SplitQueue* q = queue(index);
  if (q == nullptr) return;
  if (!q->NeedsNotification()) {
    ++stats_.suppressed_interrupts;
    return;
  }
  ++stats_.queue_interrupts;
  if (sink_ != nullptr) sink_->QueueInterrupt(index);
}

void DeviceState::NotifyConfigChange() {
  ++stats_.config_interrupts;
  if (sink_ != nullptr) sink_->ConfigInterrupt();
}

void DeviceState::MarkNeedsReset(const absl::Status& why) {
  if (status_ == 0 || (status_ & kStatusNeedsReset)) return;
  last_error_ = why;
  status_ |= kStatusNeedsReset;
  // §2.1.2: "If DEVICE_NEEDS_RESET is set, the device MUST send a device
  // configuration change notification to the driver."
  if (status_ & kStatusDriverOk) NotifyConfigChange();
}

}  // namespace vmmkit::virtio
