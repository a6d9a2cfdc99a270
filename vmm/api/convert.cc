#include "vmm/api/convert.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "virtio-device/virtio_device.h"

namespace vmmkit::api {
namespace {

// A path named in a request: it must exist and be a regular file (or, for a
// disk, a block device). The library would say kNotFound for a missing file;
// at the API a missing file is a bad argument, and NOT_FOUND is kept for VMs
// and devices.
absl::Status CheckFile(absl::string_view field, const std::string& path,
                       bool block_device_ok) {
  if (path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is required"));
  }
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " \"", path, "\": ", std::strerror(errno)));
  }
  if (S_ISREG(st.st_mode) || (block_device_ok && S_ISBLK(st.st_mode))) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(field, " \"", path, "\" is not a regular file",
                   block_device_ok ? " or block device" : ""));
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = absl::ascii_tolower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

absl::Status ValidateName(absl::string_view what, absl::string_view name) {
  if (name.empty() || name.size() > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be 1..64 characters, got ", name.size()));
  }
  if (name[0] == '.' || name[0] == '-') {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " \"", name, "\" must not start with '.' or '-'"));
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '_' && c != '-') {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " \"", absl::CHexEscape(name),
          "\" may only contain letters, digits, '.', '_' and '-'"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::array<uint8_t, 6>> ParseMac(absl::string_view text) {
  auto bad = [&text](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad MAC address \"", absl::CHexEscape(text), "\": ", why,
                     " (expected six hex octets like 52:54:00:12:34:56)"));
  };
  if (text.size() != 17) return bad("wrong length");
  std::array<uint8_t, 6> mac;
  for (int i = 0; i < 6; ++i) {
    int hi = HexValue(text[3 * i]);
    int lo = HexValue(text[3 * i + 1]);
    if (hi < 0 || lo < 0) return bad("not a hex digit");
    if (i < 5 && text[3 * i + 2] != ':' && text[3 * i + 2] != '-') {
      return bad("octets must be separated by ':'");
    }
    mac[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  if (mac[0] & 1) return bad("a multicast address");
  return mac;
}

std::string FormatMac(const std::array<uint8_t, 6>& mac) {
  return absl::StrFormat("%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1],
                         mac[2], mac[3], mac[4], mac[5]);
}

absl::StatusOr<vmm::VmConfig> ToVmConfig(const v1::VmConfig& proto) {
  vmm::VmConfig config;
  if (proto.vcpus() > 0) {
    if (proto.vcpus() > static_cast<uint32_t>(vmm::kMaxVcpus)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "vcpus ", proto.vcpus(), " is more than ", vmm::kMaxVcpus));
    }
    config.vcpus = static_cast<int>(proto.vcpus());
  }
  if (proto.memory_mib() > 0) config.memory_mib = proto.memory_mib();
  if (absl::Status s = CheckFile("kernel", proto.kernel(), false); !s.ok()) {
    return s;
  }
  config.kernel = proto.kernel();
  if (!proto.initrd().empty()) {
    if (absl::Status s = CheckFile("initrd", proto.initrd(), false); !s.ok()) {
      return s;
    }
    config.initrd = proto.initrd();
  }
  config.cmdline = proto.cmdline();
  return config;
}

