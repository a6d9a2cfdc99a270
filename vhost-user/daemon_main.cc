// vmmkit-vhost-user: serves one vmmkit virtio device over a vhost-user socket.
//
//   vmmkit-vhost-user --socket=PATH --device=blk|net|rng|console [flags]
//     blk:     --image=PATH [--read-only] [--num-queues=1]
//     net:     --tap=NAME [--mac=52:54:00:12:34:56]
//     rng:     (none)
//     console: --input-fd=N --output-fd=N (defaults 0 and 1) or
//              --output-file=PATH
//     --queue-size=N (the device's maximum), --once (exit after the first
//     front-end disconnects), --help
//
// Creates the socket (removing a stale one), prints
// "vmmkit-vhost-user: listening on PATH" to stderr when ready, serves one
// front-end at a time, and on SIGTERM/SIGINT flushes the device, removes the
// socket and exits 0. Bad flags: a message and exit status 2.
#include <fcntl.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "base/status.h"
#include "vhost-user/backend.h"
#include "vhost-user/event_loop.h"
#include "virtio-device/blk.h"
#include "virtio-device/console.h"
#include "virtio-device/net.h"
#include "virtio-device/rng.h"
#include "virtio-device/tap.h"

ABSL_FLAG(std::string, socket, "", "vhost-user socket path to create");
ABSL_FLAG(std::string, device, "", "blk, net, rng or console");
ABSL_FLAG(std::string, image, "", "blk: raw image file or block device");
ABSL_FLAG(bool, read_only, false, "blk: open the image read-only");
ABSL_FLAG(int32_t, num_queues, 1, "blk: request queues (1..64)");
ABSL_FLAG(std::string, tap, "", "net: TAP interface name");
ABSL_FLAG(std::string, mac, "", "net: MAC address (default: random)");
ABSL_FLAG(int32_t, input_fd, 0, "console: input fd (-1: none)");
ABSL_FLAG(int32_t, output_fd, 1, "console: output fd (-1: none)");
ABSL_FLAG(std::string, output_file, "", "console: append output to a file");
ABSL_FLAG(int32_t, queue_size, 0, "the device's maximum queue size");
ABSL_FLAG(bool, once, false, "exit after the first front-end disconnects");

namespace {

using vmmkit::vhost_user::Backend;
using vmmkit::vhost_user::EventLoop;
namespace virtio = vmmkit::virtio;

constexpr char kUsage[] =
    "usage: vmmkit-vhost-user --socket=PATH --device=blk|net|rng|console "
    "[device flags]\n"
    "  blk:     --image=PATH [--read-only] [--num-queues=1]\n"
    "  net:     --tap=NAME [--mac=52:54:00:12:34:56]\n"
    "  rng:     (none)\n"
    "  console: --input-fd=N --output-fd=N (defaults 0 and 1) or "
    "--output-file=PATH\n"
    "  --queue-size=N   the device's maximum queue size\n"
    "  --once           exit after the first front-end disconnects\n"
    "  --help           this text\n";

constexpr const char* kFlagNames[] = {
    "socket", "device",   "image",     "read_only",   "num_queues", "tap",
    "mac",    "input_fd", "output_fd", "output_file", "queue_size", "once"};

[[noreturn]] void Usage(const std::string& error) {
  std::fprintf(stderr, "vmmkit-vhost-user: %s\n%s", error.c_str(), kUsage);
  std::exit(2);
}

// Sets the flags from argv through Abseil's flag registry, so that a bad
// flag is exit status 2 with a message (absl::ParseCommandLine exits 1).
// Accepts --name=value, --name value is not accepted; bools also as --name.
// Dashes and underscores in names are the same.
void ParseFlags(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h" || arg == "-help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (arg.substr(0, 2) != "--" || arg.size() == 2) {
      Usage(absl::StrFormat("unexpected argument '%s'", arg));
    }
    arg.remove_prefix(2);
    std::string name(arg.substr(0, arg.find('=')));
    const bool has_value = arg.find('=') != absl::string_view::npos;
    std::string value =
        has_value ? std::string(arg.substr(arg.find('=') + 1)) : "";
    for (char& c : name) {
      if (c == '-') c = '_';
    }
    bool known = false;
    for (const char* n : kFlagNames) known = known || name == n;
    absl::CommandLineFlag* flag =
        known ? absl::FindCommandLineFlag(name) : nullptr;
    if (flag == nullptr) Usage(absl::StrFormat("unknown flag '%s'", argv[i]));
    if (!has_value) {
      if (!flag->IsOfType<bool>()) {
        Usage(absl::StrFormat("flag '%s' needs a value (--%s=...)", argv[i],
                              arg));
      }
      value = "true";
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      Usage(absl::StrFormat("bad value for '%s': %s", argv[i], error));
    }
  }
}

std::optional<virtio::MacAddress> ParseMac(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  if (parts.size() != 6) return std::nullopt;
  virtio::MacAddress mac;
  for (size_t i = 0; i < 6; ++i) {
    int v = 0;
    if (parts[i].size() != 2 || !absl::SimpleHexAtoi(parts[i], &v)) {
      return std::nullopt;
    }
    mac[i] = static_cast<uint8_t>(v);
  }
  return mac;
}

struct Device {
  std::unique_ptr<virtio::VirtioDevice> device;
  int output_file_fd = -1;
};

