// tests/vmm_guest/platform.h: PlatformAccess (tests/virtio_pci/driver.h) for
// the real machine the test guest runs on: in/out instructions, volatile MMIO
// of the exact width, guest RAM identity-mapped as DMA memory handed out by a
// bump allocator, mfence, MSI-X vectors counted by the IDT handlers and INTx
// through an IOAPIC line.
//
//   DmaArena dma(0x400000, 0xc00000);
//   GuestPlatform p(dma, /*msi_data_base=*/0x50);
//   VirtioPciDriver drv(p);
//   drv.FindDevice(2, 0);
//   p.set_gsi(drv.Cfg(0x3c, 1));          // Interrupt Line: the IOAPIC GSI
//   IoapicRoute(p.gsi(), IntxVector(p.gsi()));
//   drv.Probe({.use_msix = false, .msi_data_base = p.msi_data_base()});
//
// Thread-compatibility: BSP only.
#ifndef VMMKIT_TESTS_VMM_GUEST_PLATFORM_H_
#define VMMKIT_TESTS_VMM_GUEST_PLATFORM_H_

#include <cstdint>

#include "tests/virtio_pci/driver.h"
#include "tests/vmm_guest/runtime.h"

namespace vmmkit::tests::vmm_guest {

// A bump allocator over [base, limit) of guest RAM; memory handed out is
// zeroed. Never frees.
class DmaArena {
 public:
  DmaArena(uint64_t base, uint64_t limit) : next_(base), limit_(limit) {}
  uint64_t Alloc(uint64_t size, uint64_t align) {
    if (align == 0) align = 1;
    const uint64_t a = (next_ + align - 1) & ~(align - 1);
    if (a < next_ || a + size < a || a + size > limit_) return 0;
    next_ = a + size;
    memset(reinterpret_cast<void*>(a), 0, size);
    return a;
  }
  uint64_t used_up_to() const { return next_; }

 private:
  uint64_t next_;
  uint64_t limit_;
};

class GuestPlatform final : public virtio_pci::PlatformAccess {
 public:
  static constexpr int kVectorsPerDevice = 8;

  GuestPlatform(DmaArena& dma, uint8_t msi_data_base)
      : dma_(dma), msi_data_base_(msi_data_base) {}

  uint32_t InPort(uint16_t port, int width) override {
    ++port_reads;
    uint32_t v;
    switch (width) {
      case 1:
        v = Inb(port);
        break;
      case 2:
        v = Inw(port);
        break;
      default:
        v = Inl(port);
        break;
    }
    if (port >= 0xcfc && port <= 0xcff) PciConfigUnlock();
    return v;
  }
  void OutPort(uint16_t port, uint32_t value, int width) override {
    ++port_writes;
    if (port == 0xcf8) PciConfigLock();
    switch (width) {
      case 1:
        Outb(port, static_cast<uint8_t>(value));
        break;
      case 2:
        Outw(port, static_cast<uint16_t>(value));
        break;
      default:
        Outl(port, value);
        break;
    }
    if (port >= 0xcfc && port <= 0xcff) PciConfigUnlock();
  }
  uint64_t MmioRead(uint64_t address, int width) override {
    ++mmio_reads;
    if (!EnsureMapped(address)) return ~uint64_t{0};
    return vmm_guest::MmioRead(address, width);
  }
  void MmioWrite(uint64_t address, uint64_t value, int width) override {
    ++mmio_writes;
    if (!EnsureMapped(address)) return;
    vmm_guest::MmioWrite(address, value, width);
  }
  uint64_t AllocDma(uint64_t size, uint64_t align) override {
    return dma_.Alloc(size, align);
  }
  void MemRead(uint64_t address, void* out, uint64_t length) override {
    memcpy(out, reinterpret_cast<const void*>(address), length);
  }
  void MemWrite(uint64_t address, const void* in, uint64_t length) override {
    memcpy(reinterpret_cast<void*>(address), in, length);
  }
  void MemoryBarrier() override { Mfence(); }
  bool TakeMsi(uint64_t* address, uint32_t* data) override {
    for (int i = 0; i < kVectorsPerDevice; ++i) {
      const uint8_t v = static_cast<uint8_t>(msi_data_base_ + i);
      if (MsiTake(v)) {
        *address = kLapicBase;
        *data = v;
        ++msis_taken;
        return true;
      }
    }
    return false;
  }
  bool IntxAsserted() override { return gsi_ >= 0 && IntxTake(gsi_); }
  void WaitForInterrupt() override {
    ++waits;
    vmm_guest::WaitForInterrupt(1000, gsi_);
  }

  uint8_t msi_data_base() const { return msi_data_base_; }
  // The LAPIC that takes this device's interrupts (MSI destination, IOAPIC
  // destination): the vCPU that drives it.
  void set_lapic_id(uint32_t id) { lapic_id_ = id; }
  uint32_t lapic_id() const { return lapic_id_; }
  void set_gsi(int gsi) { gsi_ = gsi; }
  int gsi() const { return gsi_; }

  uint64_t port_reads = 0, port_writes = 0, mmio_reads = 0, mmio_writes = 0;
  uint64_t waits = 0, msis_taken = 0;

 private:
  DmaArena& dma_;
  uint8_t msi_data_base_;
  int gsi_ = -1;
  uint32_t lapic_id_ = 0;
};

}  // namespace vmmkit::tests::vmm_guest

#endif  // VMMKIT_TESTS_VMM_GUEST_PLATFORM_H_
