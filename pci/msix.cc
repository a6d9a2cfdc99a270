#include "pci/msix.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"

namespace vmmkit::pci {
namespace {

// Offsets inside the capability.
constexpr uint32_t kCapMessageControl = 2;
constexpr uint32_t kCapTable = 4;
constexpr uint32_t kCapPba = 8;

absl::Status CheckPlacement(const ConfigSpace& config, const char* what,
                            int bar, uint32_t offset, uint32_t size) {
  const BarSpec& spec = config.bar(bar);
  if (spec.type != BarType::kMemory32 && spec.type != BarType::kMemory64) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "MSI-X %s: BAR %d is not a memory BAR of this function", what, bar));
  }
  if (offset % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "MSI-X %s: offset %#x is not QWORD aligned", what, offset));
  }
  if (offset > spec.size || size > spec.size - offset) {
    return absl::InvalidArgumentError(
        absl::StrFormat("MSI-X %s: [%#x, +%#x) does not fit BAR %d (%#x bytes)",
                        what, offset, size, bar, spec.size));
  }
  return absl::OkStatus();
}

// Aligned DWORD or QWORD: the only accesses the table and PBA honour.
bool ValidAccess(uint64_t offset, size_t n, uint64_t region_size) {
  return (n == 4 || n == 8) && offset % n == 0 && offset < region_size &&
         n <= region_size - offset;
}

uint32_t LoadLe32(const uint8_t* p) {
  return p[0] | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) |
         (uint32_t{p[3]} << 24);
}

void StoreLe32(uint8_t* p, uint32_t v) {
  p[0] = v & 0xff;
  p[1] = (v >> 8) & 0xff;
  p[2] = (v >> 16) & 0xff;
  p[3] = v >> 24;
}

uint32_t EntryField(const MsixTableEntry& e, uint32_t dword) {
  switch (dword) {
    case 0:
      return e.address_lo;
    case 1:
      return e.address_hi;
    case 2:
      return e.data;
    default:
      return e.vector_control;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<MsixController>> MsixController::Create(
    ConfigSpace& config, const Options& options, MsiSink* sink) {
  if (options.num_vectors == 0 || options.num_vectors > kMsixMaxVectors) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "MSI-X: %u vectors outside 1..2048", options.num_vectors));
  }
  if (sink == nullptr) return absl::InvalidArgumentError("MSI-X: no sink");
  const uint32_t table_size = 16u * options.num_vectors;
  const uint32_t pba_size = 8u * ((options.num_vectors + 63u) / 64u);
  if (absl::Status s = CheckPlacement(config, "table", options.table_bar,
                                      options.table_offset, table_size);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckPlacement(config, "PBA", options.pba_bar,
                                      options.pba_offset, pba_size);
      !s.ok()) {
    return s;
  }
  if (options.table_bar == options.pba_bar &&
      options.table_offset < options.pba_offset + pba_size &&
      options.pba_offset < options.table_offset + table_size) {
    return absl::InvalidArgumentError("MSI-X: the table and the PBA overlap");
  }

  std::unique_ptr<MsixController> msix(
      new MsixController(config, options, sink));
  MsixController* self = msix.get();
  uint8_t body[10] = {};
  const uint16_t control = options.num_vectors - 1;
  body[kCapMessageControl - 2] = control & 0xff;
  body[kCapMessageControl - 1] = control >> 8;
  // The body starts after id and next: capability offset - 2.
  StoreLe32(&body[kCapTable - 2], options.table_offset | options.table_bar);
  StoreLe32(&body[kCapPba - 2], options.pba_offset | options.pba_bar);
  ConfigSpace::CapabilityOptions cap;
  cap.offset = options.capability_offset;
  cap.writable.assign(sizeof(body), 0);
  cap.writable[kCapMessageControl - 1] = (kMsixFunctionMask | kMsixEnable) >> 8;
  cap.on_write = [self](uint32_t offset, absl::Span<const uint8_t> data) {
    if (offset < kCapMessageControl + 2 &&
        offset + data.size() > kCapMessageControl) {
      self->OnConfigWrite();
    }
  };
  absl::StatusOr<uint32_t> at =
      config.AddCapability(kCapIdMsix, body, std::move(cap));
  if (!at.ok()) return at.status();
  msix->cap_offset_ = *at;
  return msix;
}

MsixController::MsixController(ConfigSpace& config, const Options& options,
                               MsiSink* sink)
    : config_(config),
      options_(options),
      sink_(sink),
      entries_(options.num_vectors),
      pending_((options.num_vectors + 63) / 64) {
  for (MsixTableEntry& e : entries_) e = {0, 0, 0, kMsixVectorMasked};
}

bool MsixController::enabled() const {
  return config_.Get16(cap_offset_ + kCapMessageControl) & kMsixEnable;
}

bool MsixController::function_masked() const {
  return config_.Get16(cap_offset_ + kCapMessageControl) & kMsixFunctionMask;
}

MsiMessage MsixController::message(uint16_t vector) const {
  if (vector >= entries_.size()) return {};
  const MsixTableEntry& e = entries_[vector];
  return {.address = e.address_lo | (uint64_t{e.address_hi} << 32),
          .data = e.data,
          .masked = (e.vector_control & kMsixVectorMasked) != 0};
}

