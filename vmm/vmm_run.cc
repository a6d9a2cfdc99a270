// vmm-run: runs one VM from the command line, for manual runs and the e2e
// benchmark. The serial console goes to stdout; the exit status is the
// guest's exit code (port 0x501), 0 after a reset/power-off, 125 on errors.
//
//   bazel run //vmm:vmm-run -- --kernel=guest.elf --cmdline="mode=modern" \
//       --vcpus=2 --memory_mib=64 --blk=/tmp/disk.img,ro,modern \
//       --net=,transitional --console= --rng=legacy --timeout_s=30
//
// Device flags (repeatable; comma-separated options after the first field):
//   --blk=PATH[,ro][,MODE]       --net=[TAP][,MODE][,mac=aa:bb:cc:dd:ee:ff]
//   --console=[OUTPUT_PATH][,MODE]   --rng=[MODE]
// MODE is modern, transitional (the default), legacy or legacy-via-admin.
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/flags_help.h"
#include "vmm/vm.h"

ABSL_FLAG(std::string, kernel, "", "ELF64 test guest or bzImage");
ABSL_FLAG(std::string, initrd, "", "initrd (bzImage only)");
ABSL_FLAG(std::string, cmdline, "", "kernel command line");
ABSL_FLAG(int, vcpus, 1, "number of vCPUs");
ABSL_FLAG(int, memory_mib, 256, "guest RAM in MiB");
ABSL_FLAG(int, timeout_s, 0, "stop the VM after this many seconds (0: never)");

namespace vmmkit::vmm {
namespace {

bool ParseMode(absl::string_view s, Transport* t) {
  if (s == "modern") {
    *t = Transport::kPciModern;
  } else if (s == "transitional") {
    *t = Transport::kPciTransitional;
  } else if (s == "legacy") {
    *t = Transport::kPciLegacy;
  } else if (s == "legacy-via-admin") {
    *t = Transport::kPciLegacyViaAdmin;
  } else {
    return false;
  }
  return true;
}

bool ParseMac(absl::string_view s, std::array<uint8_t, 6>* mac) {
  std::vector<std::string> parts = absl::StrSplit(s, ':');
  if (parts.size() != 6) return false;
  for (int i = 0; i < 6; ++i) {
    int v;
    if (parts[i].size() != 2 || !absl::SimpleHexAtoi(parts[i], &v)) {
      return false;
    }
    (*mac)[i] = static_cast<uint8_t>(v);
  }
  return true;
}

int Run(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "runs one VM; the serial console goes to stdout, the exit status is "
      "the guest's\nexit code (port 0x501), 0 after a reset or power-off, "
      "125 on errors.\n"
      "  vmm-run --kernel=IMAGE [--initrd=F] [--cmdline=S] [--vcpus=N] "
      "[--memory_mib=M]\n"
      "          [--timeout_s=S] [DEVICE...]\n"
      "Devices (repeatable; options after the first field, comma-separated):\n"
      "  --blk=PATH[,ro][,MODE]   --net=[TAP][,MODE][,mac=aa:bb:cc:dd:ee:ff]\n"
      "  --console=[OUTPUT_PATH][,MODE]   --rng=[MODE]\n"
      "MODE: modern, transitional (default), legacy or legacy-via-admin.");
  vmmkit::HelpListsFlagsOf("vmm/vmm_run.cc");
  // Device flags are taken from argv directly: every occurrence is one
  // device (an Abseil flag keeps only its last occurrence).
  std::vector<DeviceConfig> devices;
  int counter = 0;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    std::string kind;
    for (const char* k : {"blk", "net", "console", "rng"}) {
      std::string p = absl::StrCat("--", k, "=");
      if (a.rfind(p, 0) == 0) {
        kind = k;
        a = a.substr(p.size());
      }
    }
    if (kind.empty()) {
      rest.push_back(argv[i]);
      continue;
    }
    std::vector<std::string> tok = absl::StrSplit(a, ',');
    DeviceConfig d;
    d.id = absl::StrCat(kind, counter++);
    d.transport = Transport::kPciTransitional;
    size_t first_option = 1;
    if (kind == "rng") first_option = 0;
    bool ro = false;
    std::optional<std::array<uint8_t, 6>> mac;
    for (size_t t = first_option; t < tok.size(); ++t) {
      if (tok[t].empty()) continue;
      if (ParseMode(tok[t], &d.transport)) continue;
      if (kind == "blk" && tok[t] == "ro") {
        ro = true;
        continue;
      }
      std::array<uint8_t, 6> m;
      if (kind == "net" && tok[t].rfind("mac=", 0) == 0 &&
          ParseMac(tok[t].substr(4), &m)) {
        mac = m;
        continue;
      }
      std::fprintf(stderr, "vmm-run: bad option '%s' in --%s\n", tok[t].c_str(),
                   kind.c_str());
      return 125;
    }
    const std::string first = first_option == 1 ? tok[0] : "";
    if (kind == "blk") {
      d.type = virtio::DeviceType::kBlock;
      d.params = BlkParams{.path = first, .read_only = ro};
    } else if (kind == "net") {
      d.type = virtio::DeviceType::kNet;
      d.params = NetParams{.tap = first, .mac = mac};
    } else if (kind == "console") {
      d.type = virtio::DeviceType::kConsole;
      d.params = ConsoleParams{.output_path = first};
    } else {
      d.type = virtio::DeviceType::kRng;
      d.params = RngParams{};
    }
    devices.push_back(std::move(d));
  }
  absl::ParseCommandLine(static_cast<int>(rest.size()), rest.data());

