#include "pci/root_bus.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"

namespace vmmkit::pci {
namespace {

void FillOnes(absl::Span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0xff);
}

bool Overlaps(uint32_t reg, size_t n, uint32_t lo, uint32_t hi) {
  return reg < hi && lo < reg + n;
}

}  // namespace

RootBus::RootBus(const Options& options)
    : options_(options),
      host_bridge_(std::make_unique<GenericPciFunction>(
          ConfigSpace::Options{.vendor_id = kHostBridgeVendorId,
                               .device_id = kHostBridgeDeviceId,
                               .class_code = kClassHostBridge})) {
  functions_[0] = host_bridge_.get();
  present_.push_back(0);
}

absl::Status RootBus::AddFunction(PciAddress address, PciFunction* function) {
  if (function == nullptr || address.bus != 0 || address.device == 0 ||
      address.device >= kDevicesPerBus ||
      address.function >= kFunctionsPerDevice) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cannot add a function at %02x:%02x.%x (bus 0, device 1..31, "
        "function 0..7, non-null)",
        address.bus, address.device, address.function));
  }
  if (functions_[Index(address)] != nullptr) {
    return absl::AlreadyExistsError(absl::StrFormat("%02x:%02x.%x is taken",
                                                    address.bus, address.device,
                                                    address.function));
  }
  functions_[Index(address)] = function;
  decoders_valid_ = false;
  present_.insert(
      std::upper_bound(present_.begin(), present_.end(), Index(address)),
      Index(address));
  // "Bit 7 ... identifies a multi-function device" (PCI 3.0 §6.2.1): set on
  // function 0 once the device has more than one function.
  PciFunction* fn0 = functions_[Index({0, address.device, 0})];
  if (fn0 != nullptr) {
    int count = 0;
    for (int f = 0; f < kFunctionsPerDevice; ++f) {
      count +=
          functions_[Index({0, address.device, static_cast<uint8_t>(f)})] !=
          nullptr;
    }
    if (count > 1) fn0->config_space().SetMultiFunction(true);
  }
  return absl::OkStatus();
}

absl::StatusOr<PciAddress> RootBus::AddDevice(PciFunction* function) {
  for (int d = 1; d < kDevicesPerBus; ++d) {
    bool free = true;
    for (int f = 0; f < kFunctionsPerDevice; ++f) {
      free = free && functions_[d * kFunctionsPerDevice + f] == nullptr;
    }
    if (!free) continue;
    const PciAddress at{0, static_cast<uint8_t>(d), 0};
    if (absl::Status s = AddFunction(at, function); !s.ok()) return s;
    return at;
  }
  return absl::ResourceExhaustedError("bus 0 has no free device number");
}

PciFunction* RootBus::function(PciAddress address) const {
  if (address.bus != 0 || address.device >= kDevicesPerBus ||
      address.function >= kFunctionsPerDevice) {
    return nullptr;
  }
  return functions_[Index(address)];
}

absl::Status RootBus::AssignBars(bool enable_decoding) {
  struct Item {
    ConfigSpace* config;
    int bar;
    BarSpec spec;
  };
  std::vector<Item> items;
  for (PciFunction* fn : functions_) {
    if (fn == nullptr) continue;
    ConfigSpace& c = fn->config_space();
    for (int b = 0; b < kNumBars; ++b) {
      if (c.bar(b).type != BarType::kNone) items.push_back({&c, b, c.bar(b)});
    }
  }
  // Largest first: each allocation then starts aligned for every later one.
  std::stable_sort(
      items.begin(), items.end(),
      [](const Item& a, const Item& b) { return a.spec.size > b.spec.size; });
  uint64_t next_io = options_.io.base;
  uint64_t next32 = options_.mmio32.base;
  uint64_t next64 = options_.mmio64.base;
  for (const Item& it : items) {
    const Window* w = &options_.mmio32;
    uint64_t* next = &next32;
    if (it.spec.type == BarType::kIo) {
      w = &options_.io;
      next = &next_io;
    } else if (it.spec.type == BarType::kMemory64 && options_.mmio64.size) {
      w = &options_.mmio64;
      next = &next64;
    }
    const uint64_t size = it.spec.size;
    const uint64_t at = (*next + size - 1) & ~(size - 1);
    const uint64_t end = w->base + w->size;
    if (at < *next || at > end || size > end - at) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "no room for a %#x-byte BAR in the window [%#x, +%#x)", size, w->base,
          w->size));
    }
    if (absl::Status s = it.config->SetBarAddress(it.bar, at); !s.ok()) {
      return s;
    }
    *next = at + size;
  }
  if (enable_decoding) {
    for (PciFunction* fn : functions_) {
      if (fn == nullptr) continue;
      ConfigSpace& c = fn->config_space();
      uint16_t cmd = c.command();
      for (int b = 0; b < kNumBars; ++b) {
        if (c.bar(b).type == BarType::kIo) cmd |= kCommandIo;
        if (c.bar(b).type == BarType::kMemory32 ||
            c.bar(b).type == BarType::kMemory64) {
          cmd |= kCommandMemory;
        }
      }
      c.Set16(kRegCommand, cmd);
    }
  }
  return absl::OkStatus();
}

