// vmmctl: the command-line client of vmmd (vmmkit.v1.VmService).
//
//   vmmctl create demo --kernel guest.elf --memory 256M
//   vmmctl add-device demo --type blk --transport pci-transitional --image
//   d.img vmmctl start demo && vmmctl console demo vmmctl get demo --json | jq
//   .devices vmmctl stop demo --timeout 5s && vmmctl delete demo
//
// `vmmctl --help` lists the commands and exit codes, `vmmctl CMD --help` a
// command's flags.
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "vmm/api/socket_path.h"
#include "vmm/api/vmmkit.grpc.pb.h"

namespace vmmkit::vmmctl {
namespace {

namespace v1 = ::vmmkit::v1;

// Exit codes (also in --help).
enum Exit {
  kOk = 0,
  kOtherError = 1,
  kUsage = 2,
  kInvalidArgument = 3,
  kNotFound = 4,
  kAlreadyExists = 5,
  kFailedPrecondition = 6,
  kUnavailable = 7,
  kDeadlineExceeded = 8,
  kResourceExhausted = 9,
};

int ExitFor(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return kOk;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
      return kInvalidArgument;
    case grpc::StatusCode::NOT_FOUND:
      return kNotFound;
    case grpc::StatusCode::ALREADY_EXISTS:
      return kAlreadyExists;
    case grpc::StatusCode::FAILED_PRECONDITION:
      return kFailedPrecondition;
    case grpc::StatusCode::UNAVAILABLE:
      return kUnavailable;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return kDeadlineExceeded;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return kResourceExhausted;
    default:
      return kOtherError;
  }
}

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "invalid argument";
    case grpc::StatusCode::NOT_FOUND:
      return "not found";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "already exists";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "failed precondition";
    case grpc::StatusCode::UNAVAILABLE:
      return "unavailable";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "deadline exceeded";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "resource exhausted";
    case grpc::StatusCode::CANCELLED:
      return "cancelled";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "unimplemented";
    case grpc::StatusCode::INTERNAL:
      return "internal error";
    default:
      return "error";
  }
}

// ---- command table --------------------------------------------------------

struct FlagSpec {
  const char* name;   // without "--"
  const char* value;  // nullptr: a boolean flag; else the value's name
  const char* help;
};

struct Command {
  const char* name;
  const char* args;  // positional arguments, for the usage line
  int min_args;
  int max_args;
  const char* help;
  std::vector<FlagSpec> flags;
};

const FlagSpec kGlobalFlags[] = {
    {"socket", "PATH", "vmmd's Unix socket (default: as vmmd's default)"},
    {"server", "ADDR", "vmmd's address instead: unix:PATH or 127.0.0.1:PORT"},
    {"json", nullptr,
     "print the reply as JSON (proto3 JSON, field names "
     "as in vmmkit.proto)"},
    {"help", nullptr, "this help"},
};