absl::StatusOr<vmm::DeviceConfig> ToDeviceConfig(const v1::DeviceSpec& proto) {
  vmm::DeviceConfig config;
  if (!proto.id().empty()) {
    if (absl::Status s = ValidateName("device id", proto.id()); !s.ok()) {
      return s;
    }
  }
  config.id = proto.id();
  switch (proto.transport()) {
    case v1::TRANSPORT_UNSPECIFIED:
    case v1::TRANSPORT_PCI_TRANSITIONAL:
      config.transport = vmm::Transport::kPciTransitional;
      break;
    case v1::TRANSPORT_PCI_MODERN:
      config.transport = vmm::Transport::kPciModern;
      break;
    case v1::TRANSPORT_PCI_LEGACY:
      config.transport = vmm::Transport::kPciLegacy;
      break;
    case v1::TRANSPORT_PCI_LEGACY_VIA_ADMIN:
      config.transport = vmm::Transport::kPciLegacyViaAdmin;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown transport ", proto.transport()));
  }
  if (proto.queue_size() > 32768) {  // virtio 1.2 §2.7: at most 32768
    return absl::InvalidArgumentError(absl::StrCat(
        "queue_size ", proto.queue_size(), " is larger than 32768"));
  }
  config.queue_size = static_cast<uint16_t>(proto.queue_size());

  using Case = v1::DeviceSpec::BackendCase;
  const Case backend = proto.backend_case();
  auto mismatch = [&proto]() {
    return absl::InvalidArgumentError(
        absl::StrCat("the backend does not match the device type ",
                     v1::DeviceType_Name(proto.type())));
  };
  switch (proto.type()) {
    case v1::DEVICE_TYPE_BLOCK: {
      if (backend != Case::kBlock) {
        return absl::InvalidArgumentError(
            "a block device needs block.image_path");
      }
      if (absl::Status s =
              CheckFile("block.image_path", proto.block().image_path(), true);
          !s.ok()) {
        return s;
      }
      config.type = virtio::DeviceType::kBlock;
      config.params = vmm::BlkParams{.path = proto.block().image_path(),
                                     .read_only = proto.block().read_only()};
      break;
    }
    case v1::DEVICE_TYPE_NET: {
      if (backend != Case::kNet && backend != Case::BACKEND_NOT_SET) {
        return mismatch();
      }
      vmm::NetParams params;
      params.tap = proto.net().tap();
      if (!proto.net().mac().empty()) {
        absl::StatusOr<std::array<uint8_t, 6>> mac =
            ParseMac(proto.net().mac());
        if (!mac.ok()) return mac.status();
        params.mac = *mac;
      }
      config.type = virtio::DeviceType::kNet;
      config.params = std::move(params);
      break;
    }
    case v1::DEVICE_TYPE_CONSOLE:
      if (backend != Case::kConsole && backend != Case::BACKEND_NOT_SET) {
        return mismatch();
      }
      config.type = virtio::DeviceType::kConsole;
      config.params =
          vmm::ConsoleParams{.output_path = proto.console().output_path()};
      break;
    case v1::DEVICE_TYPE_RNG:
      if (backend != Case::kRng && backend != Case::BACKEND_NOT_SET) {
        return mismatch();
      }
      config.type = virtio::DeviceType::kRng;
      config.params = vmm::RngParams{};
      break;
    case v1::DEVICE_TYPE_UNSPECIFIED:
      return absl::InvalidArgumentError("device type is required");
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown device type ", proto.type()));
  }
  return config;
}

v1::VmConfig ToProto(const vmm::VmConfig& config) {
  v1::VmConfig p;
  p.set_vcpus(static_cast<uint32_t>(config.vcpus));
  p.set_memory_mib(config.memory_mib);
  p.set_kernel(config.kernel);
  p.set_initrd(config.initrd);
  p.set_cmdline(config.cmdline);
  return p;
}

v1::VmState ToProto(vmm::VmState state) {
  switch (state) {
    case vmm::VmState::kCreated:
      return v1::VM_STATE_CREATED;
    case vmm::VmState::kRunning:
      return v1::VM_STATE_RUNNING;
    case vmm::VmState::kPaused:
      return v1::VM_STATE_PAUSED;
    case vmm::VmState::kStopped:
      return v1::VM_STATE_STOPPED;
  }
  return v1::VM_STATE_UNSPECIFIED;
}

v1::DeviceType ToProto(virtio::DeviceType type) {
  switch (type) {
    case virtio::DeviceType::kBlock:
      return v1::DEVICE_TYPE_BLOCK;
    case virtio::DeviceType::kNet:
      return v1::DEVICE_TYPE_NET;
    case virtio::DeviceType::kConsole:
      return v1::DEVICE_TYPE_CONSOLE;
    case virtio::DeviceType::kRng:
      return v1::DEVICE_TYPE_RNG;
    default:
      return v1::DEVICE_TYPE_UNSPECIFIED;
  }
}

v1::Transport ToProto(vmm::Transport transport) {
  switch (transport) {
    case vmm::Transport::kPciModern:
      return v1::TRANSPORT_PCI_MODERN;
    case vmm::Transport::kPciTransitional:
      return v1::TRANSPORT_PCI_TRANSITIONAL;
    case vmm::Transport::kPciLegacy:
      return v1::TRANSPORT_PCI_LEGACY;
    case vmm::Transport::kPciLegacyViaAdmin:
      return v1::TRANSPORT_PCI_LEGACY_VIA_ADMIN;
  }
  return v1::TRANSPORT_UNSPECIFIED;
}

