#include "virtio-device/blk.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <climits>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status.h"

namespace vmmkit::virtio {

namespace {

constexpr Endian kHostEndian =
    std::endian::native == std::endian::little ? Endian::kLittle : Endian::kBig;

// A request field in the queue's byte order, to host order.
uint32_t FromQueue(uint32_t v, Endian e) {
  return e == kHostEndian ? v : __builtin_bswap32(v);
}
uint64_t FromQueue(uint64_t v, Endian e) {
  return e == kHostEndian ? v : __builtin_bswap64(v);
}

constexpr bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// Zeros to write from when the file system cannot zero a range itself.
constexpr size_t kZeroBlockSize = 64 * 1024;
alignas(4096) constexpr uint8_t kZeroBlock[kZeroBlockSize] = {};

absl::Status ValidateOptions(const BlockDevice::Options& o) {
  if (o.path.empty()) return absl::InvalidArgumentError("virtio-blk: no path");
  if (o.serial.size() > kBlkIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("virtio-blk: serial is %u bytes, at most %u",
                        o.serial.size(), kBlkIdBytes));
  }
  if (!IsPowerOfTwo(o.queue_size) || o.queue_size < 4 ||
      o.queue_size > SplitQueue::kMaxQueueSize) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "virtio-blk: queue size %u is not a power of two in 4..32768",
        o.queue_size));
  }
  if (o.num_queues < 1 || o.num_queues > 64) {
    return absl::InvalidArgumentError(
        absl::StrFormat("virtio-blk: %u queues, must be 1..64", o.num_queues));
  }
  if (o.seg_max > o.queue_size - 2) {
    return absl::InvalidArgumentError(
        absl::StrFormat("virtio-blk: seg_max %u above queue size - 2 (%u)",
                        o.seg_max, o.queue_size - 2));
  }
  if (o.size_max < 4096) {
    return absl::InvalidArgumentError(
        absl::StrFormat("virtio-blk: size_max %u below 4096", o.size_max));
  }
  if (!IsPowerOfTwo(o.block_size) || o.block_size < kBlkSectorSize ||
      o.block_size > 65536) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "virtio-blk: block size %u is not a power of two in 512..65536",
        o.block_size));
  }
  return absl::OkStatus();
}

