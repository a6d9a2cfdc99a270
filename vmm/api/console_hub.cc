#include "vmm/api/console_hub.h"

#include <algorithm>

namespace vmmkit::api {

void ConsoleHub::Append(absl::string_view bytes) {
  if (bytes.empty()) return;
  absl::MutexLock lock(&mu_);
  if (closed_) return;
  buffer_.append(bytes.data(), bytes.size());
  // Trim in big steps so that appending stays amortized O(1): keep between
  // limit_ and 2 * limit_ bytes.
  if (buffer_.size() > 2 * limit_) {
    size_t cut = buffer_.size() - limit_;
    buffer_.erase(0, cut);
    base_ += cut;
  }
}

void ConsoleHub::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

uint64_t ConsoleHub::StartPosition(bool replay) const {
  absl::MutexLock lock(&mu_);
  return replay ? base_ : base_ + buffer_.size();
}

uint64_t ConsoleHub::end_position() const {
  absl::MutexLock lock(&mu_);
  return base_ + buffer_.size();
}

ConsoleHub::Chunk ConsoleHub::Read(uint64_t* position, absl::Duration timeout,
                                   size_t max_bytes) {
  Chunk chunk;
  absl::MutexLock lock(&mu_);
  const uint64_t* pos = position;
  auto ready = [this, pos]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closed_ || *pos < base_ + buffer_.size();
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  uint64_t end = base_ + buffer_.size();
  if (*position > end) *position = end;  // a position from the future
  if (*position < base_) {
    chunk.dropped = base_ - *position;
    *position = base_;
  }
  size_t n = static_cast<size_t>(
      std::min<uint64_t>(end - *position, static_cast<uint64_t>(max_bytes)));
  chunk.data.assign(buffer_, static_cast<size_t>(*position - base_), n);
  *position += n;
  chunk.closed = closed_ && *position == end;
  return chunk;
}

}  // namespace vmmkit::api
