#include "pci/function.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"

namespace vmmkit::pci {

class GenericPciFunction::MsixTable : public RegionHandler {
 public:
  explicit MsixTable(MsixController* msix) : msix_(msix) {}
  void Read(uint64_t offset, absl::Span<uint8_t> data) override {
    msix_->TableRead(offset, data);
  }
  void Write(uint64_t offset, absl::Span<const uint8_t> data) override {
    msix_->TableWrite(offset, data);
  }

 private:
  MsixController* const msix_;
};

class GenericPciFunction::MsixPba : public RegionHandler {
 public:
  explicit MsixPba(MsixController* msix) : msix_(msix) {}
  void Read(uint64_t offset, absl::Span<uint8_t> data) override {
    msix_->PbaRead(offset, data);
  }
  void Write(uint64_t offset, absl::Span<const uint8_t> data) override {
    msix_->PbaWrite(offset, data);
  }

 private:
  MsixController* const msix_;
};

GenericPciFunction::GenericPciFunction(const ConfigSpace::Options& options)
    : config_(options) {}

void GenericPciFunction::ConfigRead(uint32_t offset, absl::Span<uint8_t> data) {
  config_.Read(offset, data);
}

void GenericPciFunction::ConfigWrite(uint32_t offset,
                                     absl::Span<const uint8_t> data) {
  config_.Write(offset, data);
  UpdateIntxPin();
}

RegionHandler* GenericPciFunction::FindRegion(int bar, uint64_t offset,
                                              uint64_t length,
                                              uint64_t* region_offset) const {
  for (const Region& r : regions_) {
    if (r.bar != bar || offset < r.offset) continue;
    const uint64_t rel = offset - r.offset;
    if (rel < r.size && length <= r.size - rel) {
      *region_offset = rel;
      return r.handler;
    }
  }
  return nullptr;
}

void GenericPciFunction::BarRead(int bar, uint64_t offset,
                                 absl::Span<uint8_t> data) {
  uint64_t rel = 0;
  if (RegionHandler* h = FindRegion(bar, offset, data.size(), &rel)) {
    h->Read(rel, data);
  } else {
    std::fill(data.begin(), data.end(), 0xff);
  }
}

void GenericPciFunction::BarWrite(int bar, uint64_t offset,
                                  absl::Span<const uint8_t> data) {
  uint64_t rel = 0;
  if (RegionHandler* h = FindRegion(bar, offset, data.size(), &rel)) {
    h->Write(rel, data);
  }
}

absl::Status GenericPciFunction::AddRegion(int bar, uint64_t offset,
                                           uint64_t size,
                                           RegionHandler* handler) {
  const BarSpec& spec = config_.bar(bar);
  if (spec.type == BarType::kNone) {
    return absl::InvalidArgumentError(
        absl::StrFormat("region in BAR %d, which does not exist", bar));
  }
  if (handler == nullptr || size == 0 || offset >= spec.size ||
      size > spec.size - offset) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "region [%#x, +%#x) does not fit BAR %d (%#x bytes) or has no handler",
        offset, size, bar, spec.size));
  }
  for (const Region& r : regions_) {
    if (r.bar == bar && offset < r.offset + r.size &&
        r.offset < offset + size) {
      return absl::AlreadyExistsError(
          absl::StrFormat("region [%#x, +%#x) of BAR %d overlaps [%#x, +%#x)",
                          offset, size, bar, r.offset, r.size));
    }
  }
  regions_.push_back(
      {.bar = bar, .offset = offset, .size = size, .handler = handler});
  return absl::OkStatus();
}

absl::StatusOr<MsixController*> GenericPciFunction::AddMsix(
    const MsixController::Options& options, MsiSink* sink) {
  if (msix_ != nullptr) {
    return absl::AlreadyExistsError("the function has MSI-X already");
  }
  // Check the regions first so that a failure leaves no capability behind.
  const uint64_t table_size = 16u * options.num_vectors;
  const uint64_t pba_size = 8u * ((options.num_vectors + 63u) / 64u);
  for (const Region& r : regions_) {
    if ((r.bar == options.table_bar &&
         options.table_offset < r.offset + r.size &&
         r.offset < options.table_offset + table_size) ||
        (r.bar == options.pba_bar && options.pba_offset < r.offset + r.size &&
         r.offset < options.pba_offset + pba_size)) {
      return absl::AlreadyExistsError(
          "the MSI-X table or PBA overlaps another BAR region");
    }
  }
  absl::StatusOr<std::unique_ptr<MsixController>> msix =
      MsixController::Create(config_, options, sink);
  if (!msix.ok()) return msix.status();
  msix_ = *std::move(msix);
  msix_table_ = std::make_unique<MsixTable>(msix_.get());
  msix_pba_ = std::make_unique<MsixPba>(msix_.get());
  // Both fit and overlap nothing: checked above and by Create.
  (void)AddRegion(options.table_bar, options.table_offset, msix_->table_size(),
                  msix_table_.get());
  (void)AddRegion(options.pba_bar, options.pba_offset, msix_->pba_size(),
                  msix_pba_.get());
  return msix_.get();
}

void GenericPciFunction::SetIntxLevel(bool level) {
  intx_level_ = level;
  config_.SetInterruptStatus(level);
  UpdateIntxPin();
}

void GenericPciFunction::UpdateIntxPin() {
  const bool pin = intx_level_ && !config_.intx_disabled() &&
                   config_.Get8(kRegInterruptPin) != 0;
  if (pin == intx_pin_) return;
  intx_pin_ = pin;
  if (intx_sink_ != nullptr) intx_sink_->SetIntx(pin);
}

}  // namespace vmmkit::pci
