#include "virtio-device/testing/test_driver.h"

#include <cstdlib>

#include "absl/strings/str_format.h"

namespace vmmkit::virtio::testing {

TestDriver::TestDriver(DeviceState& state, const GuestMemory& memory,
                       Options options)
    : state_(state),
      memory_(memory),
      options_(options),
      next_data_(options.data_base) {
  state_.set_interrupt_sink(this);
}

Endian TestDriver::endian() const {
  return options_.legacy ? state_.options().guest_endian : Endian::kLittle;
}

absl::Status TestDriver::Start(Features wanted) {
  state_.SetStatus(0);
  state_.SetStatus(kStatusAcknowledge);
  state_.SetStatus(kStatusAcknowledge | kStatusDriver);
  Features offered;
  for (uint32_t w = 0; w < Features::kWords; ++w) {
    offered.SetWord(w, state_.DeviceFeatures(w));
  }
  if (!options_.legacy) wanted.Set(kFVersion1);
  if (options_.legacy) {
    wanted.Set(kFVersion1, false);
    wanted = wanted & Features::FromU64(0xffffffffu);
  }
  negotiated_ = wanted & offered;
  for (uint32_t w = 0; w < Features::kWords; ++w) {
    state_.SetDriverFeatures(w, negotiated_.Word(w));
  }
  uint8_t status = kStatusAcknowledge | kStatusDriver;
  if (!options_.legacy) {
    status |= kStatusFeaturesOk;
    state_.SetStatus(status);
    if (!(state_.status() & kStatusFeaturesOk)) {
      return absl::FailedPreconditionError("device refused FEATURES_OK");
    }
  }
  queues_.clear();
  queue_irqs_.assign(state_.num_queues(), 0);
  uint64_t ring = options_.ring_base;
  for (uint16_t i = 0; i < state_.num_queues(); ++i) {
    SplitQueue& q = state_.queue_config(i);
    const uint16_t size =
        options_.queue_size != 0 ? options_.queue_size : q.max_size();
    q.set_size(size);
    DriverQueue::Layout layout;
    if (options_.legacy) {
      layout = DriverQueue::LegacyLayout(size, ring, 4096);
      absl::Status s = q.SetLegacyLayout(ring, 4096);
      if (!s.ok()) return s;
      ring += (SplitQueue::LegacyRingBytes(size, 4096) + 4095) & ~4095ull;
    } else {
      layout = {.size = size,
                .desc = ring,
                .avail = ring + virtqueue::DescTableBytes(size),
                .used = (ring + virtqueue::DescTableBytes(size) +
                         virtqueue::AvailRingBytes(size) + 3) &
                        ~3ull};
      q.set_desc_table(layout.desc);
      q.set_avail_ring(layout.avail);
      q.set_used_ring(layout.used);
      ring = (layout.used + virtqueue::UsedRingBytes(size) + 4095) & ~4095ull;
    }
    auto drv = std::make_unique<DriverQueue>(memory_, layout, endian());
    drv->set_event_idx(negotiated_.Has(kFEventIdx));
    queues_.push_back(std::move(drv));
    state_.EnableQueue(i);
  }
  state_.SetStatus(status | kStatusDriverOk);
  if (state_.status() & kStatusNeedsReset) {
    return absl::InternalError(
        absl::StrFormat("DRIVER_OK ended in DEVICE_NEEDS_RESET: %s",
                        state_.last_error().ToString()));
  }
  return absl::OkStatus();
}

void TestDriver::Reset() { state_.SetStatus(0); }

std::vector<uint8_t> TestDriver::ReadConfig(uint32_t offset, uint32_t n) {
  std::vector<uint8_t> out(n);
  state_.ReadConfig(offset, absl::MakeSpan(out), endian());
  return out;
}

namespace {
uint64_t FromBytes(const std::vector<uint8_t>& b, Endian e) {
  uint64_t v = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    const size_t shift = e == Endian::kLittle ? i : b.size() - 1 - i;
    v |= uint64_t{b[i]} << (8 * shift);
  }
  return v;
}
}  // namespace

uint64_t TestDriver::ReadConfigU64(uint32_t offset) {
  return FromBytes(ReadConfig(offset, 8), endian());
}
uint32_t TestDriver::ReadConfigU32(uint32_t offset) {
  return static_cast<uint32_t>(FromBytes(ReadConfig(offset, 4), endian()));
}
uint16_t TestDriver::ReadConfigU16(uint32_t offset) {
  return static_cast<uint16_t>(FromBytes(ReadConfig(offset, 2), endian()));
}

uint64_t TestDriver::Alloc(uint64_t size) {
  const uint64_t addr = next_data_;
  next_data_ = (next_data_ + size + 15) & ~15ull;
  if (!memory_.Contains(addr, size)) {
    absl::FPrintF(stderr, "TestDriver::Alloc: out of guest memory\n");
    std::abort();
  }
  return addr;
}

void TestDriver::Put(uint64_t addr, absl::Span<const uint8_t> bytes) {
  if (!memory_.Write(addr, bytes).ok()) std::abort();
}

std::vector<uint8_t> TestDriver::Get(uint64_t addr, uint64_t n) {
  std::vector<uint8_t> out(n);
  if (!memory_.Read(addr, absl::MakeSpan(out)).ok()) std::abort();
  return out;
}

void TestDriver::QueueInterrupt(uint16_t index) {
  if (index < queue_irqs_.size()) ++queue_irqs_[index];
}

}  // namespace vmmkit::virtio::testing
