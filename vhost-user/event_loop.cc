#include "vhost-user/event_loop.h"

#include <sys/epoll.h>

#include <cerrno>

#include "absl/strings/str_format.h"
#include "base/status.h"

namespace vmmkit::vhost_user {

namespace {
// epoll_event.data: extras are tagged with the top bit, watches are indices.
constexpr uint64_t kExtraTag = uint64_t{1} << 63;
}  // namespace

absl::StatusOr<std::unique_ptr<EventLoop>> EventLoop::Create() {
  std::unique_ptr<EventLoop> loop(new EventLoop());
  loop->epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
  if (!loop->epoll_.valid()) return ErrnoToStatus(errno, "epoll_create1");
  return loop;
}

absl::Status EventLoop::AddFd(int fd, std::function<void()> on_readable) {
  extras_.push_back({fd, std::move(on_readable)});
  registered_generation_ = ~uint64_t{0};  // rebuild next round
  return absl::OkStatus();
}

absl::Status EventLoop::Register(Backend& backend) {
  std::vector<Backend::Watch> want = backend.watches();
  if (want == registered_ &&
      backend.watch_generation() == registered_generation_) {
    return absl::OkStatus();
  }
  // A fresh epoll set: closed fds vanish from the old one on their own, and
  // a reused fd number must not inherit a stale registration.
  ScopedFd epoll(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll.valid()) return ErrnoToStatus(errno, "epoll_create1");
  for (size_t i = 0; i < extras_.size(); ++i) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kExtraTag | i;
    if (epoll_ctl(epoll.get(), EPOLL_CTL_ADD, extras_[i].fd, &ev) != 0) {
      return ErrnoToStatus(errno, "epoll_ctl");
    }
  }
  for (size_t i = 0; i < want.size(); ++i) {
    epoll_event ev{};
    ev.events = EPOLLIN | (want[i].edge_triggered ? EPOLLET : 0);
    ev.data.u64 = i;
    if (epoll_ctl(epoll.get(), EPOLL_CTL_ADD, want[i].fd, &ev) != 0) {
      const absl::Status s = ErrnoToStatus(
          errno, absl::StrFormat("cannot poll fd %d", want[i].fd));
      if (want[i].source == Backend::Source::kListen) return s;
      // A device fd the kernel cannot poll (a console reading a regular
      // file or /dev/null): left out; the device still reads it when the
      // driver kicks.
      if (want[i].source == Backend::Source::kDevice) continue;
      // A front-end's fd that cannot be polled: drop the front-end, then
      // build the set again without it.
      backend.Disconnect(s);
      return Register(backend);
    }
  }
  epoll_ = std::move(epoll);
  registered_ = std::move(want);
  registered_generation_ = backend.watch_generation();
  return absl::OkStatus();
}

absl::Status EventLoop::RunOnce(Backend& backend, int timeout_ms) {
  VMMKIT_RETURN_IF_ERROR(Register(backend));
  epoll_event events[16];
  const int n = epoll_wait(epoll_.get(), events, 16, timeout_ms);
  if (n < 0) {
    if (errno == EINTR) return absl::OkStatus();
    return ErrnoToStatus(errno, "epoll_wait");
  }
  const uint64_t generation = backend.watch_generation();
  for (int i = 0; i < n && !stopped_; ++i) {
    const uint64_t tag = events[i].data.u64;
    if (tag & kExtraTag) {
      const size_t index = static_cast<size_t>(tag & ~kExtraTag);
      if (index < extras_.size()) extras_[index].callback();
      continue;
    }
    if (tag >= registered_.size()) continue;
    backend.OnReady(registered_[tag]);
    // The watches may be gone: the rest waits for the next round.
    if (backend.watch_generation() != generation) break;
  }
  return absl::OkStatus();
}

}  // namespace vmmkit::vhost_user
