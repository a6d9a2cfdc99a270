#include "pci/config_space.h"

#include <algorithm>
#include <cassert>
#include <cstring>

#include "absl/strings/str_format.h"

namespace vmmkit::pci {
namespace {

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

bool ValidWidth(size_t n) { return n == 1 || n == 2 || n == 4; }

uint32_t BarOffset(int index) { return kRegBar0 + 4 * index; }

// The command register's low byte (I/O and memory enables) and the BARs.
bool AffectsDecoding(uint32_t offset) {
  return offset == kRegCommand ||
         (offset >= kRegBar0 && offset < kRegCardbusCis);
}

}  // namespace

ConfigSpace::ConfigSpace(const Options& options)
    : bytes_(options.extended ? kExtendedConfigSpaceSize : kConfigSpaceSize),
      writable_(bytes_.size()),
      w1c_(bytes_.size()) {
  Set16(kRegVendorId, options.vendor_id);
  Set16(kRegDeviceId, options.device_id);
  Set8(kRegRevisionId, options.revision_id);
  Set8(kRegClassCode, options.class_code & 0xff);
  Set8(kRegClassCode + 1, (options.class_code >> 8) & 0xff);
  Set8(kRegClassCode + 2, (options.class_code >> 16) & 0xff);
  Set8(kRegHeaderType, options.multi_function ? kHeaderTypeMultiFunction : 0);
  Set16(kRegSubsystemVendorId, options.subsystem_vendor_id);
  Set16(kRegSubsystemId, options.subsystem_id);
  Set8(kRegInterruptPin, options.interrupt_pin);

  // The guest-writable header fields. Everything else in the header is
  // read-only; BARs get their masks from AddBar.
  writable_[kRegCommand] = kCommandWritable & 0xff;
  writable_[kRegCommand + 1] = kCommandWritable >> 8;
  w1c_[kRegStatus] = kStatusW1c & 0xff;
  w1c_[kRegStatus + 1] = kStatusW1c >> 8;
  writable_[kRegCacheLineSize] = 0xff;
  writable_[kRegLatencyTimer] = 0xff;
  writable_[kRegInterruptLine] = 0xff;
}

void ConfigSpace::Read(uint32_t offset, absl::Span<uint8_t> data) {
  const size_t n = data.size();
  if (!ValidWidth(n) || offset > bytes_.size() || n > bytes_.size() - offset) {
    std::fill(data.begin(), data.end(), 0xff);
    return;
  }
  if (has_hooks_ && offset + n > kCapabilityStart) {
    for (const Capability& cap : capabilities_) {
      if (!cap.on_read) continue;
      const uint32_t lo = std::max(offset, cap.offset);
      const uint32_t hi =
          std::min<uint32_t>(offset + n, cap.offset + cap.length);
      if (lo < hi) cap.on_read(lo - cap.offset, hi - lo);
    }
  }
  std::memcpy(data.data(), &bytes_[offset], n);
}

void ConfigSpace::Write(uint32_t offset, absl::Span<const uint8_t> data) {
  const size_t n = data.size();
  if (!ValidWidth(n) || offset > bytes_.size() || n > bytes_.size() - offset) {
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    const uint32_t at = offset + i;
    uint8_t v = (bytes_[at] & ~writable_[at]) | (data[i] & writable_[at]);
    v &= ~(data[i] & w1c_[at]);
    if (v != bytes_[at] && AffectsDecoding(at)) ++decode_generation_;
    bytes_[at] = v;
  }
  if (has_hooks_ && offset + n > kCapabilityStart) {
    for (const Capability& cap : capabilities_) {
      if (!cap.on_write) continue;
      const uint32_t lo = std::max(offset, cap.offset);
      const uint32_t hi =
          std::min<uint32_t>(offset + n, cap.offset + cap.length);
      if (lo < hi)
        cap.on_write(lo - cap.offset, data.subspan(lo - offset, hi - lo));
    }
  }
}

uint8_t ConfigSpace::Get8(uint32_t offset) const {
  assert(offset < bytes_.size());
  if (offset >= bytes_.size()) return 0xff;
  return bytes_[offset];
}

uint16_t ConfigSpace::Get16(uint32_t offset) const {
  return Get8(offset) | (uint16_t{Get8(offset + 1)} << 8);
}

uint32_t ConfigSpace::Get32(uint32_t offset) const {
  return Get16(offset) | (uint32_t{Get16(offset + 2)} << 16);
}

void ConfigSpace::Set8(uint32_t offset, uint8_t value) {
  assert(offset < bytes_.size());
  if (offset >= bytes_.size()) return;
  if (value != bytes_[offset] && AffectsDecoding(offset)) ++decode_generation_;
  bytes_[offset] = value;
}

void ConfigSpace::Set16(uint32_t offset, uint16_t value) {
  Set8(offset, value & 0xff);
  Set8(offset + 1, value >> 8);
}

void ConfigSpace::Set32(uint32_t offset, uint32_t value) {
  Set16(offset, value & 0xffff);
  Set16(offset + 2, value >> 16);
}

absl::Status ConfigSpace::SetMasks(uint32_t offset,
                                   absl::Span<const uint8_t> writable,
                                   absl::Span<const uint8_t> w1c) {
  if (!w1c.empty() && w1c.size() != writable.size()) {
    return absl::InvalidArgumentError(
        "the W1C mask must be empty or as long as the writable mask");
  }
  if (offset > bytes_.size() || writable.size() > bytes_.size() - offset) {
    return absl::OutOfRangeError(absl::StrFormat(
        "masks [%#x, +%u) outside the %u-byte configuration space", offset,
        writable.size(), bytes_.size()));
  }
  std::copy(writable.begin(), writable.end(), writable_.begin() + offset);
  if (w1c.empty()) {
    std::fill_n(w1c_.begin() + offset, writable.size(), 0);
  } else {
    std::copy(w1c.begin(), w1c.end(), w1c_.begin() + offset);
  }
  return absl::OkStatus();
}

void ConfigSpace::SetInterruptStatus(bool pending) {
  const uint16_t s = status();
  Set16(kRegStatus, pending ? (s | kStatusInterrupt) : (s & ~kStatusInterrupt));
}

void ConfigSpace::SetMultiFunction(bool multi_function) {
  const uint8_t h = Get8(kRegHeaderType);
  Set8(kRegHeaderType, multi_function ? (h | kHeaderTypeMultiFunction)
                                      : (h & ~kHeaderTypeMultiFunction));
}

absl::Status ConfigSpace::AddBar(int index, const BarSpec& spec) {
  if (index < 0 || index >= kNumBars) {
    return absl::InvalidArgumentError(
        absl::StrFormat("BAR index %d outside 0..5", index));
  }
  if (bars_[index].type != BarType::kNone || upper_half_[index]) {
    return absl::AlreadyExistsError(
        absl::StrFormat("BAR %d is already in use", index));
  }
  if (!IsPowerOfTwo(spec.size)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "BAR %d size %#x is not a power of two", index, spec.size));
  }
  uint32_t low = 0;
  uint64_t writable = ~(spec.size - 1);
  switch (spec.type) {
    case BarType::kNone:
      return absl::InvalidArgumentError("BAR type kNone cannot be added");
    case BarType::kIo:
      if (spec.size < 4 || spec.size > 0x10000 || spec.prefetchable) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "I/O BAR %d: size %#x outside 4..64 KiB or prefetchable", index,
            spec.size));
      }
      low = kBarIoSpace;
      break;
    case BarType::kMemory32:
      if (spec.size < 16 || spec.size > (uint64_t{1} << 31)) {
        return absl::InvalidArgumentError(
            absl::StrFormat("32-bit memory BAR %d: size %#x outside 16..2 GiB",
                            index, spec.size));
      }
      break;
    case BarType::kMemory64:
      if (spec.size < 16 || spec.size > (uint64_t{1} << 63)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "64-bit memory BAR %d: size %#x below 16 bytes", index, spec.size));
      }
      if (index == kNumBars - 1) {
        return absl::InvalidArgumentError(
            "a 64-bit BAR needs two registers; BAR 5 is the last");
      }
      if (bars_[index + 1].type != BarType::kNone) {
        return absl::AlreadyExistsError(
            absl::StrFormat("BAR %d (upper half of 64-bit BAR %d) is in use",
                            index + 1, index));
      }
      low = kBarMemType64;
      break;
  }
  if (spec.type != BarType::kIo && spec.prefetchable) low |= kBarPrefetchable;

  bars_[index] = spec;
  ++decode_generation_;
  const uint32_t off = BarOffset(index);
  Set32(off, low);
  const uint32_t wlow =
      static_cast<uint32_t>(writable) &
      (spec.type == BarType::kIo ? kBarIoAddressMask : kBarMemAddressMask);
  const uint8_t mask_low[4] = {
      static_cast<uint8_t>(wlow), static_cast<uint8_t>(wlow >> 8),
      static_cast<uint8_t>(wlow >> 16), static_cast<uint8_t>(wlow >> 24)};
  // Both in range by construction: the BAR registers are in the header.
  (void)SetMasks(off, mask_low);
  if (spec.type == BarType::kMemory64) {
    upper_half_[index + 1] = true;
    const uint32_t whigh = static_cast<uint32_t>(writable >> 32);
    const uint8_t mask_high[4] = {
        static_cast<uint8_t>(whigh), static_cast<uint8_t>(whigh >> 8),
        static_cast<uint8_t>(whigh >> 16), static_cast<uint8_t>(whigh >> 24)};
    Set32(off + 4, 0);
    (void)SetMasks(off + 4, mask_high);
  }
  return absl::OkStatus();
}