  absl::StatusOr<std::unique_ptr<Vm>> vm = Vm::Create(
      {.vcpus = absl::GetFlag(FLAGS_vcpus),
       .memory_mib = static_cast<uint64_t>(absl::GetFlag(FLAGS_memory_mib)),
       .kernel = absl::GetFlag(FLAGS_kernel),
       .initrd = absl::GetFlag(FLAGS_initrd),
       .cmdline = absl::GetFlag(FLAGS_cmdline)});
  if (!vm.ok()) {
    std::fprintf(stderr, "vmm-run: %s\n", vm.status().ToString().c_str());
    return 125;
  }
  for (DeviceConfig& d : devices) {
    if (absl::Status s = (*vm)->AddDevice(d); !s.ok()) {
      std::fprintf(stderr, "vmm-run: %s: %s\n", d.id.c_str(),
                   s.ToString().c_str());
      return 125;
    }
  }
  (*vm)->SubscribeConsole(
      [](absl::string_view out) { (void)!write(1, out.data(), out.size()); });
  if (absl::Status s = (*vm)->Start(); !s.ok()) {
    std::fprintf(stderr, "vmm-run: start: %s\n", s.ToString().c_str());
    return 125;
  }
  const int timeout = absl::GetFlag(FLAGS_timeout_s);
  absl::Status s = (*vm)->WaitStopped(timeout > 0 ? absl::Seconds(timeout)
                                                  : absl::InfiniteDuration());
  if (!s.ok()) {
    std::fprintf(stderr, "vmm-run: %s; stopping\n", s.ToString().c_str());
    (void)(*vm)->Stop(absl::Seconds(1));
  } else {
    (void)(*vm)->Stop(absl::ZeroDuration());  // joins the threads
  }
  for (const DeviceReport& r : (*vm)->Devices()) {
    std::fprintf(stderr,
                 "vmm-run: %s %s %s slot %u status %#x%s features %#llx "
                 "requests %llu bytes %llu kicks %llu irqs %llu\n",
                 r.id.c_str(), virtio::DeviceTypeName(r.type),
                 TransportName(r.transport), r.pci_slot, r.status,
                 r.driver_legacy ? " legacy-driver" : "",
                 static_cast<unsigned long long>(r.negotiated_features),
                 static_cast<unsigned long long>(r.requests),
                 static_cast<unsigned long long>(r.bytes),
                 static_cast<unsigned long long>(r.notifications),
                 static_cast<unsigned long long>(r.interrupts));
  }
  VmMetrics m = (*vm)->Metrics();
  std::fprintf(stderr, "vmm-run: exits io %llu mmio %llu other %llu\n",
               static_cast<unsigned long long>(m.exits_io),
               static_cast<unsigned long long>(m.exits_mmio),
               static_cast<unsigned long long>(m.exits_other));
  if (!(*vm)->stop_reason().ok()) {
    std::fprintf(stderr, "vmm-run: %s\n",
                 (*vm)->stop_reason().ToString().c_str());
  }
  std::optional<int> code = (*vm)->exit_code();
  return code.has_value() ? (*code & 0xff) : 125;
}

}  // namespace
}  // namespace vmmkit::vmm

int main(int argc, char** argv) { return vmmkit::vmm::Run(argc, argv); }