bool MsixController::pending(uint16_t vector) const {
  if (vector >= entries_.size()) return false;
  return (pending_[vector / 64] >> (vector % 64)) & 1;
}

absl::Status MsixController::Raise(uint16_t vector) {
  if (vector >= entries_.size()) {
    return absl::OutOfRangeError(absl::StrFormat(
        "MSI-X vector %u, the function has %u", vector, entries_.size()));
  }
  if (!enabled()) {
    return absl::FailedPreconditionError("MSI-X is disabled");
  }
  if (function_masked() ||
      (entries_[vector].vector_control & kMsixVectorMasked)) {
    pending_[vector / 64] |= uint64_t{1} << (vector % 64);
    return absl::OkStatus();
  }
  Send(vector);
  return absl::OkStatus();
}

absl::Status MsixController::ClearPending(uint16_t vector) {
  if (vector >= entries_.size()) {
    return absl::OutOfRangeError(absl::StrFormat(
        "MSI-X vector %u, the function has %u", vector, entries_.size()));
  }
  pending_[vector / 64] &= ~(uint64_t{1} << (vector % 64));
  return absl::OkStatus();
}

void MsixController::Send(uint16_t vector) {
  const MsixTableEntry& e = entries_[vector];
  sink_->SendMsi(e.address_lo | (uint64_t{e.address_hi} << 32), e.data);
}

void MsixController::DeliverUnmasked() {
  if (!enabled() || function_masked()) return;
  // Bounded by the table size (at most 2048 vectors).
  for (size_t word = 0; word < pending_.size(); ++word) {
    uint64_t bits = pending_[word];
    while (bits != 0) {
      const int bit = __builtin_ctzll(bits);
      bits &= bits - 1;
      const uint16_t vector = static_cast<uint16_t>(word * 64 + bit);
      if (entries_[vector].vector_control & kMsixVectorMasked) continue;
      pending_[word] &= ~(uint64_t{1} << bit);
      Send(vector);
    }
  }
}

void MsixController::OnConfigWrite() {
  const bool now_enabled = enabled();
  const bool now_masked = function_masked();
  if (now_enabled == last_enabled_ && now_masked == last_function_masked_) {
    return;
  }
  last_enabled_ = now_enabled;
  last_function_masked_ = now_masked;
  if (on_control_) on_control_(now_enabled, now_masked);
  DeliverUnmasked();
}

void MsixController::TableRead(uint64_t offset,
                               absl::Span<uint8_t> data) const {
  if (!ValidAccess(offset, data.size(), table_size())) {
    std::fill(data.begin(), data.end(), 0xff);
    return;
  }
  for (size_t i = 0; i < data.size(); i += 4) {
    const uint64_t at = offset + i;
    StoreLe32(&data[i], EntryField(entries_[at / 16], (at % 16) / 4));
  }
}

void MsixController::TableWrite(uint64_t offset,
                                absl::Span<const uint8_t> data) {
  if (!ValidAccess(offset, data.size(), table_size())) return;
  // An aligned QWORD never crosses an entry.
  const uint16_t vector = static_cast<uint16_t>(offset / 16);
  MsixTableEntry& e = entries_[vector];
  const MsixTableEntry old = e;
  for (size_t i = 0; i < data.size(); i += 4) {
    const uint32_t v = LoadLe32(&data[i]);
    switch (((offset + i) % 16) / 4) {
      case 0:
        e.address_lo = v;
        break;
      case 1:
        e.address_hi = v;
        break;
      case 2:
        e.data = v;
        break;
      default:
        // Reserved bits 31:1 are read-only zero.
        e.vector_control = v & kMsixVectorMasked;
        break;
    }
  }
  if (std::memcmp(&old, &e, sizeof(e)) == 0) return;
  if (on_vector_) on_vector_(vector);
  if ((old.vector_control & kMsixVectorMasked) &&
      !(e.vector_control & kMsixVectorMasked)) {
    DeliverUnmasked();
  }
}

void MsixController::PbaRead(uint64_t offset, absl::Span<uint8_t> data) const {
  if (!ValidAccess(offset, data.size(), pba_size())) {
    std::fill(data.begin(), data.end(), 0xff);
    return;
  }
  for (size_t i = 0; i < data.size(); i += 4) {
    const uint64_t at = offset + i;
    const uint64_t word = pending_[at / 8];
    StoreLe32(&data[i], static_cast<uint32_t>(word >> (8 * (at % 8))));
  }
}

void MsixController::PbaWrite(uint64_t, absl::Span<const uint8_t>) {
  // Read-only ("Software should never write ... the PBA"); ignored.
}

void MsixController::SetObserver(VectorChanged on_vector,
                                 ControlChanged on_control) {
  on_vector_ = std::move(on_vector);
  on_control_ = std::move(on_control);
}

void MsixController::Reset() {
  for (MsixTableEntry& e : entries_) e = {0, 0, 0, kMsixVectorMasked};
  std::fill(pending_.begin(), pending_.end(), 0);
  const uint32_t mc = cap_offset_ + kCapMessageControl;
  config_.Set16(mc, config_.Get16(mc) & kMsixTableSizeMask);
  last_enabled_ = false;
  last_function_masked_ = false;
}

}  // namespace vmmkit::pci