const BarSpec& ConfigSpace::bar(int index) const {
  static constexpr BarSpec kNoBar{};
  if (index < 0 || index >= kNumBars) return kNoBar;
  return bars_[index];
}

uint64_t ConfigSpace::BarAddress(int index) const {
  switch (bar(index).type) {
    case BarType::kNone:
      return 0;
    case BarType::kIo:
      return Get32(BarOffset(index)) & kBarIoAddressMask;
    case BarType::kMemory32:
      return Get32(BarOffset(index)) & kBarMemAddressMask;
    case BarType::kMemory64:
      return (Get32(BarOffset(index)) & kBarMemAddressMask) |
             (uint64_t{Get32(BarOffset(index) + 4)} << 32);
  }
  return 0;
}

absl::Status ConfigSpace::SetBarAddress(int index, uint64_t address) {
  const BarSpec& spec = bar(index);
  if (spec.type == BarType::kNone) {
    return absl::InvalidArgumentError(
        absl::StrFormat("BAR %d is not implemented", index));
  }
  if (address & (spec.size - 1)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("BAR %d: address %#x not aligned to its size %#x",
                        index, address, spec.size));
  }
  const bool wide = spec.type == BarType::kMemory64;
  if (!wide && (address > 0xffffffffu || spec.size > 0x100000000u - address)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("BAR %d: [%#x, +%#x) does not fit a 32-bit BAR", index,
                        address, spec.size));
  }
  const uint32_t off = BarOffset(index);
  const uint32_t flags =
      Get32(off) &
      (spec.type == BarType::kIo ? ~kBarIoAddressMask : ~kBarMemAddressMask);
  Set32(off, static_cast<uint32_t>(address) | flags);
  if (wide) Set32(off + 4, static_cast<uint32_t>(address >> 32));
  return absl::OkStatus();
}

