// vmm/boot.h: putting a guest image into guest memory and the boot CPU into
// 64-bit long mode at its entry point.
//
//   VMMKIT_ASSIGN_OR_RETURN(BootInfo boot,
//                           LoadImage(kernel, initrd, cmdline, memory, ram));
//   VMMKIT_RETURN_IF_ERROR(WriteLongModeTables(memory, boot.kind));
//   kvm_sregs sregs = ...GetSregs();  SetLongModeSregs(boot.kind, &sregs);
//   regs.rip = boot.entry; regs.rsi = boot.rsi; regs.rdi = boot.rdi; ...
//
// Two kinds of image, told apart by their magic:
// - A static ELF64 x86-64 executable (ET_EXEC): every PT_LOAD segment is
//   copied to guest-physical p_paddr (at or above 1 MiB, inside RAM), its bss
//   zeroed; entry at e_entry with RDI = the command line's address (copied,
//   NUL-terminated, to kCmdlineAddr) or 0 when it is empty, RSI = 0.
// - A Linux bzImage (Documentation/x86/boot.rst): the setup header is checked
//   ("HdrS", protocol 2.06 or later, LOADED_HIGH, XLF_KERNEL_64), the
//   protected-mode kernel is copied to 1 MiB, a zero page (boot_params) is
//   built at kZeroPageAddr with the header, an e820 map, the command line
//   pointer and the initrd (placed high, below initrd_addr_max and RAM's
//   end), type_of_loader 0xff; entry at the 64-bit entry point (load address
//   + 0x200) with RSI = the zero page.
// Anything else is kInvalidArgument "not a bzImage or ELF64".
//
// Low memory, as laid out here (all below 1 MiB):
//   0x0500  GDT            0x7000  zero page (Linux)    0x8ff0  initial RSP
//   0x9000  PML4           0xa000  PDPT   0xb000..0xefff  4 PDs: identity map
//   of the first 4 GiB in 2 MiB pages (1 GiB pages triple-fault under PVM)
//   0x20000 command line   0x9fc00..0xfffff reserved (MP table at 0xf0000)
// GDT selectors: ELF guests get code 0x08 / data 0x10 (contract A); Linux
// gets __BOOT_CS 0x10 / __BOOT_DS 0x18 as its 64-bit boot protocol asks.
//
// Thread-compatible: plain functions over the memory they are given.
#ifndef VMMKIT_VMM_BOOT_H_
#define VMMKIT_VMM_BOOT_H_

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "virtqueue/guest_memory.h"

namespace vmmkit::vmm {

inline constexpr uint64_t kGdtAddr = 0x500;
inline constexpr uint64_t kZeroPageAddr = 0x7000;
inline constexpr uint64_t kBootStackTop = 0x8ff0;
inline constexpr uint64_t kPml4Addr = 0x9000;
inline constexpr uint64_t kPdptAddr = 0xa000;
inline constexpr uint64_t kPdAddr = 0xb000;  // 4 pages
inline constexpr uint64_t kCmdlineAddr = 0x20000;
inline constexpr uint64_t kCmdlineMax = 4096;  // bytes, with the NUL
inline constexpr uint64_t kEbdaStart = 0x9fc00;
inline constexpr uint64_t kBiosStart = 0xf0000;
inline constexpr uint64_t kMpTableAddr = 0xf0000;
inline constexpr uint64_t kHighMemStart = 0x100000;  // 1 MiB
// RAM ends here at the latest: above is the PCI hole (MMIO window at
// 0xC0000000, IOAPIC, LAPIC).
inline constexpr uint64_t kMaxRamSize = 0xc0000000;

enum class ImageKind { kElf, kBzImage };

struct BootInfo {
  ImageKind kind = ImageKind::kElf;
  uint64_t entry = 0;
  uint64_t rsi = 0;
  uint64_t rdi = 0;
};

// Which kind `image` is, by magic only: kInvalidArgument
// "not a bzImage or ELF64" for anything else.
absl::StatusOr<ImageKind> DetectImage(absl::Span<const uint8_t> image);

// Loads an ELF64 test guest (see the header comment); returns its entry.
// kInvalidArgument for a truncated or malformed file, a wrong class, machine
// or type, and segments outside [1 MiB, ram_size) or overlapping low memory.
absl::StatusOr<uint64_t> LoadElf(absl::Span<const uint8_t> image,
                                 const virtqueue::GuestMemory& memory,
                                 uint64_t ram_size);

// The e820 type values and one entry as it sits in boot_params (packed).
inline constexpr uint32_t kE820Ram = 1;
inline constexpr uint32_t kE820Reserved = 2;
#pragma pack(push, 1)
struct E820Entry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;
};
#pragma pack(pop)
static_assert(sizeof(E820Entry) == 20);
static_assert(offsetof(E820Entry, size) == 8);
static_assert(offsetof(E820Entry, type) == 16);

