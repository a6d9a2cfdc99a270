// virtio-device/config_space.h: a device's configuration space, kept once and
// shown to each driver in its own byte order.
//
// The bytes are stored little-endian (as a VERSION_1 driver sees them); the
// device declares its multi-byte fields so that a legacy driver on a
// big-endian guest (legacy virtio-ccw on s390x, legacy virtio-pci on ppc64)
// reads each field in guest-native order, whole or in part:
//
//   ConfigSpace config(sizeof(BlkConfig));
//   config.DeclareField(offsetof(BlkConfig, capacity), 8);
//   config.SetU64(offsetof(BlkConfig, capacity), sectors);
//   config.Read(offset, out, endian);   // from VirtioDevice::ReadConfig
//
// Every Set* that changes a value advances generation(), which devices return
// from VirtioDevice::config_generation() (virtio 1.2 §2.5.1: "the device MUST
// change config_generation if ... the value of any field ... changes").
// Thread-compatible.
#ifndef VMMKIT_VIRTIO_DEVICE_CONFIG_SPACE_H_
#define VMMKIT_VIRTIO_DEVICE_CONFIG_SPACE_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "virtqueue/split_queue.h"

namespace vmmkit::virtio {

class ConfigSpace {
 public:
  explicit ConfigSpace(uint32_t size) : bytes_(size, 0) {}

  uint32_t size() const { return static_cast<uint32_t>(bytes_.size()); }
  uint32_t generation() const { return generation_; }

  // Declares [offset, offset + width) as one field (width 2, 4 or 8); other
  // widths, and fields outside the space, are ignored.
  void DeclareField(uint32_t offset, uint32_t width);

  // Little-endian accessors; out-of-range offsets read 0 and write nothing.
  void SetU8(uint32_t offset, uint8_t v) { Set(offset, v, 1); }
  void SetU16(uint32_t offset, uint16_t v) { Set(offset, v, 2); }
  void SetU32(uint32_t offset, uint32_t v) { Set(offset, v, 4); }
  void SetU64(uint32_t offset, uint64_t v) { Set(offset, v, 8); }
  void SetBytes(uint32_t offset, absl::Span<const uint8_t> bytes);
  uint8_t U8(uint32_t offset) const {
    return static_cast<uint8_t>(Get(offset, 1));
  }
  uint16_t U16(uint32_t offset) const {
    return static_cast<uint16_t>(Get(offset, 2));
  }
  uint32_t U32(uint32_t offset) const {
    return static_cast<uint32_t>(Get(offset, 4));
  }
  uint64_t U64(uint32_t offset) const { return Get(offset, 8); }

  // Copies [offset, offset + out.size()) in `endian` order; bytes beyond the
  // end read as 0.
  void Read(uint32_t offset, absl::Span<uint8_t> out,
            virtqueue::Endian endian) const;
  // Converts a driver write of `data` at `offset` in `endian` order into the
  // little-endian bytes it means, without storing them: `out` gets the bytes
  // for [offset, offset + data.size()). Exact for byte fields and for writes
  // of whole fields; a big-endian write of part of a multi-byte field lands
  // outside that window: use ApplyWrite() for fields that can be written so.
  void DecodeWrite(uint32_t offset, absl::Span<const uint8_t> data,
                   virtqueue::Endian endian, absl::Span<uint8_t> out) const;
  // The whole space, little-endian, as it would be after the driver's write
  // of `data` at `offset` in `endian` order (nothing is stored). Exact for
  // any offset and width, partial big-endian field writes included.
  std::vector<uint8_t> ApplyWrite(uint32_t offset,
                                  absl::Span<const uint8_t> data,
                                  virtqueue::Endian endian) const;

 private:
  void Set(uint32_t offset, uint64_t v, uint32_t width);
  uint64_t Get(uint32_t offset, uint32_t width) const;
  // The whole space in big-endian field order.
  std::vector<uint8_t> BigEndianImage() const;

  struct Field {
    uint32_t offset;
    uint32_t width;
  };
  std::vector<uint8_t> bytes_;
  std::vector<Field> fields_;
  uint32_t generation_ = 0;
};

}  // namespace vmmkit::virtio

#endif  // VMMKIT_VIRTIO_DEVICE_CONFIG_SPACE_H_
