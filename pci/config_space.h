// pci/config_space.h: a PCI function's configuration space (type-0 header).
//
// ConfigSpace holds the bytes of a type-0 configuration space (256 bytes, or
// 4 KiB for a PCI Express function) together with two per-byte masks that say
// what a guest write may do to each bit: a writable bit takes the written
// value, a write-1-to-clear (W1C) bit is cleared by writing 1, every other bit
// is read-only. On top of that it builds the header (ids, command, status,
// interrupt pin/line), the six base address registers with their sizing
// protocol, and the capability list.
//
//   ConfigSpace cfg({.vendor_id = 0x1af4, .device_id = 0x1041,
//                    .class_code = 0x020000, .interrupt_pin = 1});
//   VMMKIT_RETURN_IF_ERROR(cfg.AddBar(0, {.type = BarType::kIo, .size = 64}));
//   VMMKIT_RETURN_IF_ERROR(cfg.AddBar(
//       4, {.type = BarType::kMemory64, .size = 0x4000, .prefetchable =
//       true}));
//   VMMKIT_ASSIGN_OR_RETURN(uint16_t cap, cfg.AddCapability(0x09, body));
//   cfg.Write(0x04, bytes);                 // a guest access, masks applied
//   if (cfg.memory_enabled()) base = cfg.BarAddress(4);
//
// Guest accesses (Read/Write) have a width of 1, 2 or 4 bytes at any offset
// whose whole access lies inside the space. Anything else (another width, an
// access crossing the end) reads all-ones and writes nothing. The owner of the
// space (the device model) uses Get*/Set*, which ignore the masks and hooks.
//
// BAR sizing falls out of the masks: the address bits below a BAR's size are
// read-only zero, the type bits read-only, so writing all-ones (at any width,
// in any number of pieces) and reading back yields ~(size - 1) | type bits
// (PCI Local Bus 3.0 §6.2.5.1: "software saves the original value of the Base
// Address register, writes 0FFFFFFFFh to the register, then reads it back.
// Size calculation can be done from the 32-bit value read by first clearing
// encoding information bits ... inverting all 32 bits, then incrementing by
// 1").
//
// Byte order: configuration space is little-endian; Get16/Get32/Set16/Set32
// convert.
//
// Thread-compatibility: a ConfigSpace is used by one thread at a time (the
// caller serialises guest accesses and owner updates). It is neither copyable
// nor movable, so that capability hooks may capture their owner's `this`.
#ifndef VMMKIT_PCI_CONFIG_SPACE_H_
#define VMMKIT_PCI_CONFIG_SPACE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace vmmkit::pci {

inline constexpr uint32_t kConfigSpaceSize = 256;
inline constexpr uint32_t kExtendedConfigSpaceSize = 4096;
inline constexpr int kNumBars = 6;
// Standard capabilities live after the type-0 header (PCI 3.0 §6.7: "the
// Capabilities Pointer ... must be DWORD aligned ... the bottom two bits ...
// reserved", and the header occupies the first 64 bytes).
inline constexpr uint32_t kCapabilityStart = 0x40;

// Type-0 header register offsets (PCI Local Bus 3.0 §6.1, figure 6-1).
inline constexpr uint32_t kRegVendorId = 0x00;
inline constexpr uint32_t kRegDeviceId = 0x02;
inline constexpr uint32_t kRegCommand = 0x04;
inline constexpr uint32_t kRegStatus = 0x06;
inline constexpr uint32_t kRegRevisionId = 0x08;
inline constexpr uint32_t kRegClassCode = 0x09;  // 3 bytes: prog-if, sub, base
inline constexpr uint32_t kRegCacheLineSize = 0x0c;
inline constexpr uint32_t kRegLatencyTimer = 0x0d;
inline constexpr uint32_t kRegHeaderType = 0x0e;
inline constexpr uint32_t kRegBist = 0x0f;
inline constexpr uint32_t kRegBar0 = 0x10;
inline constexpr uint32_t kRegCardbusCis = 0x28;
inline constexpr uint32_t kRegSubsystemVendorId = 0x2c;
inline constexpr uint32_t kRegSubsystemId = 0x2e;
inline constexpr uint32_t kRegExpansionRom = 0x30;
inline constexpr uint32_t kRegCapabilitiesPointer = 0x34;
inline constexpr uint32_t kRegInterruptLine = 0x3c;
inline constexpr uint32_t kRegInterruptPin = 0x3d;
inline constexpr uint32_t kRegMinGnt = 0x3e;
inline constexpr uint32_t kRegMaxLat = 0x3f;

