#include "vmm/api/vm_manager.h"

#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status.h"

namespace vmmkit::api {

struct VmManager::Entry {
  Entry(std::string id_in, vmm::VmConfig config_in,
        std::unique_ptr<vmm::Vm> vm_in, size_t history)
      : id(std::move(id_in)),
        config(std::move(config_in)),
        vm(std::move(vm_in)),
        console(std::make_shared<ConsoleHub>(history)),
        created(absl::Now()) {
    subscription = vm->SubscribeConsole(
        [hub = console](absl::string_view bytes) { hub->Append(bytes); });
  }
  ~Entry() {
    vm->UnsubscribeConsole(subscription);
    console->Close();
    vm.reset();  // stops (forced) if still running
  }

  const std::string id;
  const vmm::VmConfig config;
  std::unique_ptr<vmm::Vm> vm;  // set at construction, reset only above
  const std::shared_ptr<ConsoleHub> console;
  int subscription = 0;
  const absl::Time created;

  // Serializes the calls that change the VM.
  absl::Mutex ops;
  // Bookkeeping.
  absl::Mutex mu ABSL_ACQUIRED_AFTER(ops);
  std::vector<vmm::DeviceConfig> devices ABSL_GUARDED_BY(mu);
  absl::Time started ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  absl::Time stopped ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  bool deleted ABSL_GUARDED_BY(mu) = false;
};

namespace {

const char* DeviceIdPrefix(virtio::DeviceType type) {
  switch (type) {
    case virtio::DeviceType::kBlock:
      return "blk";
    case virtio::DeviceType::kNet:
      return "net";
    case virtio::DeviceType::kConsole:
      return "console";
    case virtio::DeviceType::kRng:
      return "rng";
    default:
      return "dev";
  }
}

absl::Status NotFound(absl::string_view vm_id) {
  return absl::NotFoundError(absl::StrCat("no VM named \"", vm_id, "\""));
}

}  // namespace

VmManager::VmManager(Options options) : options_(options) {}

VmManager::~VmManager() {
  std::map<std::string, std::shared_ptr<Entry>, std::less<>> vms;
  {
    absl::MutexLock lock(&mu_);
    vms.swap(vms_);
  }
  // Entries (and their Vms) go here, outside mu_.
}

absl::StatusOr<std::shared_ptr<VmManager::Entry>> VmManager::Find(
    absl::string_view vm_id) {
  absl::MutexLock lock(&mu_);
  auto it = vms_.find(vm_id);
  if (it == vms_.end()) return NotFound(vm_id);
  return it->second;
}

// Checks, with `ops` held, that a concurrent Delete did not get there first.
#define VMMKIT_CHECK_NOT_DELETED_(entry)              \
  do {                                                \
    absl::MutexLock mu_lock(&(entry).mu);             \
    if ((entry).deleted) return NotFound((entry).id); \
  } while (0)

VmSnapshot VmManager::Snapshot(Entry& entry) {
  VmSnapshot s;
  s.id = entry.id;
  s.state = entry.vm->state();
  s.config = entry.config;
  s.exit_code = entry.vm->exit_code();
  std::vector<vmm::DeviceReport> reports = entry.vm->Devices();
  absl::Time now = absl::Now();
  std::vector<vmm::DeviceConfig> devices;
  {
    absl::MutexLock lock(&entry.mu);
    devices = entry.devices;
  }
  // Outside entry.mu: the Vm has locks of its own.
  std::vector<std::string> console_outputs(devices.size());
  for (size_t i = 0; i < devices.size(); ++i) {
    const auto* console = std::get_if<vmm::ConsoleParams>(&devices[i].params);
    if (console != nullptr && console->output_path.empty()) {
      std::string out = entry.vm->VirtioConsoleOutput(devices[i].id);
      if (out.size() > kMaxConsoleOutput) {
        out.erase(0, out.size() - kMaxConsoleOutput);
      }
      console_outputs[i] = std::move(out);
    }
  }
  absl::MutexLock lock(&entry.mu);
  if (s.state == vmm::VmState::kStopped &&
      entry.stopped == absl::InfinitePast()) {
    entry.stopped = now;
  }
  s.created = entry.created;
  s.started = entry.started;
  s.stopped = entry.stopped;
  if (s.started != absl::InfinitePast()) {
    s.run_time =
        (s.stopped != absl::InfinitePast() ? s.stopped : now) - s.started;
  }
  s.devices.reserve(devices.size());
  for (size_t i = 0; i < devices.size(); ++i) {
    const vmm::DeviceConfig& config = devices[i];
    DeviceSnapshot d{config, std::nullopt, std::move(console_outputs[i])};
    for (const vmm::DeviceReport& r : reports) {
      if (r.id == config.id) {
        d.report = r;
        break;
      }
    }
    s.devices.push_back(std::move(d));
  }
  return s;
}

absl::StatusOr<VmSnapshot> VmManager::Create(std::string id,
                                             vmm::VmConfig config) {
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return absl::UnavailableError("vmmd is shutting down");
    if (id.empty()) {
      do {
        id = absl::StrCat("vm-", next_vm_number_++);
      } while (vms_.count(id) != 0 || reserved_.count(id) != 0);
    } else if (vms_.count(id) != 0 || reserved_.count(id) != 0) {
      return absl::AlreadyExistsError(
          absl::StrCat("a VM named \"", id, "\" exists"));
    }
    if (vms_.size() + reserved_.size() >=
        static_cast<size_t>(options_.max_vms)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "vmmd runs at most ", options_.max_vms, " VMs; delete one first"));
    }
    reserved_[id] = true;
  }
  // Building the Vm loads the kernel: not under mu_.
  absl::StatusOr<std::unique_ptr<vmm::Vm>> vm = vmm::Vm::Create(config);
  std::shared_ptr<Entry> entry;
  if (vm.ok()) {
    entry = std::make_shared<Entry>(id, std::move(config), *std::move(vm),
                                    options_.console_history);
  }
  {
    absl::MutexLock lock(&mu_);
    reserved_.erase(id);
    if (!vm.ok()) return vm.status();
    vms_.emplace(id, entry);
  }
  return Snapshot(*entry);
}