// The memory map for `ram_size` bytes of RAM from address 0: RAM below the
// EBDA, the reserved EBDA/VGA/BIOS area, RAM from 1 MiB to ram_size.
std::vector<E820Entry> E820Map(uint64_t ram_size);

// struct setup_header (Documentation/x86/boot.rst), as it sits in the
// bzImage at 0x1f1 and in boot_params at the same offset. Little-endian.
#pragma pack(push, 1)
struct SetupHeader {
  uint8_t setup_sects;
  uint16_t root_flags;
  uint32_t syssize;
  uint16_t ram_size;
  uint16_t vid_mode;
  uint16_t root_dev;
  uint16_t boot_flag;  // 0xaa55
  uint16_t jump;
  uint32_t header;  // "HdrS"
  uint16_t version;
  uint32_t realmode_swtch;
  uint16_t start_sys_seg;
  uint16_t kernel_version;
  uint8_t type_of_loader;
  uint8_t loadflags;
  uint16_t setup_move_size;
  uint32_t code32_start;
  uint32_t ramdisk_image;
  uint32_t ramdisk_size;
  uint32_t bootsect_kludge;
  uint16_t heap_end_ptr;
  uint8_t ext_loader_ver;
  uint8_t ext_loader_type;
  uint32_t cmd_line_ptr;
  uint32_t initrd_addr_max;
  uint32_t kernel_alignment;
  uint8_t relocatable_kernel;
  uint8_t min_alignment;
  uint16_t xloadflags;
  uint32_t cmdline_size;
  uint32_t hardware_subarch;
  uint64_t hardware_subarch_data;
  uint32_t payload_offset;
  uint32_t payload_length;
  uint64_t setup_data;
  uint64_t pref_address;
  uint32_t init_size;
  uint32_t handover_offset;
  uint32_t kernel_info_offset;
};
#pragma pack(pop)
inline constexpr uint32_t kSetupHeaderOffset = 0x1f1;
static_assert(kSetupHeaderOffset + offsetof(SetupHeader, boot_flag) == 0x1fe);
static_assert(kSetupHeaderOffset + offsetof(SetupHeader, header) == 0x202);
static_assert(kSetupHeaderOffset + offsetof(SetupHeader, version) == 0x206);
static_assert(kSetupHeaderOffset + offsetof(SetupHeader, type_of_loader) ==
              0x210);
static_assert(kSetupHeaderOffset + offsetof(SetupHeader, loadflags) == 0x211);
static_assert(kSetupHeaderOffset + offsetof(SetupHeader, code32_start) ==
              0x214);
static_assert(kSetupHeaderOffset + offsetof(SetupHeader, ramdisk_image) ==
              0x218);
static_assert(kSetupHeaderOffset + offsetof(SetupHeader, cmd_line_ptr) ==
              0x228);
static_assert(kSetupHeaderOffset + offsetof(SetupHeader, initrd_addr_max) ==
              0x22c);
