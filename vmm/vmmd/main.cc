// vmmd: the vmmkit VMM daemon. Serves vmmkit.v1.VmService (vmm/api) on a
// Unix socket (default) or a loopback TCP port; runs several VMs at once.
//
//   vmmd                                  # $XDG_RUNTIME_DIR/vmmkit/vmmd.sock
//   vmmd --listen=unix:/tmp/v/vmmd.sock   # or --listen=127.0.0.1:7777
//
// SIGTERM or SIGINT: stop every VM (graceful request, then forced after
// --stop_timeout), flush their disks, remove the socket, exit 0.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "base/flags_help.h"
#include "vmm/api/server.h"
#include "vmm/api/service.h"
#include "vmm/api/vm_manager.h"
#include "vmm/vm.h"

ABSL_FLAG(std::string, listen, "",
          "unix:PATH or a loopback 127.0.0.1:PORT / [::1]:PORT (PORT 0: any); "
          "default unix:$XDG_RUNTIME_DIR/vmmkit/vmmd.sock "
          "(/run/vmmkit/vmmd.sock as root)");
ABSL_FLAG(int, max_vms, 64, "most VMs at once");
ABSL_FLAG(absl::Duration, stop_timeout, absl::Seconds(5),
          "on SIGTERM, how long each guest gets to stop by itself");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "vmmkit VMM daemon: serves vmmkit.v1.VmService (use vmmctl).\n"
      "  vmmd [--listen=unix:PATH|127.0.0.1:PORT] [--max_vms=N] "
      "[--stop_timeout=5s]");
  vmmkit::HelpListsFlagsOf("vmm/vmmd/main.cc");
  absl::ParseCommandLine(argc, argv);

  // Signals are taken by sigwait below; block them before any thread starts
  // so that every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A client that goes away must not kill the daemon.
  signal(SIGPIPE, SIG_IGN);

  std::string listen = absl::GetFlag(FLAGS_listen);
  if (listen.empty()) {
    listen = absl::StrCat("unix:", vmmkit::api::DefaultSocketPath());
  }
  absl::StatusOr<vmmkit::api::ListenAddress> address =
      vmmkit::api::ParseListenAddress(listen);
  if (!address.ok()) {
    std::fprintf(stderr, "vmmd: %s\n", address.status().ToString().c_str());
    return 2;
  }
  if (absl::GetFlag(FLAGS_max_vms) < 1) {
    std::fprintf(stderr, "vmmd: --max_vms must be at least 1\n");
    return 2;
  }
  std::string why_not;
  if (!vmmkit::vmm::KvmUsable(&why_not)) {
    std::fprintf(stderr,
                 "vmmd: warning: /dev/kvm is not usable (%s); "
                 "CreateVm will fail\n",
                 why_not.c_str());
  }

  vmmkit::api::VmManager manager(
      {.max_vms = absl::GetFlag(FLAGS_max_vms), .console_history = 1 << 20});
  vmmkit::api::VmServiceImpl service(manager);
  int port = 0;
  absl::StatusOr<std::unique_ptr<grpc::Server>> server =
      vmmkit::api::StartServer(service, *address, &port);
  if (!server.ok()) {
    std::fprintf(stderr, "vmmd: %s\n", server.status().ToString().c_str());
    return 1;
  }
  std::string where = address->unix_socket
                          ? address->GrpcTarget()
                          : absl::StrCat(address->host_port.substr(
                                             0, address->host_port.rfind(':')),
                                         ":", port);
  std::fprintf(stderr, "vmmd: listening on %s%s\n", where.c_str(),
               vmmkit::vmm::IsPvm() ? " (KVM is PVM: small guests only)" : "");

  int sig = 0;
  while (sigwait(&signals, &sig) != 0) {
  }
  std::fprintf(stderr, "vmmd: %s: stopping every VM\n", strsignal(sig));
  absl::Status stopped = manager.StopAll(absl::GetFlag(FLAGS_stop_timeout));
  if (!stopped.ok()) {
    std::fprintf(stderr, "vmmd: %s\n", stopped.ToString().c_str());
  }
  // Streams still open (consoles) are cancelled after a short grace.
  (*server)->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(2));
  (*server)->Wait();
  if (address->unix_socket) unlink(address->path.c_str());
  std::fprintf(stderr, "vmmd: exited cleanly\n");
  return stopped.ok() ? 0 : 1;
}
