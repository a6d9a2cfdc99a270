// pci/root_bus.h: PCI bus 0 behind a host bridge, as x86 firmware sets it up.
//
// RootBus holds up to 32 devices (8 functions each) on bus 0, with its own
// host bridge at 00:00.0, and decodes the guest's accesses to them:
// - configuration mechanism #1: the address register at 0xCF8 (dword
//   accesses only) and the data window 0xCFC-0xCFF (byte, word and dword
//   accesses, each reaching the bytes under it);
// - an ECAM window (PCI Express 3.0 §7.2.2: offset = bus << 20 | device << 15
//   | function << 12 | register), bus 0 only;
// - I/O and memory BARs at the addresses the guest (or AssignBars, standing in
//   for firmware) programmed, honouring the command register's enables. A BAR
//   decodes while its space is enabled, its address is not 0 (unassigned)
//   and its range does not wrap; an access must lie wholly inside one BAR.
//   The decoding is cached and rebuilt when a function's
//   ConfigSpace::decode_generation() moves, so owner-side changes (a device
//   setting its own command bits) are seen as well as guest writes.
//
//   RootBus bus;                              // default windows, see Options
//   VMMKIT_ASSIGN_OR_RETURN(PciAddress at, bus.AddDevice(&my_function));
//   VMMKIT_RETURN_IF_ERROR(bus.AssignBars());
//   // From the VMM's exit handlers:
//   if (!bus.PioWrite(port, data)) other_devices.PioWrite(port, data);
//   if (!bus.MmioRead(gpa, data)) ...;
//
// Pio*/Mmio* return whether the bus claimed the access. An unclaimed read
// still fills `data` with all-ones, an unclaimed write is dropped. Reads of
// absent devices or functions, of registers past a function's configuration
// space, of other buses, and of 0xCFC-0xCFF while the address register's
// enable bit (31) is clear, read all-ones and are claimed. Byte and word
// accesses to 0xCF8-0xCFB are *not* claimed: chipsets put other registers
// there (0xCF9 is the reset control register), so the VMM may serve them.
//
// The host bridge: vendor 0x1b36 (Red Hat, Inc.), device 0x0008, the id QEMU
// gives its generic PCIe host bridge; class 0x060000 (host bridge), no BARs.
// A generic emulated bridge, chosen over a real Intel chipset id (QEMU's
// i440fx is 0x8086:0x1237, q35 0x8086:0x29c0) because guest kernels attach
// chipset quirks to those, for registers this bus does not model.
//
// Thread-compatibility: one thread at a time (the VMM serialises accesses,
// for example with a lock around the bus), const methods included: FindBar
// refreshes the decoding cache. Functions are not owned and must
// outlive the bus.
#ifndef VMMKIT_PCI_ROOT_BUS_H_
#define VMMKIT_PCI_ROOT_BUS_H_

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "pci/config_space.h"
#include "pci/function.h"

namespace vmmkit::pci {

inline constexpr uint16_t kConfigAddressPort = 0xcf8;
inline constexpr uint16_t kConfigDataPort = 0xcfc;
// Configuration address register (mechanism #1): enable, bus, device,
// function, dword-aligned register. Bits 30:24 and 1:0 read zero.
inline constexpr uint32_t kConfigAddressEnable = 1u << 31;
inline constexpr uint32_t kConfigAddressMask = 0x80fffffc;

inline constexpr int kDevicesPerBus = 32;
inline constexpr int kFunctionsPerDevice = 8;
inline constexpr uint64_t kEcamBytesPerBus = 1 << 20;

inline constexpr uint16_t kHostBridgeVendorId = 0x1b36;
inline constexpr uint16_t kHostBridgeDeviceId = 0x0008;
inline constexpr uint32_t kClassHostBridge = 0x060000;

struct PciAddress {
  uint8_t bus = 0;
  uint8_t device = 0;    // 0..31
  uint8_t function = 0;  // 0..7
  friend bool operator==(const PciAddress&, const PciAddress&) = default;
};

class RootBus {
 public:
  struct Window {
    uint64_t base = 0;
    uint64_t size = 0;
  };
  struct Options {
    // Where AssignBars puts I/O BARs, 32-bit memory BARs, and 64-bit memory
    // BARs (these go below 4 GiB if the 64-bit window is empty). The defaults
    // follow QEMU's q35 layout; a VMM passes its own memory map.
    Window io = {0xc000, 0x4000};
    Window mmio32 = {0xc0000000, 0x20000000};
    Window mmio64 = {uint64_t{1} << 39, uint64_t{1} << 38};
    // The ECAM window covers bus 0 only (1 MiB); 0 disables it.
    uint64_t ecam_base = 0xb0000000;
  };

