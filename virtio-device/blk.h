// virtio-device/blk.h: virtio-blk (virtio 1.2 §5.2) over a raw image file or
// a host block device.
//
//   VMMKIT_ASSIGN_OR_RETURN(std::unique_ptr<BlockDevice> blk,
//                           BlockDevice::Create({.path = "/var/vm/disk.img",
//                                                .serial = "vmmkit-disk0"}));
//   DeviceState state(*blk, memory);    // then a transport in front of state
//   ...
//   VMMKIT_RETURN_IF_ERROR(blk->Flush());  // on VM stop
//
// Requests (§5.2.6) are served synchronously inside ProcessQueue() with
// preadv/pwritev straight from and into guest memory (no bounce buffer):
// IN, OUT, FLUSH (fdatasync), GET_ID, DISCARD (punch hole) and WRITE_ZEROES
// (zero range, punch hole with UNMAP, or written zeros as a fallback). Each
// request is answered with a status byte, the last device-writable byte of the
// chain: OK, IOERR for requests that go beyond the capacity, short headers,
// data buffers in the wrong direction, too many or too large segments, writes
// to a read-only image and host I/O errors; UNSUPP for unknown types and
// flags. The used length is the number of bytes the device wrote into the
// chain: data plus the status byte (1 on IOERR). A chain without a single
// device-writable byte cannot carry a status; it is completed with used
// length 0 and counted in stats().no_status, and the device goes on.
// Malformed chains (see virtqueue::QueueError) set DEVICE_NEEDS_RESET.
//
// Durability: with VIRTIO_BLK_F_FLUSH negotiated the device is a writeback
// cache and data is on disk after a completed FLUSH; with CONFIG_WCE the
// driver may switch to writethrough (writeback = 0), where every write is
// followed by fdatasync before it completes; a driver that negotiates neither
// gets writethrough (§5.2.6.2, case 1).
//
// The capacity is the file size in 512-byte sectors, rounded down to a whole
// logical block (a trailing partial block is never read or written). Header
// fields are in the byte order of the queue they arrive on: little-endian for
// VERSION_1 drivers, guest-native for legacy ones (§5.2.6.3).
//
// Thread-compatible (see virtio_device.h).
#ifndef VMMKIT_VIRTIO_DEVICE_BLK_H_
#define VMMKIT_VIRTIO_DEVICE_BLK_H_

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "virtio-device/chain_io.h"
#include "virtio-device/config_space.h"
#include "virtio-device/virtio_device.h"

