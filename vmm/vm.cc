// vmm/vm.cc: see vm.h. Skeleton: the API compiles, the VMM is being wired.
#include "vmm/vm.h"

namespace vmmkit::vmm {

class VmImpl {};

const char* TransportName(Transport transport) {
  switch (transport) {
    case Transport::kPciModern:
      return "pci-modern";
    case Transport::kPciTransitional:
      return "pci-transitional";
    case Transport::kPciLegacy:
      return "pci-legacy";
  }
  return "unknown";
}

const char* VmStateName(VmState state) {
  switch (state) {
    case VmState::kCreated:
      return "created";
    case VmState::kRunning:
      return "running";
    case VmState::kPaused:
      return "paused";
    case VmState::kStopped:
      return "stopped";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<Vm>> Vm::Create(VmConfig) {
  return absl::UnimplementedError("vmm: not wired yet");
}
Vm::Vm(std::unique_ptr<VmImpl> impl) : impl_(std::move(impl)) {}
Vm::~Vm() = default;
absl::Status Vm::AddDevice(DeviceConfig) {
  return absl::UnimplementedError("");
}
absl::Status Vm::RemoveDevice(absl::string_view) {
  return absl::UnimplementedError("");
}
absl::Status Vm::Start() { return absl::UnimplementedError(""); }
absl::Status Vm::Pause() { return absl::UnimplementedError(""); }
absl::Status Vm::Resume() { return absl::UnimplementedError(""); }
absl::Status Vm::Stop(absl::Duration) { return absl::UnimplementedError(""); }
VmState Vm::state() const { return VmState::kCreated; }
std::optional<int> Vm::exit_code() const { return std::nullopt; }
absl::Status Vm::stop_reason() const { return absl::OkStatus(); }
absl::Status Vm::WaitStopped(absl::Duration) {
  return absl::UnimplementedError("");
}
std::vector<DeviceReport> Vm::Devices() const { return {}; }
VmMetrics Vm::Metrics() const { return {}; }
std::string Vm::ConsoleOutput() const { return ""; }
int Vm::SubscribeConsole(std::function<void(absl::string_view)>) { return 0; }
void Vm::UnsubscribeConsole(int) {}
absl::Status Vm::WriteConsoleInput(absl::string_view) {
  return absl::UnimplementedError("");
}
absl::Status Vm::WriteVirtioConsoleInput(absl::string_view, absl::string_view) {
  return absl::UnimplementedError("");
}
std::string Vm::VirtioConsoleOutput(absl::string_view) const { return ""; }
bool KvmUsable(std::string* why_not) {
  if (why_not) *why_not = "not wired yet";
  return false;
}
bool IsPvm() { return false; }

}  // namespace vmmkit::vmm