const std::vector<Command>& Commands() {
  static const std::vector<Command> kCommands = {
      {"create",
       "[NAME]",
       0,
       1,
       "create a VM (state created); NAME or --name, else vmmd picks vm-<n>",
       {{"name", "NAME", "the VM's name"},
        {"kernel", "PATH", "bzImage or ELF64 test guest (required)"},
        {"initrd", "PATH", "initramfs (Linux only)"},
        {"cmdline", "TEXT", "kernel command line"},
        {"memory", "SIZE", "guest RAM: 256M, 1G, 512MiB or MiB (default 256M)"},
        {"vcpus", "N", "number of vCPUs (default 1)"}}},
      {"add-device",
       "VM",
       1,
       1,
       "add a virtio device to a VM that was not started",
       {{"type", "TYPE", "blk, net, console or rng (required)"},
        {"id", "ID", "device name (default <type><n>)"},
        {"transport", "T",
         "pci-modern, pci-transitional (default), pci-legacy or "
         "pci-legacy-via-admin"},
        {"queue-size", "N", "virtqueue size, a power of two (default: max)"},
        {"image", "PATH", "blk: raw disk image (required for blk)"},
        {"read-only", nullptr, "blk: read-only disk"},
        {"tap", "NAME", "net: TAP interface (default: in-process echo)"},
        {"mac", "MAC", "net: MAC address, 52:54:00:12:34:56"},
        {"output", "PATH", "console: file for the virtio-console output"}}},
      {"remove-device",
       "VM DEVICE",
       2,
       2,
       "remove a device from a VM that was not started",
       {}},
      {"start", "VM", 1, 1, "start a created VM", {}},
      {"pause", "VM", 1, 1, "pause a running VM", {}},
      {"resume", "VM", 1, 1, "resume a paused VM", {}},
      {"stop",
       "VM",
       1,
       1,
       "ask the guest to stop, wait, then force; returns once stopped",
       {{"timeout", "DURATION", "graceful period: 5s, 500ms (default 5s)"}}},
      {"wait",
       "VM",
       1,
       1,
       "wait until the VM stops by itself; exit 8 on timeout",
       {{"timeout", "DURATION", "longest wait (default 60s)"}}},
      {"delete",
       "VM",
       1,
       1,
       "delete a created or stopped VM",
       {{"force", nullptr, "also a running one (stopped by force first)"}}},
      {"get",
       "VM",
       1,
       1,
       "show a VM and what the guest's drivers did with its devices",
       {}},
      {"list", "", 0, 0, "list every VM", {}},
      {"metrics",
       "VM",
       1,
       1,
       "VM exits and per-device requests/bytes/kicks/interrupts",
       {}},
      {"console",
       "VM",
       1,
       1,
       "stream the serial console until the VM stops; stdin goes to the "
       "guest",
       {{"no-replay", nullptr, "only new output, not what was printed before"},
        {"no-input", nullptr, "do not read stdin"}}},
  };
  return kCommands;
}

