// vmm/api/convert.h: the one place where vmmkit.v1 protos become vmm library
// types and back, with the checks only the API edge can make (names, enums
// left unset, MAC syntax, backend/type mismatches, files named in a request
// that do not exist).
//
//   VMMKIT_ASSIGN_OR_RETURN(vmm::VmConfig config,
//   ToVmConfig(request.config())); VMMKIT_ASSIGN_OR_RETURN(vmm::DeviceConfig
//   device,
//                           ToDeviceConfig(request.device()));
//   v1::VmInfo info = ToProto(snapshot);
//
// Every error is kInvalidArgument with a message naming the field. The vmm
// library checks the rest (sizes, queue sizes, image contents). Thread-safe
// (pure functions).
#ifndef VMMKIT_VMM_API_CONVERT_H_
#define VMMKIT_VMM_API_CONVERT_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "vmm/api/vm_manager.h"
#include "vmm/api/vmmkit.pb.h"
#include "vmm/vm.h"

namespace vmmkit::api {

namespace v1 = ::vmmkit::v1;

// A VM or device name: 1..64 characters of [A-Za-z0-9._-], not starting with
// '.' or '-'. `what` names the field in the error.
absl::Status ValidateName(absl::string_view what, absl::string_view name);

// "52:54:00:12:34:56" (case-insensitive hex, ':' or '-'); a multicast
// address (lowest bit of the first octet) is refused.
absl::StatusOr<std::array<uint8_t, 6>> ParseMac(absl::string_view text);
std::string FormatMac(const std::array<uint8_t, 6>& mac);

// Defaults (vcpus 1, memory 256 MiB), kernel required; the kernel and a
// non-empty initrd must be existing regular files.
absl::StatusOr<vmm::VmConfig> ToVmConfig(const v1::VmConfig& proto);
// The id is copied as given (may be empty: VmManager assigns one). The type
// must be set, the backend must match it, a block image must exist, a MAC
// must parse, queue_size must fit 16 bits.
absl::StatusOr<vmm::DeviceConfig> ToDeviceConfig(const v1::DeviceSpec& proto);

v1::VmConfig ToProto(const vmm::VmConfig& config);
v1::DeviceSpec ToProto(const vmm::DeviceConfig& config);
v1::VmState ToProto(vmm::VmState state);
v1::DeviceType ToProto(virtio::DeviceType type);
v1::Transport ToProto(vmm::Transport transport);
v1::DeviceCounters ToCounters(const vmm::DeviceReport& report);
v1::VmInfo ToProto(const VmSnapshot& snapshot);
v1::VmMetrics ToProto(const VmMetricsSnapshot& metrics);

// Names of the virtio status bits set in `status` (ACKNOWLEDGE, DRIVER, ...).
std::vector<std::string> StatusBitNames(uint8_t status);

}  // namespace vmmkit::api

#endif  // VMMKIT_VMM_API_CONVERT_H_
