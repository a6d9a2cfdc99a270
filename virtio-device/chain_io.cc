#include "virtio-device/chain_io.h"

#include <algorithm>
#include <cstring>

namespace vmmkit::virtio {

namespace {

uint64_t TotalLength(absl::Span<const Descriptor> descs) {
  uint64_t total = 0;
  for (const Descriptor& d : descs) total += d.len;
  return total;
}

}  // namespace

ChainReader::ChainReader(const virtqueue::GuestMemory* memory,
                         absl::Span<const Descriptor> descs)
    : memory_(memory),
      descs_(descs.begin(), descs.end()),
      remaining_(TotalLength(descs)) {
  while (index_ < descs_.size() && descs_[index_].len == 0) ++index_;
}

absl::Status ChainReader::Read(absl::Span<uint8_t> out) {
  uint8_t* dst = out.data();
  return ForEachSpan(out.size(), [&](absl::Span<uint8_t> piece) {
    std::memcpy(dst, piece.data(), piece.size());
    dst += piece.size();
  });
}

absl::Status ChainReader::Skip(uint64_t n) {
  return ForEachSpan(n, [](absl::Span<uint8_t>) {});
}

ChainWriter::ChainWriter(const virtqueue::GuestMemory* memory,
                         absl::Span<const Descriptor> descs)
    : memory_(memory),
      descs_(descs.begin(), descs.end()),
      remaining_(TotalLength(descs)) {}

absl::Status ChainWriter::Write(absl::Span<const uint8_t> data) {
  if (data.size() > remaining_) {
    return absl::OutOfRangeError("response does not fit the writable buffers");
  }
  const uint8_t* src = data.data();
  absl::StatusOr<uint64_t> n =
      FillSpans(data.size(), [&](absl::Span<uint8_t> piece) {
        std::memcpy(piece.data(), src, piece.size());
        src += piece.size();
        return piece.size();
      });
  return n.status();
}

absl::StatusOr<ChainWriter> ChainWriter::SplitTail(uint64_t n) {
  if (n > remaining_) {
    return absl::OutOfRangeError("no room for the response trailer");
  }
  // Walk back from the end to find where the tail starts.
  DescriptorList tail;
  uint64_t need = n;
  size_t i = descs_.size();
  while (need > 0) {
    --i;
    Descriptor d = descs_[i];
    if (d.len <= need) {
      tail.insert(tail.begin(), d);
      need -= d.len;
      descs_.pop_back();
    } else {
      Descriptor piece = d;
      piece.addr = d.addr + (d.len - need);
      piece.len = static_cast<uint32_t>(need);
      tail.insert(tail.begin(), piece);
      descs_[i].len = static_cast<uint32_t>(d.len - need);
      need = 0;
    }
  }
  remaining_ -= n;
  return ChainWriter(memory_, tail);
}

Request::Request(const virtqueue::GuestMemory* memory, uint16_t head,
                 absl::Span<const Descriptor> descs, size_t num_readable)
    : head_(head),
      num_readable_(num_readable),
      num_writable_(descs.size() - num_readable),
      reader_(memory, descs.subspan(0, num_readable)),
      writer_(memory, descs.subspan(num_readable)) {
  readable_bytes_ = reader_.remaining();
  writable_bytes_ = writer_.remaining();
}

absl::StatusOr<Request> Request::Collect(DescriptorChain& chain,
                                         const virtqueue::GuestMemory& memory) {
  DescriptorList descs;
  size_t num_readable = 0;
  Descriptor d;
  while (chain.Next(d)) {
    descs.push_back(d);
    if (!d.writable()) ++num_readable;
  }
  if (!chain.ok()) return chain.status();
  return Request(&memory, chain.head(), descs, num_readable);
}

}  // namespace vmmkit::virtio
