// vmm/devices.h: one virtio device as the VMM runs it: the vmmkit device
// (blk, net, console, rng) with its backend, its virtio-pci function, the
// device's lock, its ioeventfds and the fds the I/O thread polls for it.
//
//   VMMKIT_ASSIGN_OR_RETURN(std::unique_ptr<DeviceSlot> slot,
//                           DeviceSlot::Create(config, memory, vm_fd));
//   VMMKIT_RETURN_IF_ERROR(slot->Attach(bus));   // next free slot on bus 0
//   VMMKIT_RETURN_IF_ERROR(slot->SyncIoeventfds());  // after AssignBars
//   for (const DeviceSlot::PollFd& p : slot->poll_fds()) epoll_add(p.fd, ..);
//   ... I/O thread: slot->OnReady(p);
//
// Interrupts: every MSI-X vector gets an irqfd and a KVM GSI route
// (MsiRoutes) that follows the message the guest programs in the vector
// table; raising a vector writes its irqfd (KVM_SIGNAL_MSI for a message no
// route carries). Masked vectors stay pending in the MSI-X table and are
// sent when unmasked (pci/msix.h). INTx drives the IOAPIC input
// PciSlotGsi(slot) with KVM_IRQ_LINE, level-triggered: raised with the ISR and
// lowered when the driver reads the ISR, which is how virtio-pci acknowledges
// it. The function's Interrupt Line register holds that GSI, as firmware leaves
// it.
//
// Notifications: every doorbell of VirtioPciFunction::doorbells() (the
// legacy QUEUE_NOTIFY port with the queue index as datamatch, the modern
// notify addresses) gets an eventfd registered with KVM_IOEVENTFD at the
// BAR's current address while the BAR decodes; the bus tells when the guest
// moves or disables a BAR and SyncIoeventfds() re-registers. A write KVM
// does not match (another width) exits to user space and reaches the same
// queue through the register decoder.
//
// kPciLegacyViaAdmin (vmm/admin_legacy.h): the function is a modern-only
// member, the bus holds the legacy shim in front of it (one owner per
// device, all under the device's lock); the shim's QUEUE_NOTIFY (BAR 0 + 16,
// datamatch the queue) gets an ioeventfd calling the shim's NotifyQueue, the
// member's modern doorbells get theirs at the shim's BAR addresses, and the
// member's MSI-X and INTx reach the guest as a native function's do.
//
// Backends: blk serves requests synchronously in ProcessQueue; net polls its
// backend edge-triggered; a net device without a TAP gets an in-process echo
// backend (LoopbackNetBackend pair: the slot keeps the far side and sends
// every frame back); a console without output_path writes into a pipe the
// slot drains into a buffer (VirtioConsoleOutput) and reads input from a
// pipe the slot writes (WriteConsoleInput).
//
// Thread-safety: thread-safe after Attach. Register accesses (from vCPU
// threads, through the bus), notifications and backend work (I/O thread)
// and reports all take the device's lock. SyncIoeventfds must be called with
// the caller's bus lock held (it runs from the bus's BarChanged callback).
#ifndef VMMKIT_VMM_DEVICES_H_
#define VMMKIT_VMM_DEVICES_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "pci/root_bus.h"
#include "pci/virtio_pci.h"
#include "virtio-device/virtio_device.h"
#include "vmm/kvm.h"
#include "vmm/msi_routes.h"
#include "vmm/vm.h"

namespace vmmkit::virtio {
class LoopbackNetBackend;
}

namespace vmmkit::vmm {

class AdminLegacyGroup;

// kPciLegacyViaAdmin: kModern (the member is modern-only).
pci::VirtioPciMode PciModeFor(Transport transport);

class DeviceSlot {
 public:
  // Checks the config and creates the device and its function (not yet on a
  // bus). kInvalidArgument for bad parameters, the device's own errors for
  // its backend (a missing image is kNotFound). `memory` and `vm` must
  // outlive the slot.
  static absl::StatusOr<std::unique_ptr<DeviceSlot>> Create(
      const DeviceConfig& config, const virtqueue::GuestMemory& memory,
      VmFd* vm);
  ~DeviceSlot();
  DeviceSlot(const DeviceSlot&) = delete;
  DeviceSlot& operator=(const DeviceSlot&) = delete;