static_assert(kSetupHeaderOffset + offsetof(SetupHeader, xloadflags) == 0x236);
static_assert(kSetupHeaderOffset + offsetof(SetupHeader, cmdline_size) ==
              0x238);
static_assert(kSetupHeaderOffset + offsetof(SetupHeader, pref_address) ==
              0x258);
static_assert(kSetupHeaderOffset + offsetof(SetupHeader, init_size) == 0x260);
static_assert(kSetupHeaderOffset + sizeof(SetupHeader) == 0x26c);

inline constexpr uint32_t kHdrSMagic = 0x53726448;  // "HdrS"
inline constexpr uint8_t kLoadedHigh = 1 << 0;
inline constexpr uint8_t kCanUseHeap = 1 << 7;
inline constexpr uint16_t kXlfKernel64 = 1 << 0;

// Offsets in boot_params (the zero page, 4096 bytes) outside the header.
inline constexpr uint32_t kZpExtRamdiskImage = 0x0c0;
inline constexpr uint32_t kZpAltMemK = 0x1e0;
inline constexpr uint32_t kZpExtRamdiskSize = 0x0c4;
inline constexpr uint32_t kZpExtCmdLinePtr = 0x0c8;
inline constexpr uint32_t kZpE820Entries = 0x1e8;
inline constexpr uint32_t kZpE820Table = 0x2d0;
inline constexpr uint32_t kZpE820Max = 128;
static_assert(kZpE820Table + kZpE820Max * sizeof(E820Entry) <= 0xcd0 + 0x100);

// Builds boot_params for a bzImage (exposed for tests): the image's setup
// header copied in, then the loader's fields, e820 and command line/initrd
// pointers. `kernel_header` is the header as read from the image.
std::vector<uint8_t> BuildZeroPage(const SetupHeader& kernel_header,
                                   uint64_t ram_size, uint64_t cmdline_addr,
                                   uint32_t cmdline_len, uint64_t initrd_addr,
                                   uint64_t initrd_size);

// Loads a bzImage with an optional initrd and command line.
absl::StatusOr<BootInfo> LoadBzImage(absl::Span<const uint8_t> image,
                                     absl::Span<const uint8_t> initrd,
                                     absl::string_view cmdline,
                                     const virtqueue::GuestMemory& memory,
                                     uint64_t ram_size);

// Detects the kind and loads it, with the command line (kInvalidArgument if
// it has kCmdlineMax bytes or more); an initrd for an ELF image is
// kInvalidArgument.
absl::StatusOr<BootInfo> LoadImage(absl::Span<const uint8_t> image,
                                   absl::Span<const uint8_t> initrd,
                                   absl::string_view cmdline,
                                   const virtqueue::GuestMemory& memory,
                                   uint64_t ram_size);

// GDT entries (flat 4 GiB segments) and the selectors used for each kind.
inline constexpr uint64_t kGdtCode64 = 0x00af9b000000ffff;  // L=1, P, DPL 0
inline constexpr uint64_t kGdtData = 0x00cf93000000ffff;    // RW, 4 GiB
inline constexpr uint64_t kGdtTss = 0x00808b0000000067;     // busy TSS
struct Selectors {
  uint16_t code;
  uint16_t data;
  uint16_t tss;
};
Selectors SelectorsFor(ImageKind kind);

// Writes the GDT and the identity-mapping page tables into low memory.
absl::Status WriteLongModeTables(const virtqueue::GuestMemory& memory,
                                 ImageKind kind);
// Fills the segment, control and descriptor-table registers for long mode:
// CR0 PE|MP|ET|NE|WP|PG, CR3 = kPml4Addr, CR4 PAE, EFER LME|LMA|SCE, the GDT
// of WriteLongModeTables, no IDT, 64-bit code and flat data segments.
void SetLongModeSregs(ImageKind kind, kvm_sregs* sregs);

}  // namespace vmmkit::vmm

#endif  // VMMKIT_VMM_BOOT_H_
