// vmm/api/vm_manager.h: the registry of VMs by name between the gRPC handlers
// and vmm::Vm, with the bookkeeping the library does not keep (the devices as
// configured, times, a console history with many readers).
//
//   VmManager manager({.max_vms = 64});
//   VMMKIT_ASSIGN_OR_RETURN(VmSnapshot vm, manager.Create("", config));
//   VMMKIT_RETURN_IF_ERROR(manager.AddDevice(vm.id, device).status());
//   VMMKIT_RETURN_IF_ERROR(manager.Start(vm.id).status());
//   VMMKIT_ASSIGN_OR_RETURN(std::shared_ptr<ConsoleHub> console,
//                           manager.Console(vm.id));
//   ...
//   manager.StopAll(absl::Seconds(5));   // SIGTERM in vmmd
//
// Errors: kNotFound (no such VM), kAlreadyExists (name taken),
// kResourceExhausted (max_vms), kFailedPrecondition (wrong state, as the Vm
// reports it), kUnavailable after StopAll (shutting down), and whatever
// vmm::Vm returns, unchanged.
//
// Thread-safety: thread-safe. The registry has one mutex, held only to find,
// insert or erase an entry; each VM has its own: `ops` serializes the calls
// that change a VM (add/remove device, start, pause, resume, stop, delete) so
// that the configured-device list matches the Vm's, `mu` guards its small
// bookkeeping so that GetVm never waits for a slow Stop.
#ifndef VMMKIT_VMM_API_VM_MANAGER_H_
#define VMMKIT_VMM_API_VM_MANAGER_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "vmm/api/console_hub.h"
#include "vmm/vm.h"

namespace vmmkit::api {

// One device as configured plus what the guest's driver did with it.
struct DeviceSnapshot {
  vmm::DeviceConfig config;
  std::optional<vmm::DeviceReport> report;  // absent if the Vm has none yet
  // A virtio-console kept in the VMM (no output_path): the last
  // kMaxConsoleOutput bytes its driver wrote.
  std::string console_output;
};
inline constexpr size_t kMaxConsoleOutput = 64 << 10;

// A VM at one moment.
struct VmSnapshot {
  std::string id;
  vmm::VmState state = vmm::VmState::kCreated;
  vmm::VmConfig config;
  std::vector<DeviceSnapshot> devices;  // in AddDevice order
  std::optional<int> exit_code;
  absl::Time created = absl::InfinitePast();
  absl::Time started = absl::InfinitePast();  // InfinitePast: not yet
  absl::Time stopped = absl::InfinitePast();  // first seen stopped
  absl::Duration run_time = absl::ZeroDuration();
};

struct VmMetricsSnapshot {
  std::string id;
  vmm::VmMetrics exits;
  std::vector<vmm::DeviceReport> devices;
  absl::Duration run_time = absl::ZeroDuration();
};

class VmManager {
 public:
  struct Options {
    int max_vms = 64;
    size_t console_history = 1 << 20;  // bytes kept per VM for replay
  };
  explicit VmManager(Options options);
  ~VmManager();  // Vm destructors stop what still runs (forced)
  VmManager(const VmManager&) = delete;
  VmManager& operator=(const VmManager&) = delete;

  // An empty id gets "vm-<n>". kAlreadyExists if taken.
  absl::StatusOr<VmSnapshot> Create(std::string id, vmm::VmConfig config);
  // An empty device id gets "<type><n>" (blk0, net0, console0, rng0).
  absl::StatusOr<VmSnapshot> AddDevice(absl::string_view vm_id,
                                       vmm::DeviceConfig device);
  absl::StatusOr<VmSnapshot> RemoveDevice(absl::string_view vm_id,
                                          absl::string_view device_id);
  absl::StatusOr<VmSnapshot> Start(absl::string_view vm_id);
  absl::StatusOr<VmSnapshot> Pause(absl::string_view vm_id);
  absl::StatusOr<VmSnapshot> Resume(absl::string_view vm_id);
  // kFailedPrecondition for a VM never started; OK for one already stopped.
  absl::StatusOr<VmSnapshot> Stop(absl::string_view vm_id,
                                  absl::Duration graceful_timeout);
  // kDeadlineExceeded (with the VM's state in the message) if still running
  // after `timeout`; kFailedPrecondition for a VM never started.
  absl::StatusOr<VmSnapshot> Wait(absl::string_view vm_id,
                                  absl::Duration timeout);
  // CREATED or STOPPED; RUNNING/PAUSED only with `force` (stopped first).
  absl::Status Delete(absl::string_view vm_id, bool force);

  absl::StatusOr<VmSnapshot> Get(absl::string_view vm_id);
  std::vector<VmSnapshot> List();  // sorted by id
  absl::StatusOr<VmMetricsSnapshot> Metrics(absl::string_view vm_id);

  // The VM's console output; the hub outlives a Delete (it is closed then).
  absl::StatusOr<std::shared_ptr<ConsoleHub>> Console(absl::string_view vm_id);
  // True once the VM stopped (or was deleted): its console is complete.
  absl::StatusOr<bool> ConsoleFinished(absl::string_view vm_id);
  absl::Status WriteConsoleInput(absl::string_view vm_id,
                                 absl::string_view bytes);

  // Refuses new VMs and starts from now on (kUnavailable), stops every VM in
  // parallel (graceful request, then forced after `graceful_timeout`; disks
  // flushed) and returns the first error.
  absl::Status StopAll(absl::Duration graceful_timeout);

 private:
  struct Entry;
  absl::StatusOr<std::shared_ptr<Entry>> Find(absl::string_view vm_id)
      ABSL_LOCKS_EXCLUDED(mu_);
  static VmSnapshot Snapshot(Entry& entry);

  const Options options_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>, std::less<>> vms_
      ABSL_GUARDED_BY(mu_);
  // Names reserved by a Create in progress (the Vm is built without mu_).
  std::map<std::string, bool, std::less<>> reserved_ ABSL_GUARDED_BY(mu_);
  uint64_t next_vm_number_ ABSL_GUARDED_BY(mu_) = 1;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace vmmkit::api

#endif  // VMMKIT_VMM_API_VM_MANAGER_H_
