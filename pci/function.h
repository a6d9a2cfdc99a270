// pci/function.h: a function on the PCI bus, and a generic one to build on.
//
// PciFunction is what the root bus sees of a device: its configuration space
// (for BAR layout, addresses and the command register's decode enables) and
// four access methods, each an offset and a span whose size is the access
// width (STYLE.md rule 11).
//
// GenericPciFunction implements it from a ConfigSpace, BARs divided into
// regions served by RegionHandlers, optional MSI-X and an INTx line. A device
// model (virtio-pci, a test device) derives from it or owns one:
//
//   class MyDevice : public GenericPciFunction, private RegionHandler {
//    public:
//     MyDevice() : GenericPciFunction({.vendor_id = 0x1234, .device_id = 1,
//                                      .class_code = 0xff0000,
//                                      .interrupt_pin = 1}) {}
//     absl::Status Init(MsiSink* sink) {
//       VMMKIT_RETURN_IF_ERROR(AddBar(0, {.type = BarType::kMemory32,
//                                         .size = 0x2000}));
//       VMMKIT_RETURN_IF_ERROR(AddRegion(0, 0, 0x100, this));
//       return AddMsix({.num_vectors = 2, .table_bar = 0,
//                       .table_offset = 0x1000, .pba_bar = 0,
//                       .pba_offset = 0x1800}, sink).status();
//     }
//     void Read(uint64_t offset, absl::Span<uint8_t> data) override;
//     void Write(uint64_t offset, absl::Span<const uint8_t> data) override;
//   };
//
// A BAR access that lies wholly inside one region goes to that region's
// handler with the offset relative to the region; any other BAR access (a
// hole, or straddling two regions) reads all-ones and writes nothing. Width
// checks are the handler's: it may see any span size the bus passes.
//
// INTx: SetIntxLevel(level) sets the status register's Interrupt Status bit
// and drives the IntxSink when the command register's INTx Disable bit is
// clear (PCI 3.0 §6.2.2: "when set, this bit disables the assertion of the
// device/function's INTx# signal"); toggling INTx Disable re-drives the pin.
//
// Thread-compatibility: one thread at a time, as ConfigSpace. Handlers and
// sinks are not owned and must outlive the function.
#ifndef VMMKIT_PCI_FUNCTION_H_
#define VMMKIT_PCI_FUNCTION_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "pci/config_space.h"
#include "pci/msix.h"

namespace vmmkit::pci {

// A block of registers or memory inside a BAR.
class RegionHandler {
 public:
  virtual ~RegionHandler() = default;
  virtual void Read(uint64_t offset, absl::Span<uint8_t> data) = 0;
  virtual void Write(uint64_t offset, absl::Span<const uint8_t> data) = 0;
};

// The function's INTx pin, as the platform wires it (an IOAPIC input).
class IntxSink {
 public:
  virtual ~IntxSink() = default;
  virtual void SetIntx(bool asserted) = 0;
};

class PciFunction {
 public:
  virtual ~PciFunction() = default;
  // The bus reads BAR specs, addresses and decode enables from here, and
  // programs BAR addresses through it (RootBus::AssignBars).
  virtual ConfigSpace& config_space() = 0;
  // Guest configuration accesses (width 1, 2 or 4; see ConfigSpace).
  virtual void ConfigRead(uint32_t offset, absl::Span<uint8_t> data) = 0;
  virtual void ConfigWrite(uint32_t offset, absl::Span<const uint8_t> data) = 0;
  // Guest accesses inside BAR `bar`, `offset` relative to its start. The bus
  // has already checked that the BAR decodes and contains the access.
  virtual void BarRead(int bar, uint64_t offset, absl::Span<uint8_t> data) = 0;
  virtual void BarWrite(int bar, uint64_t offset,
                        absl::Span<const uint8_t> data) = 0;
};

class GenericPciFunction : public PciFunction {
 public:
  explicit GenericPciFunction(const ConfigSpace::Options& options);
  GenericPciFunction(const GenericPciFunction&) = delete;
  GenericPciFunction& operator=(const GenericPciFunction&) = delete;

  ConfigSpace& config_space() override { return config_; }
  const ConfigSpace& config_space() const { return config_; }
  void ConfigRead(uint32_t offset, absl::Span<uint8_t> data) override;
  // Applies the write, then re-drives INTx if INTx Disable changed.
  void ConfigWrite(uint32_t offset, absl::Span<const uint8_t> data) override;
  void BarRead(int bar, uint64_t offset, absl::Span<uint8_t> data) override;
  void BarWrite(int bar, uint64_t offset,
                absl::Span<const uint8_t> data) override;

  absl::Status AddBar(int index, const BarSpec& spec) {
    return config_.AddBar(index, spec);
  }
  // Serves [offset, offset + size) of BAR `bar` with `handler` (not owned).
  // kInvalidArgument if the BAR does not exist, the range is empty or leaves
  // the BAR; kAlreadyExists if it overlaps another region.
  absl::Status AddRegion(int bar, uint64_t offset, uint64_t size,
                         RegionHandler* handler);
  // Adds MSI-X (see MsixController::Create) and regions for its table and
  // PBA. kAlreadyExists if the function has MSI-X already.
  absl::StatusOr<MsixController*> AddMsix(
      const MsixController::Options& options, MsiSink* sink);
  // Null until AddMsix succeeded.
  MsixController* msix() { return msix_.get(); }
  const MsixController* msix() const { return msix_.get(); }

  void set_intx_sink(IntxSink* sink) { intx_sink_ = sink; }
  // The device's interrupt condition (level-triggered).
  void SetIntxLevel(bool level);
  bool intx_level() const { return intx_level_; }
  // What the pin shows: the level unless INTx Disable is set.
  bool intx_asserted() const { return intx_pin_; }

 private:
  struct Region {
    int bar;
    uint64_t offset;
    uint64_t size;
    RegionHandler* handler;
  };
  class MsixTable;
  class MsixPba;

  RegionHandler* FindRegion(int bar, uint64_t offset, uint64_t length,
                            uint64_t* region_offset) const;
  void UpdateIntxPin();

  ConfigSpace config_;
  std::vector<Region> regions_;
  std::unique_ptr<MsixController> msix_;
  std::unique_ptr<RegionHandler> msix_table_;
  std::unique_ptr<RegionHandler> msix_pba_;
  IntxSink* intx_sink_ = nullptr;
  bool intx_level_ = false;
  bool intx_pin_ = false;
};

}  // namespace vmmkit::pci

#endif  // VMMKIT_PCI_FUNCTION_H_