bool ConfigSpace::BarDecodingEnabled(int index) const {
  switch (bar(index).type) {
    case BarType::kNone:
      return false;
    case BarType::kIo:
      return io_enabled();
    case BarType::kMemory32:
    case BarType::kMemory64:
      return memory_enabled();
  }
  return false;
}

absl::StatusOr<uint32_t> ConfigSpace::AddCapability(
    uint8_t id, absl::Span<const uint8_t> body, CapabilityOptions options) {
  const uint32_t length = 2 + static_cast<uint32_t>(body.size());
  if (!options.writable.empty() && options.writable.size() != body.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("capability %#x: writable mask has %u bytes, body %u",
                        id, options.writable.size(), body.size()));
  }
  if (!options.write_1_to_clear.empty() &&
      options.write_1_to_clear.size() != body.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("capability %#x: W1C mask has %u bytes, body %u", id,
                        options.write_1_to_clear.size(), body.size()));
  }
  uint32_t offset = options.offset;
  if (offset == 0) {
    offset = kCapabilityStart;
    for (const Capability& c : capabilities_) {
      if (c.extended) continue;
      offset = std::max(offset, (c.offset + c.length + 3) & ~uint32_t{3});
    }
  } else if (offset < kCapabilityStart || offset % 4 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "capability %#x: offset %#x must be dword-aligned and >= 0x40", id,
        offset));
  }
  // Standard capabilities are reached through 8-bit next pointers: all of
  // them lie in the first 256 bytes.
  if (offset >= kConfigSpaceSize || length > kConfigSpaceSize - offset) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "capability %#x: %u bytes at %#x do not fit below 0x100", id, length,
        offset));
  }
  for (const Capability& c : capabilities_) {
    if (!c.extended && offset < c.offset + c.length &&
        c.offset < offset + length) {
      return absl::AlreadyExistsError(absl::StrFormat(
          "capability %#x at [%#x, +%u) overlaps the one at [%#x, +%u)", id,
          offset, length, c.offset, c.length));
    }
  }

  Set8(offset, id);
  Set8(offset + 1, 0);
  std::copy(body.begin(), body.end(), bytes_.begin() + offset + 2);
  writable_[offset] = writable_[offset + 1] = 0;
  w1c_[offset] = w1c_[offset + 1] = 0;
  for (size_t i = 0; i < body.size(); ++i) {
    writable_[offset + 2 + i] =
        options.writable.empty() ? 0 : options.writable[i];
    w1c_[offset + 2 + i] =
        options.write_1_to_clear.empty() ? 0 : options.write_1_to_clear[i];
  }
  // Link it at the end of the list.
  const Capability* last = nullptr;
  for (const Capability& c : capabilities_) {
    if (!c.extended) last = &c;
  }
  if (last == nullptr) {
    Set8(kRegCapabilitiesPointer, static_cast<uint8_t>(offset));
  } else {
    Set8(last->offset + 1, static_cast<uint8_t>(offset));
  }
  Set16(kRegStatus, status() | kStatusCapabilityList);
  has_hooks_ = has_hooks_ || options.on_read || options.on_write;
  capabilities_.push_back({.offset = offset,
                           .length = length,
                           .extended = false,
                           .on_read = std::move(options.on_read),
                           .on_write = std::move(options.on_write)});
  return offset;
}

