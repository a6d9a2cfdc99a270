// base/scoped_fd.h: ScopedFd, a move-only owner of one file
// descriptor, closed on destruction.
//
//   ScopedFd fd(eventfd(0, EFD_CLOEXEC));
//   if (!fd.valid()) return ErrnoToStatus(errno, "eventfd");
//   Use(fd.get());                 // still owned
//   int raw = fd.release();        // ownership handed on
//
// Shared by vhost-user/ and vmm/; code in any vmmkit namespace names it
// unqualified.
//
// Thread-compatible.
#ifndef VMMKIT_BASE_SCOPED_FD_H_
#define VMMKIT_BASE_SCOPED_FD_H_

#include <unistd.h>

#include <utility>

namespace vmmkit {

class ScopedFd {
 public:
  ScopedFd() = default;
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(ScopedFd&& other) noexcept : fd_(other.release()) {}
  ScopedFd& operator=(ScopedFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() { reset(); }

  bool valid() const { return fd_ >= 0; }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace vmmkit

#endif  // VMMKIT_BASE_SCOPED_FD_H_
