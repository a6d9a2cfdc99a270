#include "tests/vmm_guest/guest_run.h"

#include <string>
#include <utility>
#include <vector>

#include "base/status.h"

namespace vmmkit::tests::vmm_guest {

absl::Status GuestRun::Start(vmm::VmConfig config,
                             std::vector<vmm::DeviceConfig> device_configs) {
  if (config.kernel.empty()) config.kernel = GuestImagePath();
  VMMKIT_ASSIGN_OR_RETURN(vm, vmm::Vm::Create(std::move(config)));
  for (vmm::DeviceConfig& d : device_configs) {
    VMMKIT_RETURN_IF_ERROR(vm->AddDevice(std::move(d)));
  }
  started = absl::Now();
  return vm->Start();
}

void GuestRun::Collect() {
  elapsed = absl::Now() - started;
  serial = vm->ConsoleOutput();
  lines = ParseReport(serial);
  exit_code = vm->exit_code();
  devices = vm->Devices();
  metrics = vm->Metrics();
}

absl::Status GuestRun::Boot(vmm::VmConfig config,
                            std::vector<vmm::DeviceConfig> device_configs,
                            absl::Duration timeout) {
  VMMKIT_RETURN_IF_ERROR(Start(std::move(config), std::move(device_configs)));
  absl::Status waited = vm->WaitStopped(timeout);
  if (!waited.ok()) {
    // Keep what the guest said for the failure message, then force a stop
    // (its own status adds nothing to `waited`).
    vm->Stop(absl::ZeroDuration()).IgnoreError();
  }
  Collect();
  return waited;
}

const ReportLine* GuestRun::Find(
    std::initializer_list<std::pair<std::string, std::string>> match) const {
  std::vector<const ReportLine*> all = FindAll(match);
  return all.empty() ? nullptr : all.front();
}

std::vector<const ReportLine*> GuestRun::FindAll(
    std::initializer_list<std::pair<std::string, std::string>> match) const {
  std::vector<const ReportLine*> out;
  for (const ReportLine& l : lines) {
    bool ok = true;
    for (const auto& [k, v] : match) ok = ok && l.Has(k) && l.Get(k) == v;
    if (ok) out.push_back(&l);
  }
  return out;
}

const vmm::DeviceReport* GuestRun::Device(const std::string& id) const {
  for (const vmm::DeviceReport& d : devices) {
    if (d.id == id) return &d;
  }
  return nullptr;
}

std::optional<std::string> CannotRunGuests() {
  std::string why;
  if (!vmm::KvmUsable(&why)) return "KVM is not usable here: " + why;
  return std::nullopt;
}

}  // namespace vmmkit::tests::vmm_guest
