// vmm/vm.h: a KVM virtual machine with virtio-pci devices, as the gRPC layer
// (and the vmm-run CLI) drives it.
//
//   VMMKIT_ASSIGN_OR_RETURN(std::unique_ptr<Vm> vm,
//                           Vm::Create({.vcpus = 2, .memory_mib = 256,
//                                       .kernel = "guest.elf",
//                                       .cmdline = "mode=modern"}));
//   VMMKIT_RETURN_IF_ERROR(vm->AddDevice(
//       {.id = "disk0", .type = virtio::DeviceType::kBlock,
//        .transport = Transport::kPciModern,
//        .params = BlkParams{.path = "/tmp/disk.img"}}));
//   VMMKIT_RETURN_IF_ERROR(vm->Start());
//   VMMKIT_RETURN_IF_ERROR(vm->WaitStopped(absl::Seconds(30)));
//   std::optional<int> code = vm->exit_code();
//
// The guest: a static ELF64 test guest (entered in 64-bit long mode, see
// vmm/boot.h) or a Linux bzImage (Linux x86 boot protocol, with an initrd and
// a command line). The platform (vmm/platform.h): an 8250 UART at 0x3f8 on
// IRQ 4 whose output is kept (ConsoleOutput) and streamed (SubscribeConsole);
// port 0x501 ends the run with the written value as exit code (QEMU's
// isa-debug-exit without its transformation); port 0x502 reads 1 once Stop()
// asked the guest to shut down; the i8042 CPU reset (0xFE to port 0x64), a
// 0xCF9 reset (the FADT's reset register) and ACPI S5 (SLP_EN with SLP_TYP 5
// in PM1a_CNT, what Linux's poweroff does) each power the VM off (a reset is
// a power-off here: exit code 0). ACPI tables (vmm/acpi.h) at 0xE0000 and an
// MP table (vmm/mptable.h) at 0xF0000 describe the same CPUs, IOAPIC and
// INTx routing: kernels without an MP-table parser (Debian's cloud kernel)
// need the former. PCI bus 0
// through 0xCF8/0xCFC with a host bridge at 00:00.0 and the virtio functions
// from 00:01.0 in AddDevice order; BARs assigned as firmware would (memory
// in [0xC0000000, 0xE0000000), 64-bit BARs too; I/O from 0xC000) with
// decoding on; INTA# of slot s is IOAPIC input 16 + s % 8 (level, written to
// the Interrupt Line register, listed in the MP table and the DSDT's _PRT);
// MSI-X messages go
// through irqfds and KVM GSI routes. vCPU 0 starts at the entry point, the
// others wait for INIT/SIPI as on hardware (for ELF guests too). Ports
// nothing emulates read all-ones (vmm/platform.h lists the ones answered).
//
// Stopping a Linux guest: Stop() cannot ask Linux to power off (the ACPI
// tables describe no power button, and a button would need a guest daemon);
// it sets port 0x502 (which only test guests read), waits graceful_timeout
// for the guest to end by itself, then stops the vCPUs. Either way the disks
// are flushed and every thread is joined before Stop() returns.
//
// Thread-safety: thread-safe. Every method may be called from any thread
// (the gRPC server calls them concurrently). Console callbacks run on a VMM
// thread (a vCPU thread) and must not block or call back into the Vm.
#ifndef VMMKIT_VMM_VM_H_
#define VMMKIT_VMM_VM_H_

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "virtio-device/virtio_device.h"