absl::StatusOr<VmSnapshot> VmManager::AddDevice(absl::string_view vm_id,
                                                vmm::DeviceConfig device) {
  VMMKIT_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  {
    absl::MutexLock ops(&entry->ops);
    VMMKIT_CHECK_NOT_DELETED_(*entry);
    if (device.id.empty()) {
      absl::MutexLock lock(&entry->mu);
      const char* prefix = DeviceIdPrefix(device.type);
      for (int n = 0; device.id.empty(); ++n) {
        std::string candidate = absl::StrCat(prefix, n);
        bool taken = false;
        for (const vmm::DeviceConfig& d : entry->devices) {
          taken = taken || d.id == candidate;
        }
        if (!taken) device.id = std::move(candidate);
      }
    }
    VMMKIT_RETURN_IF_ERROR(entry->vm->AddDevice(device));
    absl::MutexLock lock(&entry->mu);
    entry->devices.push_back(std::move(device));
  }
  return Snapshot(*entry);
}

absl::StatusOr<VmSnapshot> VmManager::RemoveDevice(
    absl::string_view vm_id, absl::string_view device_id) {
  VMMKIT_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  {
    absl::MutexLock ops(&entry->ops);
    VMMKIT_CHECK_NOT_DELETED_(*entry);
    VMMKIT_RETURN_IF_ERROR(entry->vm->RemoveDevice(device_id));
    absl::MutexLock lock(&entry->mu);
    for (auto it = entry->devices.begin(); it != entry->devices.end(); ++it) {
      if (it->id == device_id) {
        entry->devices.erase(it);
        break;
      }
    }
  }
  return Snapshot(*entry);
}

absl::StatusOr<VmSnapshot> VmManager::Start(absl::string_view vm_id) {
  VMMKIT_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  {
    absl::MutexLock ops(&entry->ops);
    VMMKIT_CHECK_NOT_DELETED_(*entry);
    {
      absl::MutexLock lock(&mu_);
      if (shutting_down_) {
        return absl::UnavailableError("vmmd is shutting down");
      }
    }
    VMMKIT_RETURN_IF_ERROR(entry->vm->Start());
    absl::MutexLock lock(&entry->mu);
    entry->started = absl::Now();
  }
  return Snapshot(*entry);
}

absl::StatusOr<VmSnapshot> VmManager::Pause(absl::string_view vm_id) {
  VMMKIT_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  {
    absl::MutexLock ops(&entry->ops);
    VMMKIT_CHECK_NOT_DELETED_(*entry);
    VMMKIT_RETURN_IF_ERROR(entry->vm->Pause());
  }
  return Snapshot(*entry);
}

absl::StatusOr<VmSnapshot> VmManager::Resume(absl::string_view vm_id) {
  VMMKIT_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  {
    absl::MutexLock ops(&entry->ops);
    VMMKIT_CHECK_NOT_DELETED_(*entry);
    VMMKIT_RETURN_IF_ERROR(entry->vm->Resume());
  }
  return Snapshot(*entry);
}