  const DeviceConfig& config() const { return config_; }
  const std::string& id() const { return config_.id; }

  // Puts the function on `bus` (next free device number), sets its
  // Interrupt Line and interrupt sinks, and an MSI route per MSI-X vector.
  // `bus` and `routes` must outlive the slot.
  absl::Status Attach(pci::RootBus& bus, MsiRoutes& routes);
  std::optional<pci::PciAddress> address() const { return address_; }

  // (Re)registers the ioeventfds at the BARs' current addresses: those of
  // BARs that no longer decode are removed. Call with the bus lock held.
  absl::Status SyncIoeventfds();
  // Removes every ioeventfd registration (at shutdown).
  void ReleaseIoeventfds();

  struct PollFd {
    enum class Kind { kDoorbell, kBackend, kNetPeer, kConsoleOutput };
    int fd;
    Kind kind;
    uint16_t queue = 0;  // kDoorbell
    bool shim = false;   // kDoorbell: the legacy shim's QUEUE_NOTIFY
  };
  // Every fd the I/O thread should poll (edge-triggered) for this slot.
  std::vector<PollFd> poll_fds() const;
  // The I/O thread saw `p` readable.
  void OnReady(const PollFd& p);

  // What the driver did; after FlushAndReset, as it was just before.
  DeviceReport Report() const;
  // Flushes the device (disks: fdatasync), keeps its final report and
  // resets it (at VM stop).
  absl::Status FlushAndReset();

  // Console without output_path only (kFailedPrecondition otherwise).
  absl::Status WriteConsoleInput(absl::string_view bytes);
  std::string ConsoleOutput() const;

 private:
  class LockedFunction;
  class Interrupts;
  struct Ioevent {
    ScopedFd fd;
    pci::Doorbell doorbell;
    std::optional<uint64_t> registered_at;  // guest address, if registered
    bool shim = false;  // the legacy shim's doorbell (kPciLegacyViaAdmin)
  };

  DeviceSlot(DeviceConfig config, VmFd* vm);
  void DrainConsoleOutput();
  void EchoNetFrames() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  DeviceReport ReportLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What the bus sees: the legacy shim (kPciLegacyViaAdmin) or the function.
  pci::PciFunction& bus_function() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const DeviceConfig config_;
  VmFd* const vm_;
  std::optional<pci::PciAddress> address_;

  mutable absl::Mutex mu_;  // the device's lock
  std::unique_ptr<virtio::VirtioDevice> device_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<pci::VirtioPciFunction> function_ ABSL_GUARDED_BY(mu_);
  // kPciLegacyViaAdmin: owner, admin driver and shim in front of function_
  // (the member).
  std::unique_ptr<AdminLegacyGroup> admin_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<LockedFunction> locked_;
  std::unique_ptr<Interrupts> interrupts_;
  // The far side of an echo backend.
  std::unique_ptr<virtio::LoopbackNetBackend> net_peer_ ABSL_GUARDED_BY(mu_);
  std::vector<uint8_t> echo_buffer_ ABSL_GUARDED_BY(mu_);
  std::optional<DeviceReport> final_report_ ABSL_GUARDED_BY(mu_);

  // Guarded by the bus lock (the caller's) once attached.
  std::vector<Ioevent> ioevents_;

  // Console pipes and output (console without output_path).
  ScopedFd console_in_read_, console_in_write_;
  ScopedFd console_out_read_, console_out_write_;
  ScopedFd console_file_;
  mutable absl::Mutex console_mu_;
  std::string console_output_ ABSL_GUARDED_BY(console_mu_);
};

}  // namespace vmmkit::vmm

#endif  // VMMKIT_VMM_DEVICES_H_