// The same layout as a struct, to check the offsets above against it.
// Little-endian on the wire; never accessed through this struct.
struct Type0Header {
  uint16_t vendor_id;
  uint16_t device_id;
  uint16_t command;
  uint16_t status;
  uint8_t revision_id;
  uint8_t class_code[3];
  uint8_t cache_line_size;
  uint8_t latency_timer;
  uint8_t header_type;
  uint8_t bist;
  uint32_t bar[kNumBars];
  uint32_t cardbus_cis;
  uint16_t subsystem_vendor_id;
  uint16_t subsystem_id;
  uint32_t expansion_rom;
  uint8_t capabilities_pointer;
  uint8_t reserved[7];
  uint8_t interrupt_line;
  uint8_t interrupt_pin;
  uint8_t min_gnt;
  uint8_t max_lat;
};
static_assert(sizeof(Type0Header) == kCapabilityStart);
static_assert(offsetof(Type0Header, command) == kRegCommand);
static_assert(offsetof(Type0Header, status) == kRegStatus);
static_assert(offsetof(Type0Header, revision_id) == kRegRevisionId);
static_assert(offsetof(Type0Header, class_code) == kRegClassCode);
static_assert(offsetof(Type0Header, header_type) == kRegHeaderType);
static_assert(offsetof(Type0Header, bar) == kRegBar0);
static_assert(offsetof(Type0Header, cardbus_cis) == kRegCardbusCis);
static_assert(offsetof(Type0Header, subsystem_vendor_id) ==
              kRegSubsystemVendorId);
static_assert(offsetof(Type0Header, subsystem_id) == kRegSubsystemId);
static_assert(offsetof(Type0Header, expansion_rom) == kRegExpansionRom);
static_assert(offsetof(Type0Header, capabilities_pointer) ==
              kRegCapabilitiesPointer);
static_assert(offsetof(Type0Header, interrupt_line) == kRegInterruptLine);
static_assert(offsetof(Type0Header, interrupt_pin) == kRegInterruptPin);
static_assert(offsetof(Type0Header, max_lat) == kRegMaxLat);

// Command register bits (§6.2.2).
inline constexpr uint16_t kCommandIo = 1 << 0;
inline constexpr uint16_t kCommandMemory = 1 << 1;
inline constexpr uint16_t kCommandBusMaster = 1 << 2;
inline constexpr uint16_t kCommandParityErrorResponse = 1 << 6;
inline constexpr uint16_t kCommandSerr = 1 << 8;
inline constexpr uint16_t kCommandIntxDisable = 1 << 10;
// The command bits a guest may change; the rest are read-only zero.
inline constexpr uint16_t kCommandWritable =
    kCommandIo | kCommandMemory | kCommandBusMaster |
    kCommandParityErrorResponse | kCommandSerr | kCommandIntxDisable;

// Status register bits (§6.2.3).
inline constexpr uint16_t kStatusInterrupt = 1 << 3;
inline constexpr uint16_t kStatusCapabilityList = 1 << 4;
// The error bits, all write-1-to-clear: master data parity error, signaled
// and received target abort, received master abort, signaled system error,
// detected parity error.
inline constexpr uint16_t kStatusW1c =
    (1 << 8) | (1 << 11) | (1 << 12) | (1 << 13) | (1 << 14) | (1 << 15);

// Header type register: bit 7 says the device has more than one function.
inline constexpr uint8_t kHeaderTypeMultiFunction = 0x80;

// Base address register encoding (§6.2.5.1).
inline constexpr uint32_t kBarIoSpace = 1 << 0;
inline constexpr uint32_t kBarMemType64 = 2 << 1;
inline constexpr uint32_t kBarPrefetchable = 1 << 3;
inline constexpr uint32_t kBarIoAddressMask = ~uint32_t{0x3};
inline constexpr uint32_t kBarMemAddressMask = ~uint32_t{0xf};