absl::StatusOr<VmSnapshot> VmManager::Stop(absl::string_view vm_id,
                                           absl::Duration graceful_timeout) {
  VMMKIT_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  {
    absl::MutexLock ops(&entry->ops);
    VMMKIT_CHECK_NOT_DELETED_(*entry);
    if (entry->vm->state() == vmm::VmState::kCreated) {
      return absl::FailedPreconditionError(
          absl::StrCat("VM \"", entry->id, "\" was never started"));
    }
    VMMKIT_RETURN_IF_ERROR(entry->vm->Stop(graceful_timeout));
    absl::MutexLock lock(&entry->mu);
    if (entry->stopped == absl::InfinitePast()) entry->stopped = absl::Now();
  }
  return Snapshot(*entry);
}

absl::StatusOr<VmSnapshot> VmManager::Wait(absl::string_view vm_id,
                                           absl::Duration timeout) {
  VMMKIT_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  vmm::VmState state = entry->vm->state();
  if (state == vmm::VmState::kCreated) {
    return absl::FailedPreconditionError(
        absl::StrCat("VM \"", entry->id, "\" was never started"));
  }
  if (state != vmm::VmState::kStopped) {
    absl::Status s = entry->vm->WaitStopped(timeout);
    if (absl::IsDeadlineExceeded(s)) {
      return absl::DeadlineExceededError(
          absl::StrCat("VM \"", entry->id, "\" is still ",
                       vmm::VmStateName(entry->vm->state()), " after ",
                       absl::FormatDuration(timeout)));
    }
    VMMKIT_RETURN_IF_ERROR(s);
  }
  return Snapshot(*entry);
}

absl::Status VmManager::Delete(absl::string_view vm_id, bool force) {
  VMMKIT_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  absl::MutexLock ops(&entry->ops);
  VMMKIT_CHECK_NOT_DELETED_(*entry);
  vmm::VmState state = entry->vm->state();
  if (state == vmm::VmState::kRunning || state == vmm::VmState::kPaused) {
    if (!force) {
      return absl::FailedPreconditionError(
          absl::StrCat("VM \"", entry->id, "\" is ", vmm::VmStateName(state),
                       "; stop it first or delete with force"));
    }
    VMMKIT_RETURN_IF_ERROR(entry->vm->Stop(absl::ZeroDuration()));
  }
  {
    absl::MutexLock lock(&entry->mu);
    entry->deleted = true;
  }
  entry->console->Close();
  absl::MutexLock lock(&mu_);
  vms_.erase(entry->id);
  return absl::OkStatus();
}

absl::StatusOr<VmSnapshot> VmManager::Get(absl::string_view vm_id) {
  VMMKIT_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  return Snapshot(*entry);
}

std::vector<VmSnapshot> VmManager::List() {
  std::vector<std::shared_ptr<Entry>> entries;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, entry] : vms_) entries.push_back(entry);
  }
  std::vector<VmSnapshot> out;
  out.reserve(entries.size());
  for (const std::shared_ptr<Entry>& entry : entries) {
    out.push_back(Snapshot(*entry));
  }
  return out;  // std::map order: sorted by id
}

absl::StatusOr<VmMetricsSnapshot> VmManager::Metrics(absl::string_view vm_id) {
  VMMKIT_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  VmMetricsSnapshot m;
  m.id = entry->id;
  m.exits = entry->vm->Metrics();
  m.devices = entry->vm->Devices();
  m.run_time = Snapshot(*entry).run_time;
  return m;
}

absl::StatusOr<std::shared_ptr<ConsoleHub>> VmManager::Console(
    absl::string_view vm_id) {
  VMMKIT_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  return entry->console;
}

absl::StatusOr<bool> VmManager::ConsoleFinished(absl::string_view vm_id) {
  absl::StatusOr<std::shared_ptr<Entry>> entry = Find(vm_id);
  if (absl::IsNotFound(entry.status())) return true;  // deleted
  VMMKIT_RETURN_IF_ERROR(entry.status());
  return (*entry)->vm->state() == vmm::VmState::kStopped;
}

absl::Status VmManager::WriteConsoleInput(absl::string_view vm_id,
                                          absl::string_view bytes) {
  VMMKIT_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  return entry->vm->WriteConsoleInput(bytes);
}

absl::Status VmManager::StopAll(absl::Duration graceful_timeout) {
  std::vector<std::shared_ptr<Entry>> entries;
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    for (const auto& [id, entry] : vms_) entries.push_back(entry);
  }
  std::vector<absl::Status> results(entries.size());
  std::vector<std::thread> threads;
  threads.reserve(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    threads.emplace_back([&entries, &results, i, graceful_timeout] {
      Entry& entry = *entries[i];
      absl::MutexLock ops(&entry.ops);
      vmm::VmState state = entry.vm->state();
      if (state == vmm::VmState::kRunning || state == vmm::VmState::kPaused) {
        results[i] = Annotate(entry.vm->Stop(graceful_timeout),
                              absl::StrCat("stopping VM ", entry.id));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (const absl::Status& s : results) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace vmmkit::api