namespace vmmkit::virtio {

// Feature bits (§5.2.3).
inline constexpr unsigned kBlkFBarrier = 0;  // legacy only; not offered
inline constexpr unsigned kBlkFSizeMax = 1;
inline constexpr unsigned kBlkFSegMax = 2;
inline constexpr unsigned kBlkFGeometry = 4;
inline constexpr unsigned kBlkFRo = 5;
inline constexpr unsigned kBlkFBlkSize = 6;
inline constexpr unsigned kBlkFScsi = 7;   // legacy only; not offered
inline constexpr unsigned kBlkFFlush = 9;  // legacy name: WCE
inline constexpr unsigned kBlkFTopology = 10;
inline constexpr unsigned kBlkFConfigWce = 11;
inline constexpr unsigned kBlkFMq = 12;
inline constexpr unsigned kBlkFDiscard = 13;
inline constexpr unsigned kBlkFWriteZeroes = 14;

// Request types (§5.2.6).
inline constexpr uint32_t kBlkTIn = 0;
inline constexpr uint32_t kBlkTOut = 1;
inline constexpr uint32_t kBlkTFlush = 4;
inline constexpr uint32_t kBlkTFlushOut = 5;  // legacy synonym of FLUSH
inline constexpr uint32_t kBlkTGetId = 8;
inline constexpr uint32_t kBlkTDiscard = 11;
inline constexpr uint32_t kBlkTWriteZeroes = 13;
inline constexpr uint32_t kBlkTBarrier = 0x80000000u;  // legacy flag bit

// Status byte values.
inline constexpr uint8_t kBlkSOk = 0;
inline constexpr uint8_t kBlkSIoErr = 1;
inline constexpr uint8_t kBlkSUnsupp = 2;

inline constexpr uint32_t kBlkSectorSize = 512;
inline constexpr uint32_t kBlkIdBytes = 20;
// virtio_blk_discard_write_zeroes.flags
inline constexpr uint32_t kBlkDwzFUnmap = 1;

// struct virtio_blk_config (§5.2.4), up to and including unused1: the device
// exposes kBlkConfigSize bytes (no secure erase, no zoned fields). Multi-byte
// fields are little-endian (guest-native for a legacy driver); ConfigSpace
// keeps the bytes, this struct documents and checks the layout.
struct BlkConfig {
  uint64_t capacity;  // in 512-byte sectors
  uint32_t size_max;
  uint32_t seg_max;
  uint16_t cylinders;  // geometry
  uint8_t heads;
  uint8_t sectors;
  uint32_t blk_size;
  uint8_t physical_block_exp;  // topology
  uint8_t alignment_offset;
  uint16_t min_io_size;
  uint32_t opt_io_size;
  uint8_t writeback;
  uint8_t unused0;
  uint16_t num_queues;
  uint32_t max_discard_sectors;
  uint32_t max_discard_seg;
  uint32_t discard_sector_alignment;
  uint32_t max_write_zeroes_sectors;
  uint32_t max_write_zeroes_seg;
  uint8_t write_zeroes_may_unmap;
  uint8_t unused1[3];
};
static_assert(offsetof(BlkConfig, size_max) == 8);
static_assert(offsetof(BlkConfig, seg_max) == 12);
static_assert(offsetof(BlkConfig, cylinders) == 16);
static_assert(offsetof(BlkConfig, heads) == 18);
static_assert(offsetof(BlkConfig, sectors) == 19);
static_assert(offsetof(BlkConfig, blk_size) == 20);
static_assert(offsetof(BlkConfig, physical_block_exp) == 24);
static_assert(offsetof(BlkConfig, alignment_offset) == 25);
static_assert(offsetof(BlkConfig, min_io_size) == 26);
static_assert(offsetof(BlkConfig, opt_io_size) == 28);
static_assert(offsetof(BlkConfig, writeback) == 32);
static_assert(offsetof(BlkConfig, num_queues) == 34);
static_assert(offsetof(BlkConfig, max_discard_sectors) == 36);
static_assert(offsetof(BlkConfig, max_discard_seg) == 40);
static_assert(offsetof(BlkConfig, discard_sector_alignment) == 44);
static_assert(offsetof(BlkConfig, max_write_zeroes_sectors) == 48);
static_assert(offsetof(BlkConfig, max_write_zeroes_seg) == 52);
static_assert(offsetof(BlkConfig, write_zeroes_may_unmap) == 56);
static_assert(offsetof(BlkConfig, unused1) == 57);
// sizeof() is 64 (padding to 8-byte alignment); the space itself is 60 bytes.
inline constexpr uint32_t kBlkConfigSize = offsetof(BlkConfig, unused1) + 3;
static_assert(kBlkConfigSize == 60);

// The request header, device-readable, in the queue's byte order.
struct BlkReqHeader {
  uint32_t type;
  uint32_t reserved;  // legacy: ioprio
  uint64_t sector;
};
static_assert(sizeof(BlkReqHeader) == 16);
static_assert(offsetof(BlkReqHeader, sector) == 8);

// One DISCARD / WRITE_ZEROES segment, in the queue's byte order.
struct BlkDiscardWriteZeroes {
  uint64_t sector;
  uint32_t num_sectors;
  uint32_t flags;  // bit 0: unmap; the others reserved
};
static_assert(sizeof(BlkDiscardWriteZeroes) == 16);
static_assert(offsetof(BlkDiscardWriteZeroes, num_sectors) == 8);
static_assert(offsetof(BlkDiscardWriteZeroes, flags) == 12);

struct BlkStats {
  uint64_t in = 0;  // requests by type, counted when answered
  uint64_t out = 0;
  uint64_t flush = 0;
  uint64_t get_id = 0;
  uint64_t discard = 0;
  uint64_t write_zeroes = 0;
  uint64_t unsupported = 0;  // answered UNSUPP
  uint64_t errors = 0;       // answered IOERR
  uint64_t no_status = 0;    // chains with no byte for the status
  uint64_t bytes_read = 0;   // from the image into guest memory
  uint64_t bytes_written = 0;
  uint64_t syncs = 0;  // fdatasync calls (FLUSH, writethrough, Flush())
};

class BlockDevice final : public VirtioDevice {
 public:
  struct Options {
    // The image: a regular file (raw format) or a block device.
    std::string path;
    // Opens the image O_RDONLY and offers VIRTIO_BLK_F_RO.
    bool read_only = false;
    // The device ID string for GET_ID: up to 20 bytes, NUL-padded.
    std::string serial;
    // Per-queue maximum size: a power of two, 4..32768.
    uint32_t queue_size = 256;
    // Request queues, 1..64; more than one offers VIRTIO_BLK_F_MQ.
    uint32_t num_queues = 1;
    // Maximum data segments per request, 1..queue_size - 2; 0 means
    // queue_size - 2 (the header and the status take a descriptor each).
    uint32_t seg_max = 0;
    // Maximum bytes of one segment, at least 4096.
    uint32_t size_max = 1u << 20;
    // Logical block size (VIRTIO_BLK_F_BLK_SIZE): a power of two, 512..65536.
    // Only a hint to the driver; the protocol stays in 512-byte sectors.
    uint32_t block_size = 512;
  };