// fallocate(2), retried on EINTR; 0 or errno.
int Fallocate(int fd, int mode, uint64_t offset, uint64_t len) {
  for (;;) {
    if (fallocate(fd, mode, static_cast<off_t>(offset),
                  static_cast<off_t>(len)) == 0) {
      return 0;
    }
    if (errno != EINTR) return errno;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<BlockDevice>> BlockDevice::Create(
    Options options) {
  VMMKIT_RETURN_IF_ERROR(ValidateOptions(options));
  if (options.seg_max == 0) options.seg_max = options.queue_size - 2;

  const int flags = (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  const int fd = open(options.path.c_str(), flags);
  if (fd < 0) {
    if (errno == EISDIR) {
      return absl::InvalidArgumentError(
          absl::StrCat("virtio-blk: ", options.path, " is a directory"));
    }
    return ErrnoToStatus(errno,
                         absl::StrCat("virtio-blk: open ", options.path));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    close(fd);
    return ErrnoToStatus(e, absl::StrCat("virtio-blk: fstat ", options.path));
  }
  uint64_t size = 0;
  if (S_ISREG(st.st_mode)) {
    size = static_cast<uint64_t>(st.st_size);
  } else if (S_ISBLK(st.st_mode)) {
    if (ioctl(fd, BLKGETSIZE64, &size) != 0) {
      const int e = errno;
      close(fd);
      return ErrnoToStatus(
          e, absl::StrCat("virtio-blk: BLKGETSIZE64 ", options.path));
    }
  } else {
    close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat("virtio-blk: ", options.path,
                     " is neither a regular file nor a block device"));
  }
  // Whole logical blocks only; a trailing partial block is not exposed.
  const uint64_t capacity =
      size / options.block_size * (options.block_size / kBlkSectorSize);
  return std::unique_ptr<BlockDevice>(
      new BlockDevice(std::move(options), fd, capacity));
}

BlockDevice::BlockDevice(Options options, int fd, uint64_t capacity)
    : options_(std::move(options)),
      fd_(fd),
      capacity_(capacity),
      queue_sizes_(options_.num_queues,
                   static_cast<uint16_t>(options_.queue_size)),
      config_(kBlkConfigSize) {
  // §5.2.4: every multi-byte field, so that a big-endian legacy driver reads
  // it guest-native.
  config_.DeclareField(offsetof(BlkConfig, capacity), 8);
  config_.DeclareField(offsetof(BlkConfig, size_max), 4);
  config_.DeclareField(offsetof(BlkConfig, seg_max), 4);
  config_.DeclareField(offsetof(BlkConfig, cylinders), 2);
  config_.DeclareField(offsetof(BlkConfig, blk_size), 4);
  config_.DeclareField(offsetof(BlkConfig, min_io_size), 2);
  config_.DeclareField(offsetof(BlkConfig, opt_io_size), 4);
  config_.DeclareField(offsetof(BlkConfig, num_queues), 2);
  config_.DeclareField(offsetof(BlkConfig, max_discard_sectors), 4);
  config_.DeclareField(offsetof(BlkConfig, max_discard_seg), 4);
  config_.DeclareField(offsetof(BlkConfig, discard_sector_alignment), 4);
  config_.DeclareField(offsetof(BlkConfig, max_write_zeroes_sectors), 4);
  config_.DeclareField(offsetof(BlkConfig, max_write_zeroes_seg), 4);

  config_.SetU64(offsetof(BlkConfig, capacity), capacity_);
  config_.SetU32(offsetof(BlkConfig, size_max), options_.size_max);
  config_.SetU32(offsetof(BlkConfig, seg_max), options_.seg_max);
  config_.SetU32(offsetof(BlkConfig, blk_size), options_.block_size);
  config_.SetU8(offsetof(BlkConfig, writeback), 1);
  config_.SetU16(offsetof(BlkConfig, num_queues),
                 static_cast<uint16_t>(options_.num_queues));
  config_.SetU32(offsetof(BlkConfig, max_discard_sectors), kMaxDiscardSectors);
  config_.SetU32(offsetof(BlkConfig, max_discard_seg), kMaxDiscardSegments);
  config_.SetU32(offsetof(BlkConfig, discard_sector_alignment),
                 options_.block_size / kBlkSectorSize);
  config_.SetU32(offsetof(BlkConfig, max_write_zeroes_sectors),
                 kMaxWriteZeroesSectors);
  config_.SetU32(offsetof(BlkConfig, max_write_zeroes_seg),
                 kMaxDiscardSegments);
  config_.SetU8(offsetof(BlkConfig, write_zeroes_may_unmap), 1);
}

BlockDevice::~BlockDevice() { close(fd_); }

Features BlockDevice::offered_features() const {
  Features f = Features::Of({kFVersion1, kFEventIdx, kFIndirectDesc,
                             kFAnyLayout, kBlkFSizeMax, kBlkFSegMax,
                             kBlkFBlkSize, kBlkFFlush, kBlkFConfigWce});
  if (options_.read_only) {
    f.Set(kBlkFRo);
  } else {
    f.Set(kBlkFDiscard).Set(kBlkFWriteZeroes);
  }
  if (options_.num_queues > 1) f.Set(kBlkFMq);
  return f;
}

absl::Status BlockDevice::AcceptFeatures(const Features& features) {
  // A modern driver reads writeback only after FEATURES_OK (§5.2.5.1), so
  // this is where its initial value is set: §5.2.5.2 "If
  // VIRTIO_BLK_F_CONFIG_WCE is negotiated but VIRTIO_BLK_F_FLUSH is not, the
  // device MUST initialize writeback to 0." Setting it here also undoes a
  // previous driver's choice when it reset before DRIVER_OK (when the device
  // is not told). A legacy driver may have written writeback before its
  // features, and its feature bits must not change the cache mode
  // (§5.2.5.3): its mode comes from writethrough() instead.
  if (features.Has(kFVersion1)) {
    const bool writethrough =
        features.Has(kBlkFConfigWce) && !features.Has(kBlkFFlush);
    config_.SetU8(offsetof(BlkConfig, writeback), writethrough ? 0 : 1);
  }
  return absl::OkStatus();
}

void BlockDevice::ReadConfig(uint32_t offset, absl::Span<uint8_t> data,
                             Endian endian) {
  config_.Read(offset, data, endian);
}

void BlockDevice::WriteConfig(uint32_t offset, absl::Span<const uint8_t> data,
                              Endian endian) {
  // Only writeback is writable (VIRTIO_BLK_F_CONFIG_WCE): 0 writethrough,
  // 1 writeback. Other bytes of the write are dropped.
  constexpr uint32_t kWriteback = offsetof(BlkConfig, writeback);
  if (offset > kWriteback || offset + data.size() <= kWriteback) return;
  absl::InlinedVector<uint8_t, 8> bytes(data.size());
  config_.DecodeWrite(offset, data, endian, absl::MakeSpan(bytes));
  config_.SetU8(kWriteback, bytes[kWriteback - offset] != 0 ? 1 : 0);
}

absl::Status BlockDevice::Activate(DeviceContext& context) {
  context_ = &context;
  features_ = context.features();
  return absl::OkStatus();
}

void BlockDevice::Reset() {
  context_ = nullptr;
  features_ = Features();
  // The cache mode after reset is writeback (§5.2.5: "can be either").
  config_.SetU8(offsetof(BlkConfig, writeback), 1);
}

bool BlockDevice::writethrough() const {
  // §5.2.6.2, the three ways a write becomes stable.
  if (features_.Has(kBlkFConfigWce)) {
    return config_.U8(offsetof(BlkConfig, writeback)) == 0;
  }
  // FLUSH offered but neither it nor CONFIG_WCE negotiated: every completed
  // write must be stable.
  return !features_.Has(kBlkFFlush);
}

absl::Status BlockDevice::Flush() { return SyncData(); }

absl::Status BlockDevice::SyncData() {
  ++stats_.syncs;
  for (;;) {
    if (fdatasync(fd_) == 0) return absl::OkStatus();
    if (errno != EINTR) return ErrnoToStatus(errno, "virtio-blk: fdatasync");
  }
}

void BlockDevice::ProcessQueue(uint16_t index) {
  if (context_ == nullptr) return;
  SplitQueue* q = context_->queue(index);
  if (q == nullptr) return;
  const Endian endian = q->endian();
  bool added = false;
  // Ends when the ring is empty: each turn consumes one available chain.
  while (std::optional<DescriptorChain> chain = q->Pop()) {
    absl::StatusOr<Request> req = Request::Collect(*chain, context_->memory());
    if (!req.ok()) {
      // A malformed chain cannot be answered per request (§2.1.2).
      if (added) {
        q->PublishUsed();
        context_->NotifyUsed(index);
      }
      context_->MarkNeedsReset(Annotate(
          req.status(), absl::StrFormat("virtio-blk queue %u", index)));
      return;
    }
    const uint32_t used_len = Handle(*req, endian);
    q->PushUsed(req->head(), used_len);
    added = true;
  }
  if (added) {
    q->PublishUsed();
    context_->NotifyUsed(index);
  }
}

uint32_t BlockDevice::Handle(Request& req, Endian endian) {
  ChainWriter& data = req.writer();
  // The status is the last device-writable byte, wherever the driver put it
  // (one descriptor of its own, or the end of the data buffer).
  absl::StatusOr<ChainWriter> status_writer = data.SplitTail(1);
  if (!status_writer.ok()) {
    // No byte to answer in: complete the chain with nothing written.
    ++stats_.no_status;
    return 0;
  }
  const Outcome outcome = Execute(req, data, endian);
  if (outcome.status == kBlkSIoErr) ++stats_.errors;
  if (outcome.status == kBlkSUnsupp) ++stats_.unsupported;
  if (!status_writer->WriteObj(outcome.status).ok()) {
    return outcome.data_written;  // not reached: the byte was checked
  }
  return outcome.data_written + 1;
}

BlockDevice::Outcome BlockDevice::Execute(Request& req, ChainWriter& data,
                                          Endian endian) {
  absl::StatusOr<BlkReqHeader> header = req.reader().ReadObj<BlkReqHeader>();
  if (!header.ok()) return {kBlkSIoErr};  // a short header
  uint32_t type = FromQueue(header->type, endian);
  const uint64_t sector = FromQueue(header->sector, endian);
  if (context_->legacy()) {
    // Legacy drivers may set the BARRIER bit (not offered: serving requests
    // in order already satisfies it) and may use FLUSH_OUT for FLUSH
    // (§5.2.6.3).
    type &= ~kBlkTBarrier;
    if (type == kBlkTFlushOut) type = kBlkTFlush;
  }
  switch (type) {
    case kBlkTIn:
      ++stats_.in;
      return Read(req, data, sector);
    case kBlkTOut:
      ++stats_.out;
      return Write(req, data, sector);
    case kBlkTFlush:
      ++stats_.flush;
      return SyncData().ok() ? Outcome{kBlkSOk} : Outcome{kBlkSIoErr};
    case kBlkTGetId:
      ++stats_.get_id;
      return GetId(data);
    case kBlkTDiscard:
      ++stats_.discard;
      return DiscardOrWriteZeroes(req, data, endian, /*write_zeroes=*/false);
    case kBlkTWriteZeroes:
      ++stats_.write_zeroes;
      return DiscardOrWriteZeroes(req, data, endian, /*write_zeroes=*/true);
    default:
      return {kBlkSUnsupp};
  }
}

bool BlockDevice::InRange(uint64_t sector, uint64_t bytes) const {
  // Overflow-safe: sector + bytes / 512 <= capacity.
  return sector <= capacity_ && bytes / kBlkSectorSize <= capacity_ - sector;
}

bool BlockDevice::ValidSegments(const IoVecs& iovs) const {
  if (iovs.size() > options_.seg_max) return false;
  for (const iovec& v : iovs) {
    if (v.iov_len > options_.size_max) return false;
  }
  return true;
}

BlockDevice::Outcome BlockDevice::Read(Request& req, ChainWriter& data,
                                       uint64_t sector) {
  // IN: everything after the header is device-writable.
  if (req.reader().remaining() != 0) return {kBlkSIoErr};
  const uint64_t bytes = data.remaining();
  if (bytes % kBlkSectorSize != 0 || !InRange(sector, bytes)) {
    return {kBlkSIoErr};
  }
  // Collect the guest buffers as iovecs, one more than seg_max at most.
  iovs_.clear();
  absl::StatusOr<uint64_t> filled =
      data.FillSpans(bytes, [&](absl::Span<uint8_t> piece) -> uint64_t {
        if (iovs_.size() > options_.seg_max) return 0;
        iovs_.push_back({piece.data(), piece.size()});
        return piece.size();
      });
  if (!filled.ok() || *filled != bytes || !ValidSegments(iovs_)) {
    return {kBlkSIoErr};
  }
  if (absl::Status s = TransferAll(iovs_, sector * kBlkSectorSize, false);
      !s.ok()) {
    return {kBlkSIoErr};
  }
  stats_.bytes_read += bytes;
  return {kBlkSOk, static_cast<uint32_t>(bytes)};
}

BlockDevice::Outcome BlockDevice::Write(Request& req, ChainWriter& data,
                                        uint64_t sector) {
  // OUT: nothing device-writable but the status byte.
  if (data.remaining() != 0) return {kBlkSIoErr};
  // §5.2.6.2: "A device MUST set the status byte to VIRTIO_BLK_S_IOERR for a
  // write request if the VIRTIO_BLK_F_RO feature if offered, and MUST NOT
  // write any data."
  if (options_.read_only) return {kBlkSIoErr};
  ChainReader& in = req.reader();
  const uint64_t bytes = in.remaining();
  if (bytes % kBlkSectorSize != 0 || !InRange(sector, bytes)) {
    return {kBlkSIoErr};
  }
  iovs_.clear();
  bool too_many = false;
  absl::Status s = in.ForEachSpan(bytes, [&](absl::Span<uint8_t> piece) {
    if (iovs_.size() >= options_.seg_max) {
      too_many = true;
      return;
    }
    iovs_.push_back({piece.data(), piece.size()});
  });
  if (!s.ok() || too_many || !ValidSegments(iovs_)) {
    return {kBlkSIoErr};
  }
  if (!TransferAll(iovs_, sector * kBlkSectorSize, true).ok()) {
    return {kBlkSIoErr};
  }
  stats_.bytes_written += bytes;
  if (writethrough() && !SyncData().ok()) return {kBlkSIoErr};
  return {kBlkSOk};
}

absl::Status BlockDevice::TransferAll(IoVecs& iovs, uint64_t offset,
                                      bool write) {
  size_t i = 0;
  // Skip empty pieces so that every call moves at least one byte or fails.
  auto skip_empty = [&] {
    while (i < iovs.size() && iovs[i].iov_len == 0) ++i;
  };
  skip_empty();
  while (i < iovs.size()) {
    const int count =
        static_cast<int>(std::min<size_t>(iovs.size() - i, IOV_MAX));
    const ssize_t n =
        write ? pwritev(fd_, &iovs[i], count, static_cast<off_t>(offset))
              : preadv(fd_, &iovs[i], count, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(
          errno, write ? "virtio-blk: pwritev" : "virtio-blk: preadv");
    }
    if (n == 0) {
      // The image shrank under us.
      return absl::DataLossError("virtio-blk: unexpected end of image");
    }
    offset += static_cast<uint64_t>(n);
    size_t left = static_cast<size_t>(n);
    while (left > 0) {
      if (left >= iovs[i].iov_len) {
        left -= iovs[i].iov_len;
        iovs[i].iov_len = 0;
        ++i;
      } else {
        iovs[i].iov_base = static_cast<uint8_t*>(iovs[i].iov_base) + left;
        iovs[i].iov_len -= left;
        left = 0;
      }
    }
    skip_empty();
  }
  return absl::OkStatus();
}

BlockDevice::Outcome BlockDevice::GetId(ChainWriter& data) {
  // §5.2.6: "The device ID string is a NUL-padded ASCII string up to 20
  // bytes long." A shorter buffer gets what fits.
  uint8_t id[kBlkIdBytes] = {};
  std::memcpy(id, options_.serial.data(), options_.serial.size());
  const uint64_t n = std::min<uint64_t>(kBlkIdBytes, data.remaining());
  if (!data.Write(absl::MakeConstSpan(id, n)).ok()) return {kBlkSIoErr};
  return {kBlkSOk, static_cast<uint32_t>(n)};
}

BlockDevice::Outcome BlockDevice::DiscardOrWriteZeroes(Request& req,
                                                       ChainWriter& data,
                                                       Endian endian,
                                                       bool write_zeroes) {
  // Not negotiated (never offered on a read-only image): unsupported.
  if (!features_.Has(write_zeroes ? kBlkFWriteZeroes : kBlkFDiscard)) {
    return {kBlkSUnsupp};
  }
  if (options_.read_only) return {kBlkSIoErr};
  if (data.remaining() != 0) return {kBlkSIoErr};
  ChainReader& in = req.reader();
  const uint64_t bytes = in.remaining();
  if (bytes == 0 || bytes % sizeof(BlkDiscardWriteZeroes) != 0 ||
      bytes / sizeof(BlkDiscardWriteZeroes) > kMaxDiscardSegments) {
    return {kBlkSIoErr};
  }
  const size_t count = bytes / sizeof(BlkDiscardWriteZeroes);
  BlkDiscardWriteZeroes segments[kMaxDiscardSegments];
  for (size_t i = 0; i < count; ++i) {
    absl::StatusOr<BlkDiscardWriteZeroes> seg =
        in.ReadObj<BlkDiscardWriteZeroes>();
    if (!seg.ok()) return {kBlkSIoErr};
    segments[i] = {FromQueue(seg->sector, endian),
                   FromQueue(seg->num_sectors, endian),
                   FromQueue(seg->flags, endian)};
  }
  // §5.2.6.2: "The device MUST set the status byte to VIRTIO_BLK_S_UNSUPP for
  // discard, secure erase and write zeroes commands if any unknown flag is
  // set. Furthermore, the device MUST set the status byte to
  // VIRTIO_BLK_S_UNSUPP for discard commands if the unmap flag is set."
  for (size_t i = 0; i < count; ++i) {
    if ((segments[i].flags & ~kBlkDwzFUnmap) != 0 ||
        (!write_zeroes && (segments[i].flags & kBlkDwzFUnmap) != 0)) {
      return {kBlkSUnsupp};
    }
  }
  const uint32_t max_sectors =
      write_zeroes ? kMaxWriteZeroesSectors : kMaxDiscardSectors;
  for (size_t i = 0; i < count; ++i) {
    if (segments[i].num_sectors > max_sectors ||
        !InRange(segments[i].sector,
                 uint64_t{segments[i].num_sectors} * kBlkSectorSize)) {
      return {kBlkSIoErr};
    }
  }
  for (size_t i = 0; i < count; ++i) {
    const uint64_t offset = segments[i].sector * kBlkSectorSize;
    const uint64_t len = uint64_t{segments[i].num_sectors} * kBlkSectorSize;
    if (len == 0) continue;
    const absl::Status s =
        write_zeroes
            ? WriteZeroes(offset, len, segments[i].flags & kBlkDwzFUnmap)
            : Discard(offset, len);
    if (!s.ok()) return {kBlkSIoErr};
  }
  if (write_zeroes && writethrough() && !SyncData().ok()) return {kBlkSIoErr};
  return {kBlkSOk};
}

void BlockDevice::PunchHoleUnsupported() {
  punch_hole_supported_ = false;
  if (config_.U8(offsetof(BlkConfig, write_zeroes_may_unmap)) != 0) {
    config_.SetU8(offsetof(BlkConfig, write_zeroes_may_unmap), 0);
    if (context_ != nullptr) context_->NotifyConfigChange();
  }
}

absl::Status BlockDevice::Discard(uint64_t offset, uint64_t len) {
  // §5.2.6.2: "For discard commands, the device MAY deallocate the specified
  // range of sectors": without hole punching, a discard does nothing.
  if (!punch_hole_supported_) return absl::OkStatus();
  const int e =
      Fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len);
  if (e == 0) return absl::OkStatus();
  if (e == EOPNOTSUPP) {
    PunchHoleUnsupported();
    return absl::OkStatus();
  }
  return ErrnoToStatus(e, "virtio-blk: punch hole");
}

absl::Status BlockDevice::WriteZeroes(uint64_t offset, uint64_t len,
                                      bool unmap) {
  // §5.2.6.2: "After a write zeroes command is completed, reads of the
  // specified ranges of sectors MUST return zeroes." A punched hole reads as
  // zeros, so UNMAP may deallocate.
  if (unmap && punch_hole_supported_) {
    const int e =
        Fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len);
    if (e == 0) return absl::OkStatus();
    if (e != EOPNOTSUPP) return ErrnoToStatus(e, "virtio-blk: punch hole");
    PunchHoleUnsupported();
  }
  const int e =
      Fallocate(fd_, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, len);
  if (e == 0) return absl::OkStatus();
  if (e != EOPNOTSUPP && e != EINVAL) {
    return ErrnoToStatus(e, "virtio-blk: zero range");
  }
  // Write the zeros: 16 iovecs over one zero block per call, at most
  // kMaxWriteZeroesSectors * 512 / 64 KiB calls per segment.
  IoVecs zeros;
  while (len > 0) {
    zeros.clear();
    uint64_t chunk = 0;
    while (chunk < len && zeros.size() < 16) {
      const size_t piece =
          static_cast<size_t>(std::min<uint64_t>(kZeroBlockSize, len - chunk));
      zeros.push_back({const_cast<uint8_t*>(kZeroBlock), piece});
      chunk += piece;
    }
    VMMKIT_RETURN_IF_ERROR(TransferAll(zeros, offset, /*write=*/true));
    offset += chunk;
    len -= chunk;
  }
  return absl::OkStatus();
}

}  // namespace vmmkit::virtio
