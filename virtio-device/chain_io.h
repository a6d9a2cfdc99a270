// virtio-device/chain_io.h: reading a request out of a descriptor chain and
// writing the response into it, across however many buffers the driver used.
//
//   absl::StatusOr<Request> req = Request::Collect(*chain, memory);
//   if (!req.ok()) { ctx.MarkNeedsReset(req.status()); ... }
//   VMMKIT_ASSIGN_OR_RETURN(BlkReqHeader hdr,
//   req->reader().ReadObj<BlkReqHeader>());
//   ... req->writer().Write(data) ...
//   queue.AddUsed(req->head(), req->writer().written());
//
// A Request walks the whole chain once (DescriptorChain has already checked
// every descriptor against guest memory and the readable-then-writable order),
// keeping up to 16 descriptors inline and allocating only for longer chains.
// Thread-compatible.
#ifndef VMMKIT_VIRTIO_DEVICE_CHAIN_IO_H_
#define VMMKIT_VIRTIO_DEVICE_CHAIN_IO_H_

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "virtqueue/guest_memory.h"
#include "virtqueue/split_queue.h"

namespace vmmkit::virtio {

using virtqueue::Descriptor;
using virtqueue::DescriptorChain;

using DescriptorList = absl::InlinedVector<Descriptor, 16>;

// Sequential reads from the device-readable buffers of a chain.
class ChainReader {
 public:
  ChainReader(const virtqueue::GuestMemory* memory,
              absl::Span<const Descriptor> descs);

  // Bytes left to read.
  uint64_t remaining() const { return remaining_; }
  // Fills `out` completely: kOutOfRange (nothing consumed) if fewer bytes
  // remain.
  absl::Status Read(absl::Span<uint8_t> out);
  template <typename T>
  absl::StatusOr<T> ReadObj() {
    static_assert(std::is_trivially_copyable_v<T>);
    T value;
    absl::Status s =
        Read(absl::MakeSpan(reinterpret_cast<uint8_t*>(&value), sizeof(T)));
    if (!s.ok()) return s;
    return value;
  }
  absl::Status Skip(uint64_t n);
  // Calls fn(absl::Span<uint8_t>) over the next `n` bytes in host-contiguous
  // pieces (zero-copy writes from guest memory), then consumes them.
  template <typename Fn>
  absl::Status ForEachSpan(uint64_t n, Fn fn);

 private:
  const virtqueue::GuestMemory* memory_;
  DescriptorList descs_;
  size_t index_ = 0;     // current descriptor
  uint64_t offset_ = 0;  // into descs_[index_]
  uint64_t remaining_ = 0;
};

// Sequential writes into the device-writable buffers of a chain.
class ChainWriter {
 public:
  ChainWriter(const virtqueue::GuestMemory* memory,
              absl::Span<const Descriptor> descs);

  uint64_t remaining() const { return remaining_; }
  // Bytes written so far: what goes into the used element.
  uint32_t written() const { return static_cast<uint32_t>(written_); }
  // Writes all of `data`: kOutOfRange (nothing written) if it does not fit.
  absl::Status Write(absl::Span<const uint8_t> data);
  template <typename T>
  absl::Status WriteObj(const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    return Write(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(&value),
                                     sizeof(T)));
  }
  // Calls fn(absl::Span<uint8_t>) over the next `n` writable bytes in
  // host-contiguous pieces (zero-copy reads into guest memory); fn returns
  // how many bytes it filled, and the walk stops at a short piece. The
  // bytes filled count as written. kOutOfRange if fewer than n remain.
  template <typename Fn>
  absl::StatusOr<uint64_t> FillSpans(uint64_t n, Fn fn);
  // Splits the last `n` writable bytes off into a writer of their own (the
  // status byte at the end of a block request): this writer ends before
  // them. kOutOfRange if fewer than n remain.
  absl::StatusOr<ChainWriter> SplitTail(uint64_t n);

 private:
  const virtqueue::GuestMemory* memory_;
  DescriptorList descs_;
  size_t index_ = 0;
  uint64_t offset_ = 0;
  uint64_t remaining_ = 0;
  uint64_t written_ = 0;
};

// One request: the descriptors of a chain, split into the readable part and
// the writable part.
class Request {
 public:
  // Walks `chain` to its end. Returns the chain's error (see
  // virtqueue::QueueError) if it is malformed.
  static absl::StatusOr<Request> Collect(DescriptorChain& chain,
                                         const virtqueue::GuestMemory& memory);

  uint16_t head() const { return head_; }
  ChainReader& reader() { return reader_; }
  ChainWriter& writer() { return writer_; }
  uint64_t readable_bytes() const { return readable_bytes_; }
  uint64_t writable_bytes() const { return writable_bytes_; }
  size_t num_readable() const { return num_readable_; }
  size_t num_writable() const { return num_writable_; }

 private:
  Request(const virtqueue::GuestMemory* memory, uint16_t head,
          absl::Span<const Descriptor> descs, size_t num_readable);

  uint16_t head_;
  size_t num_readable_;
  size_t num_writable_;
  uint64_t readable_bytes_ = 0;
  uint64_t writable_bytes_ = 0;
  ChainReader reader_;
  ChainWriter writer_;
};

// ---------------------------------------------------------------------------

template <typename Fn>
absl::Status ChainReader::ForEachSpan(uint64_t n, Fn fn) {
  if (n > remaining_) {
    return absl::OutOfRangeError("request shorter than its header says");
  }
  while (n > 0) {
    const Descriptor& d = descs_[index_];
    const uint64_t take = std::min<uint64_t>(n, d.len - offset_);
    absl::Status s = memory_->ForEachSpan(d.addr + offset_, take, fn);
    if (!s.ok()) return s;
    offset_ += take;
    remaining_ -= take;
    n -= take;
    if (offset_ == d.len) {
      ++index_;
      offset_ = 0;
    }
  }
  // Step over empty descriptors so that index_ points at data.
  while (index_ < descs_.size() && descs_[index_].len == 0) ++index_;
  return absl::OkStatus();
}

template <typename Fn>
absl::StatusOr<uint64_t> ChainWriter::FillSpans(uint64_t n, Fn fn) {
  if (n > remaining_) {
    return absl::OutOfRangeError("response does not fit the writable buffers");
  }
  uint64_t filled = 0;
  bool short_piece = false;
  while (n > 0 && !short_piece) {
    const Descriptor& d = descs_[index_];
    const uint64_t take = std::min<uint64_t>(n, d.len - offset_);
    uint64_t got = 0;
    absl::Status s = memory_->ForEachSpan(d.addr + offset_, take,
                                          [&](absl::Span<uint8_t> piece) {
                                            if (short_piece) return;
                                            const uint64_t k = fn(piece);
                                            got += k;
                                            if (k < piece.size())
                                              short_piece = true;
                                          });
    if (!s.ok()) return s;
    offset_ += got;
    remaining_ -= got;
    written_ += got;
    filled += got;
    n -= got;
    if (offset_ == d.len) {
      ++index_;
      offset_ = 0;
    }
  }
  return filled;
}

}  // namespace vmmkit::virtio

#endif  // VMMKIT_VIRTIO_DEVICE_CHAIN_IO_H_