  // Called after a guest configuration write moved, enabled or disabled BAR
  // `bar` of the function at `address` (for the VMM's ioeventfds and memory
  // slots).
  using BarChanged = std::function<void(PciAddress address, int bar)>;

  RootBus() : RootBus(Options()) {}
  explicit RootBus(const Options& options);
  RootBus(const RootBus&) = delete;
  RootBus& operator=(const RootBus&) = delete;

  // Puts `function` at `address`: bus 0, device 1..31, function 0..7.
  // kInvalidArgument for a bad address or null function, kAlreadyExists if
  // taken. Keeps the multi-function bit of the device's function 0 in step.
  absl::Status AddFunction(PciAddress address, PciFunction* function);
  // Puts `function` at function 0 of the lowest free device number.
  // kResourceExhausted if all 31 are taken.
  absl::StatusOr<PciAddress> AddDevice(PciFunction* function);
  // The function at `address`, or null. 00:00.0 is the host bridge.
  PciFunction* function(PciAddress address) const;

  // Firmware-style BAR assignment: every BAR of every function gets an
  // address in its window, naturally aligned to its size (largest first, so
  // that alignment wastes nothing). With `enable_decoding`, each function's
  // command register gets I/O and memory decoding for the BAR types it has,
  // as SeaBIOS does. kResourceExhausted if a window is too small.
  absl::Status AssignBars(bool enable_decoding = true);

  // Guest accesses; see the header comment for what is claimed.
  bool PioRead(uint64_t port, absl::Span<uint8_t> data);
  bool PioWrite(uint64_t port, absl::Span<const uint8_t> data);
  bool MmioRead(uint64_t address, absl::Span<uint8_t> data);
  bool MmioWrite(uint64_t address, absl::Span<const uint8_t> data);

  // Configuration access by address, as both mechanisms reach it.
  void ConfigRead(PciAddress address, uint32_t reg, absl::Span<uint8_t> data);
  void ConfigWrite(PciAddress address, uint32_t reg,
                   absl::Span<const uint8_t> data);

  // Which function, BAR and offset decode [address, address + length) in I/O
  // (is_io) or memory space right now; the access must lie wholly in the BAR.
  struct BarTarget {
    PciAddress address;
    PciFunction* function = nullptr;
    int bar = 0;
    uint64_t offset = 0;
  };
  std::optional<BarTarget> FindBar(bool is_io, uint64_t address,
                                   uint64_t length) const;

  void set_bar_changed(BarChanged callback) {
    bar_changed_ = std::move(callback);
  }
  uint32_t config_address() const { return config_address_; }
  const Options& options() const { return options_; }

 private:
  static int Index(PciAddress a) {
    return a.device * kFunctionsPerDevice + a.function;
  }
  // Decoded (enabled) BAR addresses of `function`, or nullopt per BAR.
  using BarMap = std::array<std::optional<uint64_t>, kNumBars>;
  static BarMap MapBars(ConfigSpace& config);

  Options options_;
  std::unique_ptr<GenericPciFunction> host_bridge_;
  std::array<PciFunction*, kDevicesPerBus * kFunctionsPerDevice> functions_{};
  std::vector<int> present_;  // indices of non-null functions_, ascending

  // The decoding BARs of all functions, rebuilt when a function's
  // decode_generation() moved (or a function was added).
  struct Decoder {
    uint64_t base;
    uint64_t size;
    int index;  // into functions_
    int bar;
    bool io;
  };
  void RefreshDecoders() const;
  mutable std::vector<Decoder> decoders_;
  mutable std::vector<uint64_t> decoder_generations_;  // parallel to present_
  mutable bool decoders_valid_ = false;
  uint32_t config_address_ = 0;
  BarChanged bar_changed_;
};

}  // namespace vmmkit::pci

#endif  // VMMKIT_PCI_ROOT_BUS_H_
