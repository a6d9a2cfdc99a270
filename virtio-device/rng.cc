#include "virtio-device/rng.h"

#include <sys/random.h>

#include <cerrno>

#include "base/status.h"
#include "virtio-device/chain_io.h"

namespace vmmkit::virtio {

absl::Status RngDevice::Activate(DeviceContext& context) {
  context_ = &context;
  return absl::OkStatus();
}

void RngDevice::ProcessQueue(uint16_t index) {
  if (context_ == nullptr || index != 0) return;
  SplitQueue* q = context_->queue(0);
  if (q == nullptr) return;
  bool added = false;
  while (std::optional<DescriptorChain> chain = q->Pop()) {
    absl::StatusOr<Request> req = Request::Collect(*chain, context_->memory());
    if (!req.ok()) {
      context_->MarkNeedsReset(req.status());
      return;
    }
    ChainWriter& out = req->writer();
    absl::Status error;
    absl::StatusOr<uint64_t> filled =
        out.FillSpans(out.remaining(), [&](absl::Span<uint8_t> piece) {
          size_t done = 0;
          while (done < piece.size()) {
            ssize_t n = getrandom(piece.data() + done, piece.size() - done, 0);
            if (n < 0) {
              if (errno == EINTR) continue;
              error = ErrnoToStatus(errno, "getrandom");
              break;
            }
            done += static_cast<size_t>(n);
          }
          return done;
        });
    if (!error.ok() || !filled.ok()) {
      context_->MarkNeedsReset(error.ok() ? filled.status() : error);
      return;
    }
    ++stats_.requests;
    stats_.bytes += out.written();
    q->AddUsed(req->head(), out.written());
    added = true;
  }
  if (added) context_->NotifyUsed(0);
}

}  // namespace vmmkit::virtio