const Command* FindCommand(absl::string_view name) {
  for (const Command& c : Commands()) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

void PrintFlags(std::ostream& out, const FlagSpec* begin, const FlagSpec* end) {
  for (const FlagSpec* f = begin; f != end; ++f) {
    std::string left = absl::StrCat("--", f->name);
    if (f->value != nullptr) absl::StrAppend(&left, " ", f->value);
    out << absl::StrFormat("  %-22s %s\n", left, f->help);
  }
}

void PrintUsage(std::ostream& out) {
  out << "vmmctl: control vmmd, the vmmkit VMM daemon\n\n"
         "usage: vmmctl [--socket PATH | --server ADDR] [--json] COMMAND "
         "[ARGS] [FLAGS]\n\ncommands:\n";
  for (const Command& c : Commands()) {
    out << absl::StrFormat("  %-14s %-10s %s\n", c.name, c.args, c.help);
  }
  out << "\nglobal flags (before or after the command):\n";
  PrintFlags(out, std::begin(kGlobalFlags), std::end(kGlobalFlags));
  out << "\n`vmmctl COMMAND --help` shows a command's flags.\n"
         "\nexit codes: 0 ok, 1 other error, 2 usage, 3 invalid argument, "
         "4 not found,\n  5 already exists, 6 failed precondition (wrong "
         "state), 7 vmmd unavailable,\n  8 deadline exceeded, 9 resource "
         "exhausted\n";
}

void PrintCommandUsage(std::ostream& out, const Command& c) {
  out << "usage: vmmctl " << c.name << (c.args[0] ? " " : "") << c.args
      << (c.flags.empty() ? "" : " [FLAGS]") << "\n  " << c.help << "\n";
  if (!c.flags.empty()) {
    out << "\nflags:\n";
    PrintFlags(out, c.flags.data(), c.flags.data() + c.flags.size());
  }
  out << "\nglobal flags:\n";
  PrintFlags(out, std::begin(kGlobalFlags), std::end(kGlobalFlags));
}

struct Args {
  const Command* command = nullptr;
  std::vector<std::string> positional;
  std::map<std::string, std::string> flags;  // boolean flags map to ""
  bool Has(const std::string& f) const { return flags.count(f) != 0; }
  std::string Get(const std::string& f, std::string dflt = "") const {
    auto it = flags.find(f);
    return it == flags.end() ? dflt : it->second;
  }
};

const FlagSpec* FindFlag(const Command* c, absl::string_view name) {
  for (const FlagSpec& f : kGlobalFlags) {
    if (name == f.name) return &f;
  }
  if (c != nullptr) {
    for (const FlagSpec& f : c->flags) {
      if (name == f.name) return &f;
    }
  }
  return nullptr;
}

// Returns an error message, or "" on success.
std::string ParseArgs(int argc, char** argv, Args* args) {
  std::vector<std::string> words(argv + 1, argv + argc);
  // The command is the first word that is not a flag (global flags may come
  // first; a global flag with a value consumes the next word).
  for (size_t i = 0; i < words.size(); ++i) {
    absl::string_view w = words[i];
    if (absl::StartsWith(w, "--")) {
      absl::string_view name = w.substr(2);
      name = name.substr(0, name.find('='));
      const FlagSpec* f = FindFlag(nullptr, name);
      if (f != nullptr && f->value != nullptr &&
          w.find('=') == absl::string_view::npos) {
        ++i;
      }
      continue;
    }
    if (w == "help") {
      args->flags["help"] = "";
      if (i + 1 < words.size()) args->command = FindCommand(words[i + 1]);
      return "";
    }
    args->command = FindCommand(w);
    if (args->command == nullptr) {
      return absl::StrCat("unknown command \"", w, "\"");
    }
    words.erase(words.begin() + static_cast<long>(i));
    break;
  }
  for (size_t i = 0; i < words.size(); ++i) {
    absl::string_view w = words[i];
    if (w == "--") {
      for (++i; i < words.size(); ++i) args->positional.push_back(words[i]);
      break;
    }
    if (!absl::StartsWith(w, "--") || w.size() == 2) {
      if (absl::StartsWith(w, "-") && w.size() > 1) {
        if (w == "-h") {
          args->flags["help"] = "";
          continue;
        }
        return absl::StrCat("unknown flag \"", w, "\" (flags start with --)");
      }
      args->positional.push_back(std::string(w));
      continue;
    }
    absl::string_view body = w.substr(2);
    size_t eq = body.find('=');
    std::string name(body.substr(0, eq));
    const FlagSpec* f = FindFlag(args->command, name);
    if (f == nullptr) {
      return absl::StrCat(
          "unknown flag --", name,
          args->command ? absl::StrCat(" for ", args->command->name) : "");
    }
    if (f->value == nullptr) {
      if (eq != absl::string_view::npos) {
        return absl::StrCat("--", name, " takes no value");
      }
      args->flags[name] = "";
    } else if (eq != absl::string_view::npos) {
      args->flags[name] = std::string(body.substr(eq + 1));
    } else if (i + 1 < words.size()) {
      args->flags[name] = words[++i];
    } else {
      return absl::StrCat("--", name, " needs a value (", f->value, ")");
    }
  }
  if (args->Has("help")) return "";
  if (args->command == nullptr) return "no command given";
  int n = static_cast<int>(args->positional.size());
  if (n < args->command->min_args || n > args->command->max_args) {
    return absl::StrCat(
        args->command->name, " takes ",
        args->command->args[0] ? args->command->args : "no arguments", ", got ",
        n, " argument", n == 1 ? "" : "s");
  }
  return "";
}

// "256M", "1G", "512MiB", "256" (MiB) -> MiB.
bool ParseMemoryMib(absl::string_view text, uint64_t* mib) {
  std::string t = absl::AsciiStrToUpper(text);
  absl::string_view s = t;
  uint64_t scale = 1;
  if (absl::ConsumeSuffix(&s, "GIB") || absl::ConsumeSuffix(&s, "G")) {
    scale = 1024;
  } else if (absl::ConsumeSuffix(&s, "MIB") || absl::ConsumeSuffix(&s, "M")) {
    scale = 1;
  }
  uint64_t v = 0;
  if (!absl::SimpleAtoi(s, &v) || v == 0 || v > (1ull << 40) / scale) {
    return false;
  }
  *mib = v * scale;
  return true;
}

// "5s", "500ms", "1m", "2" (seconds) -> milliseconds.
bool ParseTimeoutMs(absl::string_view text, uint32_t* ms) {
  absl::Duration d;
  double seconds = 0;
  if (absl::SimpleAtod(text, &seconds)) {
    d = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(text, &d)) {
    return false;
  }
  if (d < absl::ZeroDuration() || d > absl::Hours(24)) return false;
  *ms = static_cast<uint32_t>(absl::ToInt64Milliseconds(d));
  return true;
}

// ---- output ---------------------------------------------------------------

std::string ToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.always_print_enums_as_ints = false;
  options.preserve_proto_field_names = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(m, &out, options).ok()) {
    return "{}";
  }
  return out;
}