// Capability ids used in this package (PCI Code and ID Assignment §2).
inline constexpr uint8_t kCapIdMsi = 0x05;
inline constexpr uint8_t kCapIdVendor = 0x09;
inline constexpr uint8_t kCapIdPciExpress = 0x10;
inline constexpr uint8_t kCapIdMsix = 0x11;

enum class BarType : uint8_t {
  kNone,      // unimplemented: reads zero, ignores writes
  kIo,        // I/O space, 32-bit register
  kMemory32,  // memory space anywhere below 4 GiB
  kMemory64,  // memory space anywhere; takes this BAR and the next one
};

struct BarSpec {
  BarType type = BarType::kNone;
  // A power of two: at least 4 for I/O, at least 16 for memory; at most 2 GiB
  // for 32-bit memory and 64 KiB for I/O.
  uint64_t size = 0;
  bool prefetchable = false;  // memory BARs only
};

class ConfigSpace {
 public:
  struct Options {
    uint16_t vendor_id = 0xffff;
    uint16_t device_id = 0xffff;
    uint8_t revision_id = 0;
    // Base class << 16 | sub-class << 8 | programming interface.
    uint32_t class_code = 0;
    uint16_t subsystem_vendor_id = 0;
    uint16_t subsystem_id = 0;
    // 0: no INTx; 1..4: INTA#..INTD#.
    uint8_t interrupt_pin = 0;
    bool multi_function = false;
    // 4 KiB (PCI Express extended configuration space) instead of 256 bytes.
    // Bytes 0x100.. read zero unless the owner puts something there.
    bool extended = false;
  };

  // Called before a guest read of [offset, offset + length) of a capability
  // (offset relative to the capability's first byte, its id), so the owner can
  // refresh the bytes with Set*. Only the part of the access that overlaps the
  // capability is reported.
  using ReadHook = std::function<void(uint32_t offset, uint32_t length)>;
  // Called after a guest write to a capability was applied through the masks,
  // with the overlapping part of the written bytes as the guest gave them.
  using WriteHook =
      std::function<void(uint32_t offset, absl::Span<const uint8_t> data)>;

  struct CapabilityOptions {
    // Where to put the capability: 0 places it at the next free dword-aligned
    // offset after the last capability (at least 0x40); otherwise a
    // dword-aligned offset >= 0x40 that does not overlap another capability.
    uint32_t offset = 0;
    // One mask byte per body byte (empty: the body is read-only). The id and
    // next bytes are always read-only.
    std::vector<uint8_t> writable;
    std::vector<uint8_t> write_1_to_clear;
    ReadHook on_read;
    WriteHook on_write;
  };

  explicit ConfigSpace(const Options& options);
  ConfigSpace(const ConfigSpace&) = delete;
  ConfigSpace& operator=(const ConfigSpace&) = delete;

  uint32_t size() const { return static_cast<uint32_t>(bytes_.size()); }

  // A guest access: width 1, 2 or 4, wholly inside the space, else all-ones
  // (read) or nothing (write). Capability hooks run for the bytes they own.
  void Read(uint32_t offset, absl::Span<uint8_t> data);
  void Write(uint32_t offset, absl::Span<const uint8_t> data);

  // The owner's access: no masks, no hooks. Out-of-range offsets read
  // all-ones and are not written (asserted in debug builds: an owner bug).
  uint8_t Get8(uint32_t offset) const;
  uint16_t Get16(uint32_t offset) const;
  uint32_t Get32(uint32_t offset) const;
  void Set8(uint32_t offset, uint8_t value);
  void Set16(uint32_t offset, uint16_t value);
  void Set32(uint32_t offset, uint32_t value);
  // Sets the writable and W1C masks of [offset, offset + size of the masks).
  // `w1c` may be empty (no W1C bits) or as long as `writable`.
  absl::Status SetMasks(uint32_t offset, absl::Span<const uint8_t> writable,
                        absl::Span<const uint8_t> w1c = {});