absl::StatusOr<uint32_t> ConfigSpace::AddExtendedCapability(
    uint16_t id, uint8_t version, absl::Span<const uint8_t> body,
    CapabilityOptions options) {
  if (bytes_.size() != kExtendedConfigSpaceSize) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "extended capability %#x: the configuration space has 256 bytes", id));
  }
  if (version > 0xf) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "extended capability %#x: version %u does not fit 4 bits", id,
        version));
  }
  if ((!options.writable.empty() && options.writable.size() != body.size()) ||
      (!options.write_1_to_clear.empty() &&
       options.write_1_to_clear.size() != body.size())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "extended capability %#x: masks must be empty or %u bytes", id,
        body.size()));
  }
  const Capability* last = nullptr;
  uint32_t next_free = kConfigSpaceSize;
  for (const Capability& c : capabilities_) {
    if (!c.extended) continue;
    last = &c;
    next_free = std::max(next_free, (c.offset + c.length + 3) & ~uint32_t{3});
  }
  uint32_t offset = options.offset == 0 ? next_free : options.offset;
  // "Extended Capabilities in device configuration space always begin at
  // offset 100h" (PCIe 3.0 §7.9.1): the list head is fixed.
  if (offset < kConfigSpaceSize || offset % 4 != 0 ||
      (last == nullptr && offset != kConfigSpaceSize)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "extended capability %#x: offset %#x must be dword-aligned, >= 0x100, "
        "and 0x100 for the first one",
        id, offset));
  }
  const uint64_t length = 4 + uint64_t{body.size()};
  if (offset >= bytes_.size() || length > bytes_.size() - offset) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("extended capability %#x: %u bytes at %#x do not fit",
                        id, length, offset));
  }
  for (const Capability& c : capabilities_) {
    if (c.extended && offset < c.offset + c.length &&
        c.offset < offset + length) {
      return absl::AlreadyExistsError(absl::StrFormat(
          "extended capability %#x at [%#x, +%u) overlaps the one at "
          "[%#x, +%u)",
          id, offset, length, c.offset, c.length));
    }
  }
  // Header: id (15:0), version (19:16), next offset (31:20); read-only.
  Set32(offset, id | (uint32_t{version} << 16));
  std::fill_n(writable_.begin() + offset, 4, 0);
  std::fill_n(w1c_.begin() + offset, 4, 0);
  std::copy(body.begin(), body.end(), bytes_.begin() + offset + 4);
  for (size_t i = 0; i < body.size(); ++i) {
    writable_[offset + 4 + i] =
        options.writable.empty() ? 0 : options.writable[i];
    w1c_[offset + 4 + i] =
        options.write_1_to_clear.empty() ? 0 : options.write_1_to_clear[i];
  }
  if (last != nullptr) {
    Set32(last->offset, (Get32(last->offset) & 0x000fffff) | (offset << 20));
  }
  has_hooks_ = has_hooks_ || options.on_read || options.on_write;
  capabilities_.push_back({.offset = offset,
                           .length = static_cast<uint32_t>(length),
                           .extended = true,
                           .on_read = std::move(options.on_read),
                           .on_write = std::move(options.on_write)});
  return offset;
}

std::optional<uint32_t> ConfigSpace::FindCapability(uint8_t id) const {
  for (const Capability& c : capabilities_) {
    if (!c.extended && Get8(c.offset) == id) return c.offset;
  }
  return std::nullopt;
}

std::optional<uint32_t> ConfigSpace::FindExtendedCapability(uint16_t id) const {
  for (const Capability& c : capabilities_) {
    if (c.extended && Get16(c.offset) == id) return c.offset;
  }
  return std::nullopt;
}

}  // namespace vmmkit::pci