std::string TypeName(v1::DeviceType t) {
  switch (t) {
    case v1::DEVICE_TYPE_BLOCK:
      return "blk";
    case v1::DEVICE_TYPE_NET:
      return "net";
    case v1::DEVICE_TYPE_CONSOLE:
      return "console";
    case v1::DEVICE_TYPE_RNG:
      return "rng";
    default:
      return "?";
  }
}

std::string TransportName(v1::Transport t) {
  switch (t) {
    case v1::TRANSPORT_PCI_MODERN:
      return "pci-modern";
    case v1::TRANSPORT_PCI_TRANSITIONAL:
      return "pci-transitional";
    case v1::TRANSPORT_PCI_LEGACY:
      return "pci-legacy";
    case v1::TRANSPORT_PCI_LEGACY_VIA_ADMIN:
      return "pci-legacy-via-admin";
    default:
      return "?";
  }
}

std::string StateName(v1::VmState s) {
  switch (s) {
    case v1::VM_STATE_CREATED:
      return "created";
    case v1::VM_STATE_RUNNING:
      return "running";
    case v1::VM_STATE_PAUSED:
      return "paused";
    case v1::VM_STATE_STOPPED:
      return "stopped";
    default:
      return "?";
  }
}

std::string Backend(const v1::DeviceSpec& d) {
  switch (d.backend_case()) {
    case v1::DeviceSpec::kBlock:
      return absl::StrCat(d.block().image_path(),
                          d.block().read_only() ? " (ro)" : "");
    case v1::DeviceSpec::kNet:
      return absl::StrCat(
          d.net().tap().empty() ? "echo" : absl::StrCat("tap ", d.net().tap()),
          d.net().mac().empty() ? "" : absl::StrCat(" ", d.net().mac()));
    case v1::DeviceSpec::kConsole:
      return d.console().output_path().empty() ? "kept in vmmd"
                                               : d.console().output_path();
    default:
      return "";
  }
}

void PrintVm(const v1::VmInfo& vm) {
  const v1::VmConfig& c = vm.config();
  std::printf("VM %s: %s", vm.vm_id().c_str(), StateName(vm.state()).c_str());
  if (vm.has_exit_code()) std::printf(", exit code %d", vm.exit_code());
  if (vm.started_unix_ms() != 0) {
    std::printf(", ran %.3f s", static_cast<double>(vm.run_time_ms()) / 1000);
  }
  std::printf("\n  %u vCPU, %llu MiB, kernel %s\n", c.vcpus(),
              static_cast<unsigned long long>(c.memory_mib()),
              c.kernel().c_str());
  if (!c.initrd().empty()) std::printf("  initrd %s\n", c.initrd().c_str());
  if (!c.cmdline().empty()) std::printf("  cmdline %s\n", c.cmdline().c_str());
  if (vm.devices().empty()) {
    std::printf("  no devices\n");
    return;
  }
  std::printf("  %-10s %-7s %-16s %-4s %-7s %-18s %-12s %s\n", "DEVICE", "TYPE",
              "TRANSPORT", "SLOT", "DRIVER", "FEATURES", "QUEUES", "STATUS");
  for (const v1::DeviceInfo& d : vm.devices()) {
    // After the guest let go (status 0), the driver that last started it.
    std::string driver = d.status() == 0 && d.driver_starts() == 0 ? "-"
                         : d.driver_legacy()                       ? "legacy"
                                                                   : "modern";
    std::vector<std::string> queues;
    for (uint32_t q : d.queue_sizes()) queues.push_back(absl::StrCat(q));
    std::string status =
        d.status_names().empty()
            ? "-"
            : absl::StrCat(absl::StrJoin(d.status_names(), "|"), " (",
                           d.status(), ")");
    std::printf("  %-10s %-7s %-16s %-4u %-7s %#-18llx %-12s %s\n",
                d.spec().id().c_str(), TypeName(d.spec().type()).c_str(),
                TransportName(d.spec().transport()).c_str(), d.pci_slot(),
                driver.c_str(),
                static_cast<unsigned long long>(d.negotiated_features()),
                queues.empty() ? "-" : absl::StrJoin(queues, ",").c_str(),
                status.c_str());
    std::string backend = Backend(d.spec());
    if (!backend.empty()) {
      std::printf("  %-10s backend: %s\n", "", backend.c_str());
    }
    if (!d.console_output().empty()) {
      std::string text = d.console_output();
      if (text.size() > 200) text = "..." + text.substr(text.size() - 200);
      std::printf("  %-10s output: \"%s\"\n", "",
                  absl::CHexEscape(text).c_str());
    }
  }
}