// Builds the device the flags ask for; bad flags exit 2, failures to open
// what they name exit 1.
Device MakeDevice() {
  const std::string kind = absl::GetFlag(FLAGS_device);
  const int32_t queue_size = absl::GetFlag(FLAGS_queue_size);
  if (queue_size < 0 || queue_size > 32768 ||
      (queue_size & (queue_size - 1)) != 0) {
    Usage(absl::StrFormat("--queue-size=%d is not a power of two in 1..32768",
                          queue_size));
  }
  auto fail = [](const absl::Status& s) {
    std::fprintf(stderr, "vmmkit-vhost-user: %s\n",
                 std::string(s.message()).c_str());
    std::exit(1);
  };
  Device d;
  if (kind == "blk") {
    if (absl::GetFlag(FLAGS_image).empty()) Usage("--device=blk needs --image");
    const int32_t nq = absl::GetFlag(FLAGS_num_queues);
    if (nq < 1 || nq > 64) Usage("--num-queues must be 1..64");
    virtio::BlockDevice::Options o;
    o.path = absl::GetFlag(FLAGS_image);
    o.read_only = absl::GetFlag(FLAGS_read_only);
    o.serial = "vmmkit-vhost-user";
    o.num_queues = static_cast<uint32_t>(nq);
    if (queue_size != 0) {
      if (queue_size < 4) Usage("blk needs --queue-size >= 4");
      o.queue_size = static_cast<uint32_t>(queue_size);
    }
    auto blk = virtio::BlockDevice::Create(o);
    if (!blk.ok()) fail(blk.status());
    d.device = std::move(*blk);
  } else if (kind == "net") {
    if (absl::GetFlag(FLAGS_tap).empty()) Usage("--device=net needs --tap");
    virtio::NetDevice::Options o;
    if (!absl::GetFlag(FLAGS_mac).empty()) {
      o.mac = ParseMac(absl::GetFlag(FLAGS_mac));
      if (!o.mac) Usage("--mac must look like 52:54:00:12:34:56");
    }
    if (queue_size != 0) o.queue_size = static_cast<uint16_t>(queue_size);
    auto tap = virtio::TapBackend::Create(absl::GetFlag(FLAGS_tap));
    if (!tap.ok()) fail(tap.status());
    auto net = virtio::NetDevice::Create(std::move(*tap), o);
    if (!net.ok()) {
      if (net.status().code() == absl::StatusCode::kInvalidArgument) {
        Usage(std::string(net.status().message()));
      }
      fail(net.status());
    }
    d.device = std::move(*net);
  } else if (kind == "rng") {
    if (queue_size != 0 && queue_size != virtio::RngDevice::kQueueSize) {
      Usage(absl::StrFormat("rng's queue size is fixed at %u",
                            virtio::RngDevice::kQueueSize));
    }
    d.device = std::make_unique<virtio::RngDevice>();
  } else if (kind == "console") {
    virtio::ConsoleDevice::Options o;
    o.input_fd = absl::GetFlag(FLAGS_input_fd);
    o.output_fd = absl::GetFlag(FLAGS_output_fd);
    const std::string file = absl::GetFlag(FLAGS_output_file);
    if (!file.empty()) {
      d.output_file_fd =
          open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (d.output_file_fd < 0) {
        fail(vmmkit::ErrnoToStatus(errno, "open " + file));
      }
      o.output_fd = d.output_file_fd;
    }
    if (queue_size != 0) o.queue_size = static_cast<uint16_t>(queue_size);
    auto console = virtio::ConsoleDevice::Create(o);
    if (!console.ok()) fail(console.status());
    d.device = std::move(*console);
  } else {
    Usage(kind.empty() ? "--device is required"
                       : absl::StrFormat("unknown --device=%s", kind));
  }
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  ParseFlags(argc, argv);
  const std::string path = absl::GetFlag(FLAGS_socket);
  if (path.empty()) Usage("--socket is required");
  // A front-end gone mid-write must not kill the daemon.
  signal(SIGPIPE, SIG_IGN);
  Device d = MakeDevice();

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  const int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) {
    std::perror("vmmkit-vhost-user: signalfd");
    return 1;
  }

  Backend::Options options;
  options.log = [](const std::string& line) {
    std::fprintf(stderr, "vmmkit-vhost-user: %s\n", line.c_str());
  };
  auto backend = Backend::Create(*d.device, options);
  if (!backend.ok()) {
    std::fprintf(stderr, "vmmkit-vhost-user: %s\n",
                 std::string(backend.status().message()).c_str());
    return 1;
  }
  if (absl::Status s = (*backend)->Listen(path); !s.ok()) {
    std::fprintf(stderr, "vmmkit-vhost-user: %s\n",
                 std::string(s.message()).c_str());
    return 1;
  }
  auto loop = EventLoop::Create();
  if (!loop.ok()) {
    std::fprintf(stderr, "vmmkit-vhost-user: %s\n",
                 std::string(loop.status().message()).c_str());
    return 1;
  }
  EventLoop& l = **loop;
  (void)l.AddFd(sfd, [&l, sfd] {
    signalfd_siginfo info;
    while (read(sfd, &info, sizeof(info)) == sizeof(info)) l.Stop();
  });
  std::fprintf(stderr, "vmmkit-vhost-user: listening on %s\n", path.c_str());
  std::fflush(stderr);

  const bool once = absl::GetFlag(FLAGS_once);
  int status = 0;
  while (!l.stopped()) {
    if (absl::Status s = l.RunOnce(**backend, -1); !s.ok()) {
      std::fprintf(stderr, "vmmkit-vhost-user: %s\n",
                   std::string(s.message()).c_str());
      status = 1;
      break;
    }
    if (once && (*backend)->stats().disconnects > 0) break;
  }
  (*backend)->Disconnect(absl::OkStatus());
  if (absl::Status s = d.device->Flush(); !s.ok()) {
    std::fprintf(stderr, "vmmkit-vhost-user: flush: %s\n",
                 std::string(s.message()).c_str());
    status = 1;
  }
  backend->reset();  // closes and removes the socket
  d.device.reset();
  if (d.output_file_fd >= 0) close(d.output_file_fd);
  close(sfd);
  return status;
}