RootBus::BarMap RootBus::MapBars(ConfigSpace& config) {
  BarMap map;
  for (int b = 0; b < kNumBars; ++b) {
    const BarSpec& spec = config.bar(b);
    if (spec.type == BarType::kNone || !config.BarDecodingEnabled(b)) continue;
    const uint64_t base = config.BarAddress(b);
    // Address 0 means "not assigned"; a range that wraps decodes nothing.
    if (base == 0 || base + spec.size < base) continue;
    map[b] = base;
  }
  return map;
}

void RootBus::RefreshDecoders() const {
  bool valid = decoders_valid_;
  // A cheap check on every access: one generation per function.
  for (size_t k = 0; valid && k < present_.size(); ++k) {
    valid = functions_[present_[k]]->config_space().decode_generation() ==
            decoder_generations_[k];
  }
  if (valid) return;
  decoders_.clear();
  decoder_generations_.clear();
  for (const int i : present_) {
    ConfigSpace& c = functions_[i]->config_space();
    decoder_generations_.push_back(c.decode_generation());
    const BarMap map = MapBars(c);
    for (int b = 0; b < kNumBars; ++b) {
      if (!map[b].has_value()) continue;
      decoders_.push_back({.base = *map[b],
                           .size = c.bar(b).size,
                           .index = i,
                           .bar = b,
                           .io = c.bar(b).type == BarType::kIo});
    }
  }
  decoders_valid_ = true;
}

std::optional<RootBus::BarTarget> RootBus::FindBar(bool is_io, uint64_t address,
                                                   uint64_t length) const {
  RefreshDecoders();
  for (const Decoder& d : decoders_) {
    if (d.io != is_io || address < d.base) continue;
    const uint64_t rel = address - d.base;
    if (rel < d.size && length <= d.size - rel) {
      return BarTarget{
          .address = {0, static_cast<uint8_t>(d.index / kFunctionsPerDevice),
                      static_cast<uint8_t>(d.index % kFunctionsPerDevice)},
          .function = functions_[d.index],
          .bar = d.bar,
          .offset = rel};
    }
  }
  return std::nullopt;
}

void RootBus::ConfigRead(PciAddress address, uint32_t reg,
                         absl::Span<uint8_t> data) {
  PciFunction* fn = function(address);
  if (fn == nullptr) {
    FillOnes(data);
    return;
  }
  fn->ConfigRead(reg, data);
}

void RootBus::ConfigWrite(PciAddress address, uint32_t reg,
                          absl::Span<const uint8_t> data) {
  PciFunction* fn = function(address);
  if (fn == nullptr) return;
  // Only the command register and the BARs move what a function decodes.
  const bool may_remap =
      bar_changed_ &&
      (Overlaps(reg, data.size(), kRegCommand, kRegCommand + 2) ||
       Overlaps(reg, data.size(), kRegBar0, kRegCardbusCis));
  if (!may_remap) {
    fn->ConfigWrite(reg, data);
    return;
  }
  const BarMap before = MapBars(fn->config_space());
  fn->ConfigWrite(reg, data);
  const BarMap after = MapBars(fn->config_space());
  for (int b = 0; b < kNumBars; ++b) {
    if (before[b] != after[b]) bar_changed_(address, b);
  }
}