  // Command and status.
  uint16_t command() const { return Get16(kRegCommand); }
  bool io_enabled() const { return command() & kCommandIo; }
  bool memory_enabled() const { return command() & kCommandMemory; }
  bool bus_master_enabled() const { return command() & kCommandBusMaster; }
  bool intx_disabled() const { return command() & kCommandIntxDisable; }
  uint16_t status() const { return Get16(kRegStatus); }
  // The status register's Interrupt Status bit (the function's INTx state,
  // whether or not INTx Disable masks it from the pin).
  void SetInterruptStatus(bool pending);
  void SetMultiFunction(bool multi_function);

  // BARs. AddBar fails with kInvalidArgument for a bad index, type or size,
  // kAlreadyExists if the BAR (or the upper half of a 64-bit pair) is taken.
  absl::Status AddBar(int index, const BarSpec& spec);
  // The BAR's spec; type kNone for an unused BAR, the upper half of a 64-bit
  // pair, or an index outside 0..5.
  const BarSpec& bar(int index) const;
  // The address the guest (or AssignBar) programmed, type bits removed; 0 for
  // an unused BAR.
  uint64_t BarAddress(int index) const;
  // Programs the BAR's address as firmware would. kInvalidArgument unless
  // `address` is aligned to the BAR's size and fits its type.
  absl::Status SetBarAddress(int index, uint64_t address);
  // True if the BAR exists and the command register enables its space.
  bool BarDecodingEnabled(int index) const;
  // Changes whenever something that decides what the function decodes
  // changes (a BAR added, a BAR register or the command register's enables
  // written, by the guest or by the owner), so a bus may cache its decoding.
  uint64_t decode_generation() const { return decode_generation_; }

  // Adds a capability: id, next pointer (maintained here) and `body`. Returns
  // its offset. kInvalidArgument for a bad offset or mask size,
  // kResourceExhausted if it does not fit below 0x100, kAlreadyExists if it
  // overlaps another capability. Sets the status register's capability bit.
  absl::StatusOr<uint32_t> AddCapability(uint8_t id,
                                         absl::Span<const uint8_t> body,
                                         CapabilityOptions options);
  absl::StatusOr<uint32_t> AddCapability(uint8_t id,
                                         absl::Span<const uint8_t> body) {
    return AddCapability(id, body, CapabilityOptions());
  }
  // The offset of the first capability with this id, if any.
  std::optional<uint32_t> FindCapability(uint8_t id) const;

  // Adds a PCI Express extended capability (4-byte header: id, version,
  // 12-bit next offset; then `body`) to a 4 KiB space. The list starts at
  // 0x100, so the first one goes there; later ones at a chosen or the next
  // free dword-aligned offset. kFailedPrecondition for a 256-byte space,
  // kInvalidArgument for a bad offset, version (> 15) or mask size,
  // kResourceExhausted if it does not fit, kAlreadyExists on overlap. Masks
  // and hooks cover the body as for AddCapability, offsets in hooks relative
  // to the header.
  absl::StatusOr<uint32_t> AddExtendedCapability(uint16_t id, uint8_t version,
                                                 absl::Span<const uint8_t> body,
                                                 CapabilityOptions options);
  absl::StatusOr<uint32_t> AddExtendedCapability(
      uint16_t id, uint8_t version, absl::Span<const uint8_t> body) {
    return AddExtendedCapability(id, version, body, CapabilityOptions());
  }
  std::optional<uint32_t> FindExtendedCapability(uint16_t id) const;

 private:
  struct Capability {
    uint32_t offset;
    uint32_t length;  // header and body
    bool extended;    // in the PCI Express extended list
    ReadHook on_read;
    WriteHook on_write;
  };

  std::vector<uint8_t> bytes_;
  std::vector<uint8_t> writable_;
  std::vector<uint8_t> w1c_;
  BarSpec bars_[kNumBars];
  bool upper_half_[kNumBars] = {};
  std::vector<Capability> capabilities_;  // in list order
  bool has_hooks_ = false;
  uint64_t decode_generation_ = 0;
};

}  // namespace vmmkit::pci

#endif  // VMMKIT_PCI_CONFIG_SPACE_H_
