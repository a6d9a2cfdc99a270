#include "virtio-device/console.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "base/status.h"

namespace vmmkit::virtio {

namespace {

constexpr uint32_t kConfigCols = offsetof(VirtioConsoleConfig, cols);
constexpr uint32_t kConfigRows = offsetof(VirtioConsoleConfig, rows);
constexpr uint32_t kConfigMaxPorts =
    offsetof(VirtioConsoleConfig, max_nr_ports);
constexpr uint32_t kConfigEmergWr = offsetof(VirtioConsoleConfig, emerg_wr);

absl::Status SetNonBlocking(int fd) {
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0) {
    return vmmkit::ErrnoToStatus(errno,
                                 absl::StrFormat("fcntl(%d, F_GETFL)", fd));
  }
  if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    return vmmkit::ErrnoToStatus(errno,
                                 absl::StrFormat("fcntl(%d, F_SETFL)", fd));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ConsoleDevice>> ConsoleDevice::Create(
    const Options& options) {
  const uint16_t qs = options.queue_size;
  if (qs == 0 || qs > SplitQueue::kMaxQueueSize || (qs & (qs - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("queue size %u is not a power of two in 1..32768", qs));
  }
  bool out_is_socket = false;
  if (options.input_fd >= 0) {
    VMMKIT_RETURN_IF_ERROR(SetNonBlocking(options.input_fd));
  }
  if (options.output_fd >= 0) {
    VMMKIT_RETURN_IF_ERROR(SetNonBlocking(options.output_fd));
    struct stat st;
    if (fstat(options.output_fd, &st) == 0) {
      out_is_socket = S_ISSOCK(st.st_mode);
    }
  }
  return std::unique_ptr<ConsoleDevice>(
      new ConsoleDevice(options, out_is_socket));
}

ConsoleDevice::ConsoleDevice(const Options& options, bool out_is_socket)
    : queue_sizes_{options.queue_size, options.queue_size},
      in_fd_(options.input_fd),
      out_fd_(options.output_fd),
      out_is_socket_(out_is_socket),
      emergency_write_(options.emergency_write),
      config_(sizeof(VirtioConsoleConfig)),
      input_closed_(options.input_fd < 0) {
  config_.DeclareField(kConfigCols, 2);
  config_.DeclareField(kConfigRows, 2);
  config_.DeclareField(kConfigMaxPorts, 4);
  config_.DeclareField(kConfigEmergWr, 4);
  config_.SetU16(kConfigCols, options.cols);
  config_.SetU16(kConfigRows, options.rows);
  config_.SetU32(kConfigMaxPorts, 1);
}

Features ConsoleDevice::offered_features() const {
  Features f =
      Features::Of({kFVersion1, kFEventIdx, kFIndirectDesc, kConsoleFSize});
  if (emergency_write_) f.Set(kConsoleFEmergWrite);
  return f;
}

uint16_t ConsoleDevice::cols() const { return config_.U16(kConfigCols); }
uint16_t ConsoleDevice::rows() const { return config_.U16(kConfigRows); }

void ConsoleDevice::ReadConfig(uint32_t offset, absl::Span<uint8_t> data,
                               Endian endian) {
  config_.Read(offset, data, endian);
}

void ConsoleDevice::WriteConfig(uint32_t offset, absl::Span<const uint8_t> data,
                                Endian endian) {
  // Only emerg_wr is writable. §5.3.5.1: "The device MUST allow a write to
  // emerg_wr, even on an unconfigured device" and "SHOULD transmit the lower
  // byte written to emerg_wr to an appropriate log or output method".
  // The character is emerg_wr's least significant byte, which sits at the
  // field's first byte for a little-endian driver and its last for a
  // big-endian legacy one; a write that does not cover it sends nothing.
  const uint32_t low_byte = endian == Endian::kBig
                                ? kConfigEmergWr + sizeof(uint32_t) - 1
                                : kConfigEmergWr;
  if (!emergency_write_ || offset > low_byte ||
      offset + data.size() <= low_byte) {
    return;
  }
  const std::vector<uint8_t> image = config_.ApplyWrite(offset, data, endian);
  const uint8_t c = image[kConfigEmergWr];
  ++stats_.emergency_bytes;
  QueueOutput(absl::MakeConstSpan(&c, 1));
}

void ConsoleDevice::SetSize(uint16_t cols, uint16_t rows) {
  if (cols == this->cols() && rows == this->rows()) return;
  config_.SetU16(kConfigCols, cols);
  config_.SetU16(kConfigRows, rows);
  if (context_ != nullptr && size_negotiated_) context_->NotifyConfigChange();
}

absl::Status ConsoleDevice::Activate(DeviceContext& context) {
  context_ = &context;
  size_negotiated_ = context.features().Has(kConsoleFSize);
  stopped_ = false;
  tx_current_.reset();
  // Input may have waited for a driver.
  ProcessRx();
  return absl::OkStatus();
}

void ConsoleDevice::Reset() {
  // Output already taken from the driver stays queued for the fd; a chain
  // only partly taken is the old driver's and is forgotten.
  context_ = nullptr;
  size_negotiated_ = false;
  stopped_ = false;
  tx_current_.reset();
}

void ConsoleDevice::Fail(const absl::Status& why) {
  stopped_ = true;
  tx_current_.reset();
  if (context_ != nullptr) context_->MarkNeedsReset(why);
}

void ConsoleDevice::ProcessQueue(uint16_t index) {
  if (context_ == nullptr || stopped_) return;
  if (index == kTransmitQueue) {
    ProcessTx();
  } else if (index == kReceiveQueue) {
    ProcessRx();  // buffers posted: input may be waiting for them
  }
}

std::vector<int> ConsoleDevice::backend_fds() const {
  if (input_closed_) return {};
  return {in_fd_};
}

void ConsoleDevice::ProcessBackend() {
  FlushOutput();
  if (context_ == nullptr || stopped_) return;
  ProcessTx();  // chains held back while the output buffer was full
  if (!stopped_) ProcessRx();
}

void ConsoleDevice::QueueOutput(absl::Span<const uint8_t> bytes) {
  if (out_fd_ < 0 || !output_status_.ok() ||
      output_pending() + bytes.size() > kMaxPendingOutput) {
    stats_.tx_dropped += bytes.size();
    return;
  }
  if (out_head_ > 0) {
    out_.erase(out_.begin(), out_.begin() + static_cast<ptrdiff_t>(out_head_));
    out_head_ = 0;
  }
  out_.insert(out_.end(), bytes.begin(), bytes.end());
  FlushOutput();
}

bool ConsoleDevice::FlushOutput() {
  while (out_head_ < out_.size()) {
    const uint8_t* p = out_.data() + out_head_;
    const size_t n = out_.size() - out_head_;
    const ssize_t w = out_is_socket_ ? send(out_fd_, p, n, MSG_NOSIGNAL)
                                     : write(out_fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
      // The fd is gone for good: what waits is lost, and so is what comes.
      output_status_ = vmmkit::ErrnoToStatus(errno, "console output");
      stats_.tx_dropped += n;
      out_.clear();
      out_head_ = 0;
      return true;
    }
    if (static_cast<size_t>(w) < n) ++stats_.partial_writes;
    out_head_ += static_cast<size_t>(w);
    stats_.tx_bytes += static_cast<uint64_t>(w);
  }
  out_.clear();
  out_head_ = 0;
  return true;
}

bool ConsoleDevice::TakeTxChains(SplitQueue& q, bool& added) {
  for (;;) {
    if (!tx_current_.has_value()) {
      std::optional<DescriptorChain> chain = q.Pop();
      if (!chain.has_value()) {
        if (q.broken()) Fail(q.status());
        return true;
      }
      absl::StatusOr<Request> req =
          Request::Collect(*chain, context_->memory());
      if (!req.ok()) {
        Fail(Annotate(req.status(), "virtio-console transmit chain"));
        return true;
      }
      // §5.3.6.1: "The driver MUST NOT put a device-writable buffer in a
      // transmitq."
      if (req->num_writable() != 0) {
        Fail(absl::InvalidArgumentError(
            "virtio-console transmit chain with device-writable buffers"));
        return true;
      }
      tx_current_.emplace(*std::move(req));
    }
    ChainReader& in = tx_current_->reader();
    while (in.remaining() > 0) {
      if (out_fd_ < 0 || !output_status_.ok()) {
        stats_.tx_dropped += in.remaining();
        (void)in.Skip(in.remaining());
        break;
      }
      if (output_pending() >= kMaxPendingOutput && !FlushOutput()) {
        return false;  // the fd is full: wait for it
      }
      if (out_head_ > 0) {
        out_.erase(out_.begin(),
                   out_.begin() + static_cast<ptrdiff_t>(out_head_));
        out_head_ = 0;
      }
      const size_t take = static_cast<size_t>(
          std::min<uint64_t>(in.remaining(), kMaxPendingOutput - out_.size()));
      const size_t at = out_.size();
      out_.resize(at + take);
      if (absl::Status s = in.Read(absl::MakeSpan(out_.data() + at, take));
          !s.ok()) {
        out_.resize(at);
        Fail(Annotate(s, "virtio-console transmit chain"));
        return true;
      }
      FlushOutput();
    }
    // §5.3.6: the device writes nothing into a transmit buffer.
    q.PushUsed(tx_current_->head(), 0);
    ++stats_.tx_chains;
    added = true;
    tx_current_.reset();
  }
}

void ConsoleDevice::ProcessTx() {
  SplitQueue* q = context_->queue(kTransmitQueue);
  if (q == nullptr) return;
  bool added = false;
  bool blocked = false;
  // Drain, then ask for notifications again; chains published in between
  // get no notification and are taken now.
  do {
    q->DisableNotification();
    blocked = !TakeTxChains(*q, added);
  } while (!blocked && !stopped_ && q->EnableNotification());
  // While blocked on the output fd, the driver's kicks are not needed:
  // ProcessBackend() resumes when the fd drains.
  if (added) {
    q->PublishUsed();
    context_->NotifyUsed(kTransmitQueue);
  }
}

void ConsoleDevice::ProcessRx() {
  if (input_closed_) return;
  SplitQueue* q = context_->queue(kReceiveQueue);
  if (q == nullptr) return;
  bool added = false;
  while (!stopped_ && !input_closed_) {
    std::optional<DescriptorChain> chain = q->Pop();
    if (!chain.has_value()) {
      if (q->broken()) {
        Fail(q->status());
        break;
      }
      // Input may be waiting with nowhere to go: ask for a kick when
      // buffers are posted (and take any posted meanwhile).
      if (!q->EnableNotification()) break;
      continue;
    }
    absl::StatusOr<Request> req = Request::Collect(*chain, context_->memory());
    if (!req.ok()) {
      Fail(Annotate(req.status(), "virtio-console receive chain"));
      break;
    }
    // §5.3.6.1: "The driver MUST NOT put a device-readable buffer in a
    // receiveq."
    if (req->num_readable() != 0 || req->writable_bytes() == 0) {
      Fail(absl::InvalidArgumentError(
          "virtio-console receive chain with device-readable buffers or no "
          "room"));
      break;
    }
    ChainWriter& out = req->writer();
    int error = 0;
    bool eof = false;
    absl::StatusOr<uint64_t> filled =
        out.FillSpans(out.remaining(), [&](absl::Span<uint8_t> piece) {
          for (;;) {
            const ssize_t n = read(in_fd_, piece.data(), piece.size());
            if (n > 0) return static_cast<size_t>(n);
            if (n == 0) {
              eof = true;
            } else if (errno == EINTR) {
              continue;
            } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
              error = errno;
            }
            return size_t{0};
          }
        });
    if (!filled.ok()) {
      Fail(Annotate(filled.status(), "virtio-console receive chain"));
      break;
    }
    if (error != 0 || eof) {
      input_closed_ = true;
      input_status_ = error != 0 ? vmmkit::ErrnoToStatus(error, "console input")
                                 : absl::OutOfRangeError("console input ended");
    }
    if (*filled == 0) {
      q->Undo();  // nothing to read now: the buffer waits for input
      break;
    }
    q->PushUsed(req->head(), static_cast<uint32_t>(*filled));
    stats_.rx_bytes += *filled;
    ++stats_.rx_chains;
    added = true;
    // A short read means the fd is drained for now.
    if (*filled < req->writable_bytes()) break;
  }
  if (added) {
    q->PublishUsed();
    context_->NotifyUsed(kReceiveQueue);
  }
}

}  // namespace vmmkit::virtio
