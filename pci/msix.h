// pci/msix.h: MSI-X for a PCI function: capability, vector table and PBA.
//
// An MsixController adds the MSI-X capability to a ConfigSpace and serves the
// vector table and the pending bit array (PBA), which live in one or two of
// the function's memory BARs. Its owner (GenericPciFunction does this) routes
// BAR accesses at the table and PBA to TableRead/TableWrite and PbaRead/
// PbaWrite, and the device raises vectors with Raise().
//
//   VMMKIT_RETURN_IF_ERROR(cfg.AddBar(1, {.type = BarType::kMemory32,
//                                         .size = 0x1000}));
//   VMMKIT_ASSIGN_OR_RETURN(
//       std::unique_ptr<MsixController> msix,
//       MsixController::Create(cfg, {.num_vectors = 3, .table_bar = 1,
//                                    .table_offset = 0, .pba_bar = 1,
//                                    .pba_offset = 0x800}, &sink));
//   if (msix->enabled()) VMMKIT_RETURN_IF_ERROR(msix->Raise(queue_vector));
//
// Semantics (PCI Local Bus 3.0 §6.8.2):
// - Message Control: table size (N - 1, read-only), Function Mask (bit 14)
//   and MSI-X Enable (bit 15) are writable.
// - Each table entry is 16 bytes: message address low/high, message data,
//   vector control (bit 0: mask; "after reset, the state of the Mask bit must
//   be 1 (vector masked)"). The reserved vector-control bits read zero.
// - "For all accesses to MSI-X Table and MSI-X PBA fields, software must use
//   aligned full DWORD or aligned full QWORD transactions; otherwise, the
//   result is undefined." Here other accesses read all-ones and write nothing.
// - The PBA is read-only. A vector raised while masked (its own mask bit or
//   the Function Mask) sets its pending bit; "if a masked vector has its
//   Pending bit set, and ... is unmasked, the function must schedule sending
//   the associated message, and clear the Pending bit": delivery happens at
//   the write that unmasks it (the vector's mask, Function Mask, or Enable).
// - While MSI-X Enable is clear the function must not send MSI-X messages:
//   Raise() fails with kFailedPrecondition (use INTx instead) and records
//   nothing.
//
// The VMM learns each vector's message through message(v) and is told when an
// entry or the control bits change (SetObserver), so it can update its
// interrupt routes (KVM GSI routing, irqfds).
//
// Thread-compatibility: one thread at a time, serialised with the accesses to
// the ConfigSpace it lives in. The sink is called on the caller's thread.
#ifndef VMMKIT_PCI_MSIX_H_
#define VMMKIT_PCI_MSIX_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "pci/config_space.h"

namespace vmmkit::pci {

// The MSI-X capability as it sits in configuration space (little-endian).
struct MsixCapability {
  uint8_t cap_id;  // kCapIdMsix
  uint8_t next;
  uint16_t message_control;
  uint32_t table;  // offset (QWORD aligned) | BIR (bits 2:0)
  uint32_t pba;    // offset (QWORD aligned) | BIR (bits 2:0)
};
static_assert(sizeof(MsixCapability) == 12);
static_assert(offsetof(MsixCapability, message_control) == 2);
static_assert(offsetof(MsixCapability, table) == 4);
static_assert(offsetof(MsixCapability, pba) == 8);

inline constexpr uint16_t kMsixTableSizeMask = 0x07ff;  // N - 1
inline constexpr uint16_t kMsixFunctionMask = 1 << 14;
inline constexpr uint16_t kMsixEnable = 1 << 15;
inline constexpr uint32_t kMsixBirMask = 0x7;
inline constexpr uint16_t kMsixMaxVectors = 2048;

// One vector table entry (little-endian).
struct MsixTableEntry {
  uint32_t address_lo;
  uint32_t address_hi;
  uint32_t data;
  uint32_t vector_control;
};
static_assert(sizeof(MsixTableEntry) == 16);
static_assert(offsetof(MsixTableEntry, address_hi) == 4);
static_assert(offsetof(MsixTableEntry, data) == 8);
static_assert(offsetof(MsixTableEntry, vector_control) == 12);
inline constexpr uint32_t kMsixVectorMasked = 1 << 0;

// Where MSI messages go: the VMM writes them to the interrupt controller
// (KVM_SIGNAL_MSI, or an irqfd it routed from the same address/data).
class MsiSink {
 public:
  virtual ~MsiSink() = default;
  virtual void SendMsi(uint64_t address, uint32_t data) = 0;
};

struct MsiMessage {
  uint64_t address = 0;
  uint32_t data = 0;
  bool masked = true;  // the vector's own mask bit
  friend bool operator==(const MsiMessage&, const MsiMessage&) = default;
};

class MsixController {
 public:
  struct Options {
    uint16_t num_vectors = 1;  // 1..2048
    int table_bar = 0;
    uint32_t table_offset = 0;  // 8-byte aligned
    int pba_bar = 0;
    uint32_t pba_offset = 0;  // 8-byte aligned
    // Where the capability goes (see ConfigSpace::CapabilityOptions::offset).
    uint32_t capability_offset = 0;
  };