namespace vmmkit::vmm {

// The virtio-pci flavour of a device (pci/virtio_pci.h). kPciLegacyViaAdmin
// ("pci-legacy-via-admin"): the device is a modern-only SR-IOV member whose
// legacy interface its group owner gives through administration commands;
// the guest sees a transitional function (pci/legacy_shim.h, wired by
// vmm/admin_legacy.h) that a legacy or a modern driver can drive.
enum class Transport {
  kPciModern,
  kPciTransitional,
  kPciLegacy,
  kPciLegacyViaAdmin
};
const char* TransportName(Transport transport);

struct BlkParams {
  std::string path;  // a raw image file or a block device
  bool read_only = false;
};
struct NetParams {
  // A TAP interface name (TapBackend, needs CAP_NET_ADMIN); empty: an
  // in-process echo backend that sends every frame the guest transmits
  // straight back to it.
  std::string tap;
  // Absent: a random locally administered address.
  std::optional<std::array<uint8_t, 6>> mac;
};
struct ConsoleParams {
  // A file the virtio-console's output is appended to; empty: the output is
  // kept by the Vm (VirtioConsoleOutput) and input can be written with
  // WriteVirtioConsoleInput.
  std::string output_path;
};
struct RngParams {};

struct DeviceConfig {
  std::string id;  // unique in the VM, non-empty
  virtio::DeviceType type = virtio::DeviceType::kRng;  // kBlock, kNet,
                                                       // kConsole, kRng
  Transport transport = Transport::kPciTransitional;
  uint16_t queue_size = 0;  // 0: the device's maximum; else a power of two
  std::variant<BlkParams, NetParams, ConsoleParams, RngParams> params;
};

struct VmConfig {
  int vcpus = 1;              // 1..kMaxVcpus
  uint64_t memory_mib = 256;  // 4..3072 (RAM stays below the PCI hole)
  std::string kernel;         // ELF64 test guest or bzImage
  std::string initrd;         // optional, bzImage only
  std::string cmdline;        // up to 4095 bytes
};
inline constexpr int kMaxVcpus = 16;

enum class VmState { kCreated, kRunning, kPaused, kStopped };
const char* VmStateName(VmState state);

// What the guest driver did with a device.
struct DeviceReport {
  std::string id;
  virtio::DeviceType type = virtio::DeviceType::kRng;
  Transport transport = Transport::kPciTransitional;
  uint8_t pci_slot = 0;  // the device number on bus 0
  // The driver did not accept VERSION_1; and the bits 0..63 it accepted. While
  // no driver holds the device (after a guest reset, e.g. at shutdown, or
  // once the VM stopped), those of the driver that last started it.
  bool driver_legacy = false;
  uint64_t negotiated_features = 0;
  uint64_t driver_starts = 0;  // times a driver set DRIVER_OK and it held
  uint8_t status = 0;          // the device status byte
  std::vector<uint16_t> queue_sizes;  // as set by the driver, per queue
  uint64_t requests = 0;  // device requests served (blk requests, net frames,
                          // console/rng chains)
  uint64_t bytes = 0;     // payload bytes moved by those requests
  uint64_t notifications = 0;  // driver kicks
  uint64_t interrupts = 0;     // queue and config interrupts sent
};

struct VmMetrics {
  uint64_t exits_io = 0;     // KVM_EXIT_IO
  uint64_t exits_mmio = 0;   // KVM_EXIT_MMIO
  uint64_t exits_other = 0;  // every other exit out of KVM_RUN
};

bool KvmUsable(std::string* why_not);  // /dev/kvm opens and answers
bool IsPvm();  // /sys/module/kvm_pvm exists: small guests only

class VmImpl;

class Vm {
 public:
  // Checks the config (kInvalidArgument), that the kernel (and initrd) exist
  // (kNotFound) and parse as an ELF64 test guest or a bzImage
  // (kInvalidArgument "not a bzImage or ELF64"); opens /dev/kvm
  // (kUnavailable without it) and loads the image into guest memory.
  static absl::StatusOr<std::unique_ptr<Vm>> Create(VmConfig config);
  ~Vm();  // stops (forced) if running
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;

  // Before Start() only (kFailedPrecondition after). kAlreadyExists for a
  // duplicate id, kInvalidArgument for bad parameters, kNotFound for a
  // missing image, kResourceExhausted beyond 31 devices.
  absl::Status AddDevice(DeviceConfig config);
  // Before Start() only; kNotFound for an unknown id.
  absl::Status RemoveDevice(absl::string_view id);

  // Assigns the PCI BARs, starts the vCPU threads and the I/O thread.
  // kFailedPrecondition unless kCreated.
  absl::Status Start();
  // Stops the vCPUs (kicked out of KVM_RUN) until Resume(); devices keep
  // their state. kFailedPrecondition unless running (paused for Resume).
  absl::Status Pause();
  absl::Status Resume();
  // Asks the guest to stop (port 0x502), waits up to graceful_timeout for it
  // to end by itself, then stops it; flushes disks and joins every thread.
  // OK if already stopped; a VM never started goes to kStopped.
  absl::Status Stop(absl::Duration graceful_timeout);

  VmState state() const;
  // Port 0x501's value, or 0 for a reset/power-off; nullopt while running or
  // if the VM was stopped from outside (Stop's force, a vCPU error).
  std::optional<int> exit_code() const;
  // Why the VM stopped when the guest did not end it (an emulation failure,
  // a triple fault, a forced Stop); ok otherwise.
  absl::Status stop_reason() const;
  // kDeadlineExceeded if still running (or never started) after `timeout`.
  absl::Status WaitStopped(absl::Duration timeout);

  // One report per device in AddDevice order. Once the VM stopped, what the
  // driver had set up at the moment it stopped (devices are reset then).
  std::vector<DeviceReport> Devices() const;
  VmMetrics Metrics() const;

  // Serial console (0x3f8): every byte the guest wrote since Start().
  std::string ConsoleOutput() const;
  // Calls on_output with each chunk of new serial output; returns an id for
  // UnsubscribeConsole. The callback runs on a vCPU thread, must not block
  // and must not call into the Vm.
  int SubscribeConsole(std::function<void(absl::string_view)> on_output);
  void UnsubscribeConsole(int id);
  // Bytes for the UART's receive side (RBR, with an interrupt on IRQ 4 if the
  // guest enabled it). kResourceExhausted if the input buffer is full.
  absl::Status WriteConsoleInput(absl::string_view bytes);

  // A virtio-console device without output_path: input for the driver, and
  // the output the driver sent. kNotFound / empty for an unknown id.
  absl::Status WriteVirtioConsoleInput(absl::string_view id,
                                       absl::string_view bytes);
  std::string VirtioConsoleOutput(absl::string_view id) const;

 private:
  explicit Vm(std::unique_ptr<VmImpl> impl);
  std::unique_ptr<VmImpl> impl_;
};

}  // namespace vmmkit::vmm

#endif  // VMMKIT_VMM_VM_H_