v1::DeviceSpec ToProto(const vmm::DeviceConfig& config) {
  v1::DeviceSpec p;
  p.set_id(config.id);
  p.set_type(ToProto(config.type));
  p.set_transport(ToProto(config.transport));
  p.set_queue_size(config.queue_size);
  if (const auto* blk = std::get_if<vmm::BlkParams>(&config.params)) {
    p.mutable_block()->set_image_path(blk->path);
    p.mutable_block()->set_read_only(blk->read_only);
  } else if (const auto* net = std::get_if<vmm::NetParams>(&config.params)) {
    p.mutable_net()->set_tap(net->tap);
    if (net->mac) p.mutable_net()->set_mac(FormatMac(*net->mac));
  } else if (const auto* con =
                 std::get_if<vmm::ConsoleParams>(&config.params)) {
    p.mutable_console()->set_output_path(con->output_path);
  } else {
    p.mutable_rng();
  }
  return p;
}

std::vector<std::string> StatusBitNames(uint8_t status) {
  static constexpr struct {
    uint8_t bit;
    const char* name;
  } kBits[] = {
      {virtio::kStatusAcknowledge, "ACKNOWLEDGE"},
      {virtio::kStatusDriver, "DRIVER"},
      {virtio::kStatusFeaturesOk, "FEATURES_OK"},
      {virtio::kStatusDriverOk, "DRIVER_OK"},
      {64, "NEEDS_RESET"},
      {128, "FAILED"},
  };
  std::vector<std::string> names;
  for (const auto& b : kBits) {
    if (status & b.bit) names.emplace_back(b.name);
  }
  return names;
}

v1::DeviceCounters ToCounters(const vmm::DeviceReport& report) {
  v1::DeviceCounters c;
  c.set_requests(report.requests);
  c.set_bytes(report.bytes);
  c.set_notifications(report.notifications);
  c.set_interrupts(report.interrupts);
  return c;
}

namespace {
int64_t UnixMillis(absl::Time t) {
  return t == absl::InfinitePast() ? 0 : absl::ToUnixMillis(t);
}
}  // namespace

v1::VmInfo ToProto(const VmSnapshot& s) {
  v1::VmInfo p;
  p.set_vm_id(s.id);
  p.set_state(ToProto(s.state));
  *p.mutable_config() = ToProto(s.config);
  for (const DeviceSnapshot& d : s.devices) {
    v1::DeviceInfo* info = p.add_devices();
    *info->mutable_spec() = ToProto(d.config);
    info->set_console_output(d.console_output);
    if (d.report) {
      const vmm::DeviceReport& r = *d.report;
      info->set_pci_slot(r.pci_slot);
      info->set_driver_legacy(r.driver_legacy);
      info->set_driver_starts(r.driver_starts);
      info->set_negotiated_features(r.negotiated_features);
      info->set_status(r.status);
      for (uint16_t q : r.queue_sizes) info->add_queue_sizes(q);
      *info->mutable_counters() = ToCounters(r);
      for (std::string& n : StatusBitNames(r.status)) {
        info->add_status_names(std::move(n));
      }
    }
  }
  if (s.exit_code) {
    p.set_has_exit_code(true);
    p.set_exit_code(*s.exit_code);
  }
  p.set_created_unix_ms(UnixMillis(s.created));
  p.set_started_unix_ms(UnixMillis(s.started));
  p.set_stopped_unix_ms(UnixMillis(s.stopped));
  p.set_run_time_ms(absl::ToInt64Milliseconds(s.run_time));
  return p;
}

v1::VmMetrics ToProto(const VmMetricsSnapshot& m) {
  v1::VmMetrics p;
  p.set_vm_id(m.id);
  p.set_exits_io(m.exits.exits_io);
  p.set_exits_mmio(m.exits.exits_mmio);
  p.set_exits_other(m.exits.exits_other);
  for (const vmm::DeviceReport& r : m.devices) {
    v1::VmMetrics::Device* d = p.add_devices();
    d->set_id(r.id);
    d->set_type(ToProto(r.type));
    *d->mutable_counters() = ToCounters(r);
  }
  p.set_run_time_ms(absl::ToInt64Milliseconds(m.run_time));
  return p;
}

}  // namespace vmmkit::api
