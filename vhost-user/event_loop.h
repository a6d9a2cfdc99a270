// vhost-user/event_loop.h: EventLoop, a small epoll loop that drives one
// vhost-user Backend (and a few extra fds of the caller's, such as a daemon's
// signalfd). The Backend itself never blocks and never polls: a VMM with its
// own loop polls Backend::watches() instead and does not need this class.
//
//   VMMKIT_ASSIGN_OR_RETURN(std::unique_ptr<EventLoop> loop,
//                           EventLoop::Create());
//   loop->AddFd(signal_fd, [&] { loop->Stop(); });
//   while (!loop->stopped()) {
//     VMMKIT_RETURN_IF_ERROR(loop->RunOnce(*backend, /*timeout_ms=*/-1));
//   }
//
// Each round re-registers the Backend's fds when its watch list (or its
// generation, which moves whenever an fd was closed or replaced) changed,
// waits, and dispatches; after a dispatch that changed the list the rest of
// that round's events are dropped (they may name fds that are gone) and
// arrive again next round. An fd the kernel refuses to poll (a regular file
// handed over as a kick fd) disconnects the front-end; a device fd it refuses
// (a console reading /dev/null or a file) is left out of the set.
//
// Thread-compatible: one thread runs the loop; Stop() from that thread (a
// callback) or use a signalfd.
#ifndef VMMKIT_VHOST_USER_EVENT_LOOP_H_
#define VMMKIT_VHOST_USER_EVENT_LOOP_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/scoped_fd.h"
#include "vhost-user/backend.h"

namespace vmmkit::vhost_user {

class EventLoop {
 public:
  static absl::StatusOr<std::unique_ptr<EventLoop>> Create();

  // Calls `on_readable` whenever `fd` (owned by the caller, open for the
  // loop's lifetime) is readable. Level-triggered.
  absl::Status AddFd(int fd, std::function<void()> on_readable);
  // Calls `on_writable` when `fd` (owned by the caller, open for the loop's
  // lifetime) becomes writable: edge-triggered, so an fd that stays writable
  // does not spin the loop. An fd the kernel cannot poll (a regular file,
  // /dev/null: never full) is left out. For a device's output that can fill
  // up (ConsoleDevice::output_fd(): pending output is written, and held-back
  // transmit chains taken, only when the device is called again). An fd
  // number must not be added twice, nor be one of the Backend's: pass a dup.
  absl::Status AddWritableFd(int fd, std::function<void()> on_writable);

  // One round: waits up to `timeout_ms` (-1: forever) and dispatches.
  // Errors only for epoll itself failing.
  absl::Status RunOnce(Backend& backend, int timeout_ms);

  void Stop() { stopped_ = true; }
  bool stopped() const { return stopped_; }

 private:
  EventLoop() = default;
  absl::Status Register(Backend& backend);

  struct Extra {
    int fd;
    std::function<void()> callback;
    uint32_t events;
    bool optional;  // left out if epoll refuses it
  };
  ScopedFd epoll_;
  std::vector<Extra> extras_;
  std::vector<Backend::Watch> registered_;
  uint64_t registered_generation_ = ~uint64_t{0};
  bool stopped_ = false;
};

}  // namespace vmmkit::vhost_user

#endif  // VMMKIT_VHOST_USER_EVENT_LOOP_H_