bool RootBus::PioRead(uint64_t port, absl::Span<uint8_t> data) {
  const size_t n = data.size();
  if (port == kConfigAddressPort && n == 4) {
    // Little-endian, as x86 port I/O.
    for (int i = 0; i < 4; ++i) data[i] = (config_address_ >> (8 * i)) & 0xff;
    return true;
  }
  if (port >= kConfigDataPort && port < kConfigDataPort + 4) {
    const uint32_t k = static_cast<uint32_t>(port - kConfigDataPort);
    if (!(config_address_ & kConfigAddressEnable) || k + n > 4) {
      FillOnes(data);
      return true;
    }
    const PciAddress a{static_cast<uint8_t>(config_address_ >> 16),
                       static_cast<uint8_t>((config_address_ >> 11) & 0x1f),
                       static_cast<uint8_t>((config_address_ >> 8) & 0x7)};
    ConfigRead(a, (config_address_ & 0xfc) + k, data);
    return true;
  }
  if (std::optional<BarTarget> t = FindBar(true, port, n)) {
    t->function->BarRead(t->bar, t->offset, data);
    return true;
  }
  FillOnes(data);
  return false;
}

bool RootBus::PioWrite(uint64_t port, absl::Span<const uint8_t> data) {
  const size_t n = data.size();
  if (port == kConfigAddressPort && n == 4) {
    const uint32_t v = data[0] | (uint32_t{data[1]} << 8) |
                       (uint32_t{data[2]} << 16) | (uint32_t{data[3]} << 24);
    config_address_ = v & kConfigAddressMask;
    return true;
  }
  if (port >= kConfigDataPort && port < kConfigDataPort + 4) {
    const uint32_t k = static_cast<uint32_t>(port - kConfigDataPort);
    if (!(config_address_ & kConfigAddressEnable) || k + n > 4) return true;
    const PciAddress a{static_cast<uint8_t>(config_address_ >> 16),
                       static_cast<uint8_t>((config_address_ >> 11) & 0x1f),
                       static_cast<uint8_t>((config_address_ >> 8) & 0x7)};
    ConfigWrite(a, (config_address_ & 0xfc) + k, data);
    return true;
  }
  if (std::optional<BarTarget> t = FindBar(true, port, n)) {
    t->function->BarWrite(t->bar, t->offset, data);
    return true;
  }
  return false;
}

bool RootBus::MmioRead(uint64_t address, absl::Span<uint8_t> data) {
  const size_t n = data.size();
  if (options_.ecam_base != 0 && address >= options_.ecam_base &&
      address - options_.ecam_base < kEcamBytesPerBus) {
    const uint64_t off = address - options_.ecam_base;
    const uint32_t reg = off & 0xfff;
    if (reg + n > 0x1000) {
      FillOnes(data);
    } else {
      ConfigRead({0, static_cast<uint8_t>((off >> 15) & 0x1f),
                  static_cast<uint8_t>((off >> 12) & 0x7)},
                 reg, data);
    }
    return true;
  }
  if (std::optional<BarTarget> t = FindBar(false, address, n)) {
    t->function->BarRead(t->bar, t->offset, data);
    return true;
  }
  FillOnes(data);
  return false;
}

bool RootBus::MmioWrite(uint64_t address, absl::Span<const uint8_t> data) {
  const size_t n = data.size();
  if (options_.ecam_base != 0 && address >= options_.ecam_base &&
      address - options_.ecam_base < kEcamBytesPerBus) {
    const uint64_t off = address - options_.ecam_base;
    const uint32_t reg = off & 0xfff;
    if (reg + n <= 0x1000) {
      ConfigWrite({0, static_cast<uint8_t>((off >> 15) & 0x1f),
                   static_cast<uint8_t>((off >> 12) & 0x7)},
                  reg, data);
    }
    return true;
  }
  if (std::optional<BarTarget> t = FindBar(false, address, n)) {
    t->function->BarWrite(t->bar, t->offset, data);
    return true;
  }
  return false;
}

}  // namespace vmmkit::pci
