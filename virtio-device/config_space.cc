#include "virtio-device/config_space.h"

#include <algorithm>
#include <cstring>

namespace vmmkit::virtio {

void ConfigSpace::DeclareField(uint32_t offset, uint32_t width) {
  if (width != 2 && width != 4 && width != 8) return;
  if (offset > bytes_.size() || width > bytes_.size() - offset) return;
  fields_.push_back({offset, width});
}

void ConfigSpace::Set(uint32_t offset, uint64_t v, uint32_t width) {
  if (offset > bytes_.size() || width > bytes_.size() - offset) return;
  uint8_t le[8];
  for (uint32_t i = 0; i < width; ++i)
    le[i] = static_cast<uint8_t>(v >> (8 * i));
  if (std::memcmp(&bytes_[offset], le, width) != 0) {
    std::memcpy(&bytes_[offset], le, width);
    ++generation_;
  }
}

void ConfigSpace::SetBytes(uint32_t offset, absl::Span<const uint8_t> bytes) {
  // Empty spans may carry a null pointer, which memcmp/memcpy must not see.
  if (bytes.empty()) return;
  if (offset > bytes_.size() || bytes.size() > bytes_.size() - offset) return;
  if (std::memcmp(&bytes_[offset], bytes.data(), bytes.size()) != 0) {
    std::memcpy(&bytes_[offset], bytes.data(), bytes.size());
    ++generation_;
  }
}

uint64_t ConfigSpace::Get(uint32_t offset, uint32_t width) const {
  if (offset > bytes_.size() || width > bytes_.size() - offset) return 0;
  uint64_t v = 0;
  for (uint32_t i = 0; i < width; ++i)
    v |= uint64_t{bytes_[offset + i]} << (8 * i);
  return v;
}

std::vector<uint8_t> ConfigSpace::BigEndianImage() const {
  std::vector<uint8_t> image = bytes_;
  for (const Field& f : fields_) {
    std::reverse(image.begin() + f.offset, image.begin() + f.offset + f.width);
  }
  return image;
}

void ConfigSpace::Read(uint32_t offset, absl::Span<uint8_t> out,
                       virtqueue::Endian endian) const {
  std::fill(out.begin(), out.end(), 0);
  if (offset >= bytes_.size() || out.empty()) return;
  const size_t n = std::min<size_t>(out.size(), bytes_.size() - offset);
  if (endian == virtqueue::Endian::kLittle) {
    std::memcpy(out.data(), &bytes_[offset], n);
  } else {
    const std::vector<uint8_t> image = BigEndianImage();
    std::memcpy(out.data(), &image[offset], n);
  }
}

void ConfigSpace::DecodeWrite(uint32_t offset, absl::Span<const uint8_t> data,
                              virtqueue::Endian endian,
                              absl::Span<uint8_t> out) const {
  const size_t n = std::min(data.size(), out.size());
  if (n == 0) return;  // an empty span's data() may be null
  std::memcpy(out.data(), data.data(), n);
  if (endian == virtqueue::Endian::kLittle) return;
  // Lay the write over the big-endian image, then turn the touched fields
  // back to little-endian.
  std::vector<uint8_t> image = BigEndianImage();
  for (size_t i = 0; i < n; ++i) {
    if (offset + i < image.size()) image[offset + i] = data[i];
  }
  for (const Field& f : fields_) {
    std::reverse(image.begin() + f.offset, image.begin() + f.offset + f.width);
  }
  for (size_t i = 0; i < n; ++i) {
    if (offset + i < image.size()) out[i] = image[offset + i];
  }
}

std::vector<uint8_t> ConfigSpace::ApplyWrite(uint32_t offset,
                                             absl::Span<const uint8_t> data,
                                             virtqueue::Endian endian) const {
  const bool big = endian == virtqueue::Endian::kBig;
  std::vector<uint8_t> image = big ? BigEndianImage() : bytes_;
  for (size_t i = 0; i < data.size(); ++i) {
    if (offset + i < image.size()) image[offset + i] = data[i];
  }
  if (big) {
    for (const Field& f : fields_) {
      std::reverse(image.begin() + f.offset,
                   image.begin() + f.offset + f.width);
    }
  }
  return image;
}

}  // namespace vmmkit::virtio