  // Called after a table write changed vector `vector`'s message or mask.
  using VectorChanged = std::function<void(uint16_t vector)>;
  // Called after a config write changed MSI-X Enable or Function Mask.
  using ControlChanged =
      std::function<void(bool enabled, bool function_masked)>;

  // Adds the capability to `config`. The table and PBA must lie inside
  // memory BARs already added to `config`, QWORD aligned and not overlapping
  // (kInvalidArgument otherwise); `sink` must outlive the controller, and so
  // must `config` (its hooks point here).
  static absl::StatusOr<std::unique_ptr<MsixController>> Create(
      ConfigSpace& config, const Options& options, MsiSink* sink);
  MsixController(const MsixController&) = delete;
  MsixController& operator=(const MsixController&) = delete;

  uint16_t num_vectors() const {
    return static_cast<uint16_t>(entries_.size());
  }
  uint32_t capability_offset() const { return cap_offset_; }
  const Options& options() const { return options_; }
  uint32_t table_size() const { return 16 * num_vectors(); }
  uint32_t pba_size() const { return 8 * ((num_vectors() + 63) / 64); }

  bool enabled() const;
  bool function_masked() const;
  // The vector's current entry; an out-of-range vector reads as a masked,
  // zero message.
  MsiMessage message(uint16_t vector) const;
  bool pending(uint16_t vector) const;

  // Signals `vector`: sends its message now, or sets its pending bit if it or
  // the function is masked. kOutOfRange for a vector >= num_vectors(),
  // kFailedPrecondition while MSI-X is disabled.
  absl::Status Raise(uint16_t vector);
  // Clears a pending bit whose cause went away. kOutOfRange as above.
  absl::Status ClearPending(uint16_t vector);

  // BAR accesses, offsets relative to the table / PBA start.
  void TableRead(uint64_t offset, absl::Span<uint8_t> data) const;
  void TableWrite(uint64_t offset, absl::Span<const uint8_t> data);
  void PbaRead(uint64_t offset, absl::Span<uint8_t> data) const;
  void PbaWrite(uint64_t offset, absl::Span<const uint8_t> data);

  void SetObserver(VectorChanged on_vector, ControlChanged on_control);

  // Back to the reset state: every vector masked with a zero message, no
  // pending bits, Enable and Function Mask clear.
  void Reset();

 private:
  MsixController(ConfigSpace& config, const Options& options, MsiSink* sink);
  void OnConfigWrite();
  // Sends every pending vector that is no longer masked.
  void DeliverUnmasked();
  void Send(uint16_t vector);

  ConfigSpace& config_;
  const Options options_;
  MsiSink* const sink_;
  uint32_t cap_offset_ = 0;
  std::vector<MsixTableEntry> entries_;  // host-endian values
  std::vector<uint64_t> pending_;
  bool last_enabled_ = false;
  bool last_function_masked_ = false;
  VectorChanged on_vector_;
  ControlChanged on_control_;
};

}  // namespace vmmkit::pci

#endif  // VMMKIT_PCI_MSIX_H_