// ---- commands -------------------------------------------------------------

struct Context {
  std::unique_ptr<v1::VmService::Stub> stub;
  bool json = false;
};

int Fail(const grpc::Status& s, absl::string_view what) {
  std::fprintf(stderr, "vmmctl: %.*s: %s: %s\n", static_cast<int>(what.size()),
               what.data(), CodeName(s.error_code()),
               s.error_message().c_str());
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
    std::fprintf(stderr, "vmmctl: is vmmd running? (--socket PATH)\n");
  }
  return ExitFor(s.error_code());
}

int Usage(absl::string_view message, const Command* c) {
  std::fprintf(stderr, "vmmctl: %.*s\n", static_cast<int>(message.size()),
               message.data());
  std::fprintf(stderr, "try: vmmctl %s--help\n",
               c ? absl::StrCat(c->name, " ").c_str() : "");
  return kUsage;
}

void Deadline(grpc::ClientContext* ctx, absl::Duration d) {
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + d));
}

int ShowVm(const Context& ctx, const v1::VmInfo& vm) {
  if (ctx.json) {
    std::printf("%s\n", ToJson(vm).c_str());
  } else {
    PrintVm(vm);
  }
  return kOk;
}

int RunConsole(const Context& ctx, const Args& args) {
  grpc::ClientContext call;
  auto stream = ctx.stub->StreamConsole(&call);
  v1::ConsoleRequest first;
  first.set_vm_id(args.positional[0]);
  first.set_replay(!args.Has("no-replay"));
  if (!stream->Write(first)) {
    return Fail(stream->Finish(), "console");
  }
  std::atomic<bool> done{false};
  std::thread input;
  if (!args.Has("no-input")) {
    input = std::thread([&] {
      char buf[4096];
      while (!done.load()) {
        pollfd p{0, POLLIN, 0};
        int r = poll(&p, 1, 100);
        if (r <= 0) continue;
        ssize_t n = read(0, buf, sizeof(buf));
        if (n <= 0) break;
        v1::ConsoleRequest req;
        req.set_input(std::string(buf, static_cast<size_t>(n)));
        if (!stream->Write(req)) break;
      }
      stream->WritesDone();
    });
  } else {
    stream->WritesDone();
  }
  v1::ConsoleChunk chunk;
  bool stopped = false;
  while (stream->Read(&chunk)) {
    if (chunk.dropped_bytes() != 0) {
      std::fprintf(stderr, "vmmctl: [%llu bytes of console output lost]\n",
                   static_cast<unsigned long long>(chunk.dropped_bytes()));
    }
    if (!chunk.data().empty()) {
      std::fwrite(chunk.data().data(), 1, chunk.data().size(), stdout);
      std::fflush(stdout);
    }
    if (chunk.vm_stopped()) {
      stopped = true;
      break;
    }
  }
  done = true;
  if (input.joinable()) input.join();
  grpc::Status s = stream->Finish();
  if (!s.ok() && !stopped) return Fail(s, "console");
  return kOk;
}