  // Limits advertised for DISCARD and WRITE_ZEROES.
  static constexpr uint32_t kMaxDiscardSectors = 1u << 22;      // 2 GiB
  static constexpr uint32_t kMaxWriteZeroesSectors = 1u << 16;  // 32 MiB
  static constexpr uint32_t kMaxDiscardSegments = 32;

  // kInvalidArgument for bad options (or an image that is neither a regular
  // file nor a block device), kNotFound for a missing file, other codes for
  // errors from open(2)/fstat(2).
  static absl::StatusOr<std::unique_ptr<BlockDevice>> Create(Options options);
  ~BlockDevice() override;

  BlockDevice(const BlockDevice&) = delete;
  BlockDevice& operator=(const BlockDevice&) = delete;

  // In 512-byte sectors.
  uint64_t capacity() const { return capacity_; }
  const BlkStats& stats() const { return stats_; }

  // VirtioDevice.
  DeviceType type() const override { return DeviceType::kBlock; }
  absl::Span<const uint16_t> queue_max_sizes() const override {
    return queue_sizes_;
  }
  Features offered_features() const override;
  absl::Status AcceptFeatures(const Features& features) override;
  uint32_t config_size() const override { return config_.size(); }
  void ReadConfig(uint32_t offset, absl::Span<uint8_t> data,
                  Endian endian) override;
  void WriteConfig(uint32_t offset, absl::Span<const uint8_t> data,
                   Endian endian) override;
  uint32_t config_generation() const override { return config_.generation(); }
  absl::Status Activate(DeviceContext& context) override;
  void Reset() override;
  void ProcessQueue(uint16_t index) override;
  // fdatasync on the image.
  absl::Status Flush() override;

 private:
  // What a request did: its status byte and the data bytes it wrote into
  // the chain (not counting the status).
  struct Outcome {
    uint8_t status;
    uint32_t data_written = 0;
  };
  using IoVecs = absl::InlinedVector<iovec, 64>;

  BlockDevice(Options options, int fd, uint64_t capacity);

  // Serves one request; returns the used length.
  uint32_t Handle(Request& req, Endian endian);
  Outcome Execute(Request& req, ChainWriter& data, Endian endian);
  Outcome Read(Request& req, ChainWriter& data, uint64_t sector);
  Outcome Write(Request& req, ChainWriter& data, uint64_t sector);
  Outcome DiscardOrWriteZeroes(Request& req, ChainWriter& data, Endian endian,
                               bool write_zeroes);
  Outcome GetId(ChainWriter& data);
  // Whether [sector, sector + bytes / 512) lies within the capacity.
  bool InRange(uint64_t sector, uint64_t bytes) const;
  // Checks the pieces of an IN/OUT data area: no more than seg_max, none
  // larger than size_max. A piece is a host-contiguous span: one per
  // descriptor, two for a buffer that crosses a guest memory region boundary.
  bool ValidSegments(const IoVecs& iovs) const;
  // All of `iovs` at `offset`, retrying short transfers (consumes `iovs`).
  absl::Status TransferAll(IoVecs& iovs, uint64_t offset, bool write);
  absl::Status WriteZeroes(uint64_t offset, uint64_t len, bool unmap);
  absl::Status Discard(uint64_t offset, uint64_t len);
  absl::Status SyncData();
  // The image cannot punch holes: stop trying, and tell the driver that
  // WRITE_ZEROES no longer unmaps (§5.2.6.2).
  void PunchHoleUnsupported();
  // True while every completed write must already be on disk.
  bool writethrough() const;

  const Options options_;
  const int fd_;
  const uint64_t capacity_;
  const std::vector<uint16_t> queue_sizes_;
  ConfigSpace config_;
  DeviceContext* context_ = nullptr;
  Features features_;
  bool punch_hole_supported_ = true;  // cleared on the first EOPNOTSUPP
  IoVecs iovs_;                       // reused across requests
  BlkStats stats_;
};

}  // namespace vmmkit::virtio

#endif  // VMMKIT_VIRTIO_DEVICE_BLK_H_
