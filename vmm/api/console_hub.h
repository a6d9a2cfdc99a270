// vmm/api/console_hub.h: fan-out of one VM's serial console output to any
// number of readers, each at its own position, over a bounded history.
//
//   ConsoleHub hub(/*history_limit=*/1 << 20);
//   vm->SubscribeConsole([&hub](absl::string_view b) { hub.Append(b); });
//   uint64_t pos = hub.StartPosition(/*replay=*/true);
//   ConsoleHub::Chunk c = hub.Read(&pos, absl::Milliseconds(200), 64 << 10);
//   // c.data: new bytes (possibly empty on timeout), c.dropped: bytes this
//   // reader lost because they left the history, c.closed: no more output.
//
// Output is numbered by its absolute byte position since the VM started. The
// hub keeps the last `history_limit` bytes (at least); a reader that falls
// further behind skips ahead and is told how much it missed. Append never
// blocks on a reader (it is called on a vCPU thread).
//
// Thread-safe.
#ifndef VMMKIT_VMM_API_CONSOLE_HUB_H_
#define VMMKIT_VMM_API_CONSOLE_HUB_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace vmmkit::api {

class ConsoleHub {
 public:
  explicit ConsoleHub(size_t history_limit) : limit_(history_limit) {}
  ConsoleHub(const ConsoleHub&) = delete;
  ConsoleHub& operator=(const ConsoleHub&) = delete;

  // New output; wakes readers. Ignored after Close().
  void Append(absl::string_view bytes) ABSL_LOCKS_EXCLUDED(mu_);
  // No more output will come (the VM stopped or was deleted); wakes readers.
  void Close() ABSL_LOCKS_EXCLUDED(mu_);

  // Where a new reader starts: the oldest byte kept (replay) or the end.
  uint64_t StartPosition(bool replay) const ABSL_LOCKS_EXCLUDED(mu_);

  struct Chunk {
    std::string data;      // bytes from *position on, at most max_bytes
    uint64_t dropped = 0;  // bytes skipped because they left the history
    bool closed = false;   // closed and nothing more after *position
  };
  // Waits up to `timeout` for output at or after *position (returns at once
  // if there is some, or if closed) and advances *position past what it
  // returns.
  Chunk Read(uint64_t* position, absl::Duration timeout, size_t max_bytes)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Total bytes appended since construction.
  uint64_t end_position() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const size_t limit_;
  mutable absl::Mutex mu_;
  std::string buffer_ ABSL_GUARDED_BY(mu_);  // bytes [base_, base_ + size)
  uint64_t base_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace vmmkit::api

#endif  // VMMKIT_VMM_API_CONSOLE_HUB_H_