int Run(const Context& ctx, const Args& args) {
  const std::string cmd = args.command->name;
  const std::string vm_id = args.positional.empty() ? "" : args.positional[0];
  grpc::ClientContext call;
  Deadline(&call, absl::Seconds(60));
  grpc::Status s;

  if (cmd == "create") {
    v1::CreateVmRequest req;
    std::string name = args.Get("name", vm_id);
    if (!vm_id.empty() && args.Has("name") && args.Get("name") != vm_id) {
      return Usage("NAME and --name differ", args.command);
    }
    req.set_vm_id(name);
    if (!args.Has("kernel")) return Usage("--kernel is required", args.command);
    req.mutable_config()->set_kernel(args.Get("kernel"));
    req.mutable_config()->set_initrd(args.Get("initrd"));
    req.mutable_config()->set_cmdline(args.Get("cmdline"));
    if (args.Has("memory")) {
      uint64_t mib = 0;
      if (!ParseMemoryMib(args.Get("memory"), &mib)) {
        return Usage(absl::StrCat("bad --memory \"", args.Get("memory"),
                                  "\" (e.g. 256M, 1G)"),
                     args.command);
      }
      req.mutable_config()->set_memory_mib(mib);
    }
    if (args.Has("vcpus")) {
      uint32_t n = 0;
      if (!absl::SimpleAtoi(args.Get("vcpus"), &n) || n == 0) {
        return Usage("bad --vcpus", args.command);
      }
      req.mutable_config()->set_vcpus(n);
    }
    v1::VmInfo reply;
    s = ctx.stub->CreateVm(&call, req, &reply);
    if (!s.ok()) return Fail(s, "create");
    return ctx.json
               ? ShowVm(ctx, reply)
               : (std::printf("created VM %s\n", reply.vm_id().c_str()), kOk);
  }
  if (cmd == "add-device") {
    v1::AddDeviceRequest req;
    req.set_vm_id(vm_id);
    v1::DeviceSpec* d = req.mutable_device();
    d->set_id(args.Get("id"));
    std::string type = args.Get("type");
    if (type == "blk" || type == "block") {
      d->set_type(v1::DEVICE_TYPE_BLOCK);
      d->mutable_block()->set_image_path(args.Get("image"));
      d->mutable_block()->set_read_only(args.Has("read-only"));
    } else if (type == "net") {
      d->set_type(v1::DEVICE_TYPE_NET);
      d->mutable_net()->set_tap(args.Get("tap"));
      d->mutable_net()->set_mac(args.Get("mac"));
    } else if (type == "console") {
      d->set_type(v1::DEVICE_TYPE_CONSOLE);
      d->mutable_console()->set_output_path(args.Get("output"));
    } else if (type == "rng") {
      d->set_type(v1::DEVICE_TYPE_RNG);
      d->mutable_rng();
    } else {
      return Usage(type.empty() ? "--type is required (blk, net, console, rng)"
                                : absl::StrCat("unknown --type \"", type,
                                               "\" (blk, net, console, rng)"),
                   args.command);
    }
    // Backend flags that do not belong to the type are a mistake.
    const std::map<std::string, std::string> owner = {{"image", "blk"},
                                                      {"read-only", "blk"},
                                                      {"tap", "net"},
                                                      {"mac", "net"},
                                                      {"output", "console"}};
    for (const auto& [flag, t] : owner) {
      if (args.Has(flag) && t != (type == "block" ? "blk" : type)) {
        return Usage(absl::StrCat("--", flag, " is for --type ", t),
                     args.command);
      }
    }
    std::string transport = args.Get("transport", "pci-transitional");
    if (transport == "pci-modern" || transport == "modern") {
      d->set_transport(v1::TRANSPORT_PCI_MODERN);
    } else if (transport == "pci-transitional" || transport == "transitional") {
      d->set_transport(v1::TRANSPORT_PCI_TRANSITIONAL);
    } else if (transport == "pci-legacy" || transport == "legacy") {
      d->set_transport(v1::TRANSPORT_PCI_LEGACY);
    } else if (transport == "pci-legacy-via-admin") {
      d->set_transport(v1::TRANSPORT_PCI_LEGACY_VIA_ADMIN);
    } else {
      return Usage(absl::StrCat("unknown --transport \"", transport,
                                "\" (pci-modern, pci-transitional, "
                                "pci-legacy, pci-legacy-via-admin)"),
                   args.command);
    }
    if (args.Has("queue-size")) {
      uint32_t q = 0;
      if (!absl::SimpleAtoi(args.Get("queue-size"), &q)) {
        return Usage("bad --queue-size", args.command);
      }
      d->set_queue_size(q);
    }
    v1::VmInfo reply;
    s = ctx.stub->AddDevice(&call, req, &reply);
    if (!s.ok()) return Fail(s, "add-device");
    if (ctx.json) return ShowVm(ctx, reply);
    const v1::DeviceInfo& added = reply.devices(reply.devices_size() - 1);
    std::printf(
        "added %s %s (%s) to VM %s\n", TypeName(added.spec().type()).c_str(),
        added.spec().id().c_str(),
        TransportName(added.spec().transport()).c_str(), reply.vm_id().c_str());
    return kOk;
  }
  if (cmd == "remove-device") {
    v1::RemoveDeviceRequest req;
    req.set_vm_id(vm_id);
    req.set_device_id(args.positional[1]);
    v1::VmInfo reply;
    s = ctx.stub->RemoveDevice(&call, req, &reply);
    if (!s.ok()) return Fail(s, cmd);
    return ctx.json ? ShowVm(ctx, reply)
                    : (std::printf("removed %s from VM %s\n",
                                   args.positional[1].c_str(), vm_id.c_str()),
                       kOk);
  }
  if (cmd == "start" || cmd == "pause" || cmd == "resume" || cmd == "get") {
    v1::VmRequest req;
    req.set_vm_id(vm_id);
    v1::VmInfo reply;
    if (cmd == "start") s = ctx.stub->StartVm(&call, req, &reply);
    if (cmd == "pause") s = ctx.stub->PauseVm(&call, req, &reply);
    if (cmd == "resume") s = ctx.stub->ResumeVm(&call, req, &reply);
    if (cmd == "get") s = ctx.stub->GetVm(&call, req, &reply);
    if (!s.ok()) return Fail(s, cmd);
    if (ctx.json || cmd == "get") return ShowVm(ctx, reply);
    std::printf("VM %s: %s\n", reply.vm_id().c_str(),
                StateName(reply.state()).c_str());
    return kOk;
  }
  if (cmd == "stop" || cmd == "wait") {
    uint32_t ms = cmd == "stop" ? 5000 : 60000;
    if (args.Has("timeout") && !ParseTimeoutMs(args.Get("timeout"), &ms)) {
      return Usage(absl::StrCat("bad --timeout \"", args.Get("timeout"),
                                "\" (e.g. 5s, 500ms)"),
                   args.command);
    }
    grpc::ClientContext long_call;
    Deadline(&long_call, absl::Milliseconds(ms) + absl::Seconds(60));
    v1::VmInfo reply;
    if (cmd == "stop") {
      v1::StopVmRequest req;
      req.set_vm_id(vm_id);
      req.set_graceful_timeout_ms(ms);
      s = ctx.stub->StopVm(&long_call, req, &reply);
    } else {
      v1::WaitVmRequest req;
      req.set_vm_id(vm_id);
      req.set_timeout_ms(ms);
      s = ctx.stub->WaitVm(&long_call, req, &reply);
    }
    if (!s.ok()) return Fail(s, cmd);
    if (ctx.json) return ShowVm(ctx, reply);
    std::printf("VM %s: %s", reply.vm_id().c_str(),
                StateName(reply.state()).c_str());
    if (reply.has_exit_code()) std::printf(", exit code %d", reply.exit_code());
    std::printf("\n");
    return kOk;
  }
  if (cmd == "delete") {
    v1::DeleteVmRequest req;
    req.set_vm_id(vm_id);
    req.set_force(args.Has("force"));
    v1::DeleteVmResponse reply;
    s = ctx.stub->DeleteVm(&call, req, &reply);
    if (!s.ok()) return Fail(s, cmd);
    if (ctx.json) {
      std::printf("{}\n");
    } else {
      std::printf("deleted VM %s\n", vm_id.c_str());
    }
    return kOk;
  }
  if (cmd == "list") {
    v1::ListVmsResponse reply;
    s = ctx.stub->ListVms(&call, v1::ListVmsRequest(), &reply);
    if (!s.ok()) return Fail(s, cmd);
    if (ctx.json) {
      std::printf("%s\n", ToJson(reply).c_str());
      return kOk;
    }
    std::printf("%-20s %-8s %-5s %-8s %-8s %s\n", "VM", "STATE", "VCPU",
                "MEMORY", "DEVICES", "KERNEL");
    for (const v1::VmInfo& vm : reply.vms()) {
      std::printf("%-20s %-8s %-5u %-8s %-8d %s\n", vm.vm_id().c_str(),
                  StateName(vm.state()).c_str(), vm.config().vcpus(),
                  absl::StrCat(vm.config().memory_mib(), "M").c_str(),
                  vm.devices_size(), vm.config().kernel().c_str());
    }
    return kOk;
  }
  if (cmd == "metrics") {
    v1::VmRequest req;
    req.set_vm_id(vm_id);
    v1::VmMetrics reply;
    s = ctx.stub->GetMetrics(&call, req, &reply);
    if (!s.ok()) return Fail(s, cmd);
    if (ctx.json) {
      std::printf("%s\n", ToJson(reply).c_str());
      return kOk;
    }
    std::printf(
        "VM %s: run time %.3f s, exits: io %llu, mmio %llu, other %llu\n",
        reply.vm_id().c_str(), static_cast<double>(reply.run_time_ms()) / 1000,
        static_cast<unsigned long long>(reply.exits_io()),
        static_cast<unsigned long long>(reply.exits_mmio()),
        static_cast<unsigned long long>(reply.exits_other()));
    std::printf("  %-10s %-7s %10s %12s %10s %10s\n", "DEVICE", "TYPE",
                "REQUESTS", "BYTES", "KICKS", "IRQS");
    for (const v1::VmMetrics::Device& d : reply.devices()) {
      std::printf("  %-10s %-7s %10llu %12llu %10llu %10llu\n", d.id().c_str(),
                  TypeName(d.type()).c_str(),
                  static_cast<unsigned long long>(d.counters().requests()),
                  static_cast<unsigned long long>(d.counters().bytes()),
                  static_cast<unsigned long long>(d.counters().notifications()),
                  static_cast<unsigned long long>(d.counters().interrupts()));
    }
    return kOk;
  }
  if (cmd == "console") return RunConsole(ctx, args);
  return Usage(absl::StrCat("unhandled command ", cmd), nullptr);
}

}  // namespace

int Main(int argc, char** argv) {
  Args args;
  std::string error = ParseArgs(argc, argv, &args);
  if (!error.empty()) return Usage(error, args.command);
  if (args.Has("help")) {
    if (args.command != nullptr) {
      PrintCommandUsage(std::cout, *args.command);
    } else {
      PrintUsage(std::cout);
    }
    return kOk;
  }
  std::string target;
  if (args.Has("server")) {
    if (args.Has("socket"))
      return Usage("--socket or --server, not both", nullptr);
    target = args.Get("server");
  } else {
    std::string path = args.Get("socket", api::DefaultSocketPath());
    if (path.empty() || path[0] != '/') {
      char cwd[4096];
      if (getcwd(cwd, sizeof(cwd)) == nullptr) return kOtherError;
      path = absl::StrCat(cwd, "/", path);
    }
    target = absl::StrCat("unix:", path);
  }
  Context ctx;
  ctx.json = args.Has("json");
  ctx.stub = v1::VmService::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  return Run(ctx, args);
}

}  // namespace vmmkit::vmmctl

int main(int argc, char** argv) { return vmmkit::vmmctl::Main(argc, argv); }
