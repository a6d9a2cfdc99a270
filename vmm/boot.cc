// vmm/boot.cc: see boot.h.
#include "vmm/boot.h"

#include <elf.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status.h"

namespace vmmkit::vmm {
namespace {

constexpr uint16_t kMaxProgramHeaders = 64;

absl::Status NotAnImage() {
  return absl::InvalidArgumentError("not a bzImage or ELF64");
}

bool IsElf(absl::Span<const uint8_t> image) {
  return image.size() >= 4 && std::memcmp(image.data(), ELFMAG, SELFMAG) == 0;
}

bool IsBzImage(absl::Span<const uint8_t> image) {
  if (image.size() < kSetupHeaderOffset + sizeof(SetupHeader)) return false;
  SetupHeader hdr;
  std::memcpy(&hdr, image.data() + kSetupHeaderOffset, sizeof(hdr));
  return hdr.boot_flag == 0xaa55 && hdr.header == kHdrSMagic;
}

absl::Status Write(const virtqueue::GuestMemory& memory, uint64_t addr,
                   absl::Span<const uint8_t> bytes, const char* what) {
  absl::Status s = memory.Write(addr, bytes);
  if (!s.ok()) return Annotate(s, what);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ImageKind> DetectImage(absl::Span<const uint8_t> image) {
  if (IsElf(image)) return ImageKind::kElf;
  if (IsBzImage(image)) return ImageKind::kBzImage;
  return NotAnImage();
}

absl::StatusOr<uint64_t> LoadElf(absl::Span<const uint8_t> image,
                                 const virtqueue::GuestMemory& memory,
                                 uint64_t ram_size) {
  if (!IsElf(image)) return NotAnImage();
  if (image.size() < sizeof(Elf64_Ehdr)) {
    return absl::InvalidArgumentError("ELF: truncated header");
  }
  Elf64_Ehdr eh;
  std::memcpy(&eh, image.data(), sizeof(eh));
  if (eh.e_ident[EI_CLASS] != ELFCLASS64) {
    return absl::InvalidArgumentError("ELF: not ELF64");
  }
  if (eh.e_ident[EI_DATA] != ELFDATA2LSB) {
    return absl::InvalidArgumentError("ELF: not little-endian");
  }
  if (eh.e_machine != EM_X86_64) {
    return absl::InvalidArgumentError("ELF: not x86-64");
  }
  if (eh.e_type != ET_EXEC) {
    return absl::InvalidArgumentError("ELF: not a static executable (ET_EXEC)");
  }
  if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 ||
      eh.e_phnum > kMaxProgramHeaders) {
    return absl::InvalidArgumentError("ELF: bad program header table");
  }
  const uint64_t ph_bytes = uint64_t{eh.e_phnum} * sizeof(Elf64_Phdr);
  if (eh.e_phoff > image.size() || ph_bytes > image.size() - eh.e_phoff) {
    return absl::InvalidArgumentError("ELF: truncated program headers");
  }
  // Check every segment before copying any.
  std::vector<Elf64_Phdr> loads;
  bool entry_loaded = false;
  for (uint16_t i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    std::memcpy(&ph, image.data() + eh.e_phoff + i * sizeof(Elf64_Phdr),
                sizeof(ph));
    if (ph.p_type != PT_LOAD) continue;
    if (ph.p_offset > image.size() ||
        ph.p_filesz > image.size() - ph.p_offset) {
      return absl::InvalidArgumentError(
          absl::StrFormat("ELF: segment %d truncated (offset %#x, %#x bytes, "
                          "file %#x)",
                          i, ph.p_offset, ph.p_filesz, image.size()));
    }
    if (ph.p_filesz > ph.p_memsz) {
      return absl::InvalidArgumentError(
          absl::StrFormat("ELF: segment %d filesz > memsz", i));
    }
    if (ph.p_paddr < kHighMemStart || ph.p_paddr > ram_size ||
        ph.p_memsz > ram_size - ph.p_paddr) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ELF: segment %d [%#x, +%#x) outside RAM [1 MiB, %#x)", i, ph.p_paddr,
          ph.p_memsz, ram_size));
    }
    if (eh.e_entry >= ph.p_paddr && eh.e_entry - ph.p_paddr < ph.p_memsz) {
      entry_loaded = true;
    }
    loads.push_back(ph);
  }
  if (loads.empty()) return absl::InvalidArgumentError("ELF: no PT_LOAD");
  if (!entry_loaded) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ELF: entry %#x not in a loaded segment", eh.e_entry));
  }
  for (const Elf64_Phdr& ph : loads) {
    VMMKIT_RETURN_IF_ERROR(Write(memory, ph.p_paddr,
                                 image.subspan(ph.p_offset, ph.p_filesz),
                                 "ELF segment"));
    VMMKIT_RETURN_IF_ERROR(
        memory.Fill(ph.p_paddr + ph.p_filesz, ph.p_memsz - ph.p_filesz, 0));
  }
  return eh.e_entry;
}

std::vector<E820Entry> E820Map(uint64_t ram_size) {
  std::vector<E820Entry> map;
  map.push_back({0, std::min(ram_size, kEbdaStart), kE820Ram});
  map.push_back({kEbdaStart, kHighMemStart - kEbdaStart, kE820Reserved});
  if (ram_size > kHighMemStart) {
    map.push_back({kHighMemStart, ram_size - kHighMemStart, kE820Ram});
  }
  return map;
}

std::vector<uint8_t> BuildZeroPage(const SetupHeader& kernel_header,
                                   uint64_t ram_size, uint64_t cmdline_addr,
                                   uint32_t cmdline_len, uint64_t initrd_addr,
                                   uint64_t initrd_size) {
  std::vector<uint8_t> zp(4096, 0);
  SetupHeader hdr = kernel_header;
  hdr.type_of_loader = 0xff;  // undefined loader
  hdr.loadflags = static_cast<uint8_t>(hdr.loadflags | kCanUseHeap);
  hdr.loadflags = static_cast<uint8_t>(hdr.loadflags & ~(1 << 5));  // !QUIET
  hdr.heap_end_ptr = 0xfe00;  // boot.rst: "heap_end_ptr = 0xfe00"
  hdr.ext_loader_ver = 0;
  hdr.cmd_line_ptr = static_cast<uint32_t>(cmdline_addr);
  (void)cmdline_len;  // NUL-terminated; cmdline_size is the kernel's limit
  hdr.ramdisk_image = static_cast<uint32_t>(initrd_addr);
  hdr.ramdisk_size = static_cast<uint32_t>(initrd_size);
  hdr.vid_mode = 0xffff;  // "normal"
  std::memcpy(zp.data() + kSetupHeaderOffset, &hdr, sizeof(hdr));
  auto put32 = [&](uint32_t off, uint32_t v) {
    std::memcpy(zp.data() + off, &v, 4);
  };
  // alt_mem_k: KiB of memory above 1 MiB (for loaders' sake; Linux takes
  // the e820 map).
  put32(kZpAltMemK, static_cast<uint32_t>(
                        ram_size > kHighMemStart
                            ? std::min<uint64_t>(
                                  (ram_size - kHighMemStart) >> 10, UINT32_MAX)
                            : 0));
  put32(kZpExtRamdiskImage, static_cast<uint32_t>(initrd_addr >> 32));
  put32(kZpExtRamdiskSize, static_cast<uint32_t>(initrd_size >> 32));
  put32(kZpExtCmdLinePtr, static_cast<uint32_t>(cmdline_addr >> 32));
  std::vector<E820Entry> map = E820Map(ram_size);
  zp[kZpE820Entries] = static_cast<uint8_t>(map.size());
  std::memcpy(zp.data() + kZpE820Table, map.data(),
              map.size() * sizeof(E820Entry));
  return zp;
}

absl::StatusOr<BootInfo> LoadBzImage(absl::Span<const uint8_t> image,
                                     absl::Span<const uint8_t> initrd,
                                     absl::string_view cmdline,
                                     const virtqueue::GuestMemory& memory,
                                     uint64_t ram_size) {
  if (!IsBzImage(image)) return NotAnImage();
  SetupHeader hdr;
  std::memcpy(&hdr, image.data() + kSetupHeaderOffset, sizeof(hdr));
  // The header ends where the jump at 0x200 lands (boot.rst: "the end of
  // the setup header can be calculated as 0x0202 + the byte value at offset
  // 0x0201"): bytes past it are the setup code's, not header fields.
  {
    const size_t end = std::min<size_t>(0x202 + image[0x201],
                                        kSetupHeaderOffset + sizeof(hdr));
    auto* raw = reinterpret_cast<uint8_t*>(&hdr);
    std::memset(raw + (end - kSetupHeaderOffset), 0,
                sizeof(hdr) - (end - kSetupHeaderOffset));
  }
  if (hdr.version < 0x206) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bzImage: boot protocol %#x, need 2.06 or later", +hdr.version));
  }
  if (!(hdr.loadflags & kLoadedHigh)) {
    return absl::InvalidArgumentError("bzImage: not LOADED_HIGH (a zImage)");
  }
  if (hdr.version >= 0x20c && !(hdr.xloadflags & kXlfKernel64)) {
    return absl::InvalidArgumentError("bzImage: no 64-bit entry point");
  }
  const uint64_t setup_sects = hdr.setup_sects == 0 ? 4 : hdr.setup_sects;
  const uint64_t kernel_offset = (setup_sects + 1) * 512;
  if (kernel_offset >= image.size()) {
    return absl::InvalidArgumentError("bzImage: truncated (no kernel)");
  }
  const uint64_t kernel_size = image.size() - kernel_offset;
  // The kernel decompresses in place up to init_size bytes from its start.
  const uint64_t footprint =
      std::max<uint64_t>(kernel_size, uint64_t{hdr.init_size});
  if (ram_size < kHighMemStart || footprint > ram_size - kHighMemStart) {
    return absl::InvalidArgumentError(
        absl::StrFormat("bzImage: needs %#x bytes above 1 MiB, RAM is %#x",
                        footprint, ram_size));
  }
  if (cmdline.size() >= kCmdlineMax ||
      (hdr.cmdline_size != 0 && cmdline.size() > hdr.cmdline_size)) {
    return absl::InvalidArgumentError("bzImage: command line too long");
  }
  VMMKIT_RETURN_IF_ERROR(Write(memory, kHighMemStart,
                               image.subspan(kernel_offset), "bzImage kernel"));
  std::string cl(cmdline);
  cl.push_back('\0');
  VMMKIT_RETURN_IF_ERROR(
      Write(memory, kCmdlineAddr,
            absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(cl.data()),
                                cl.size()),
            "command line"));
  uint64_t initrd_addr = 0;
  if (!initrd.empty()) {
    const uint64_t max_addr =
        std::min<uint64_t>(uint64_t{hdr.initrd_addr_max} + 1, ram_size);
    const uint64_t low = kHighMemStart + footprint;
    if (initrd.size() > max_addr || max_addr - initrd.size() < low) {
      return absl::InvalidArgumentError(
          absl::StrFormat("initrd of %#x bytes does not fit below %#x",
                          initrd.size(), max_addr));
    }
    initrd_addr = (max_addr - initrd.size()) & ~uint64_t{0xfff};
    if (initrd_addr < low) {
      return absl::InvalidArgumentError("initrd does not fit");
    }
    VMMKIT_RETURN_IF_ERROR(Write(memory, initrd_addr, initrd, "initrd"));
  }
  std::vector<uint8_t> zp = BuildZeroPage(hdr, ram_size, kCmdlineAddr,
                                          static_cast<uint32_t>(cmdline.size()),
                                          initrd_addr, initrd.size());
  VMMKIT_RETURN_IF_ERROR(Write(memory, kZeroPageAddr, zp, "zero page"));
  BootInfo info;
  info.kind = ImageKind::kBzImage;
  info.entry = kHighMemStart + 0x200;  // startup_64
  info.rsi = kZeroPageAddr;
  info.rdi = 0;
  return info;
}

absl::StatusOr<BootInfo> LoadImage(absl::Span<const uint8_t> image,
                                   absl::Span<const uint8_t> initrd,
                                   absl::string_view cmdline,
                                   const virtqueue::GuestMemory& memory,
                                   uint64_t ram_size) {
  VMMKIT_ASSIGN_OR_RETURN(ImageKind kind, DetectImage(image));
  if (cmdline.size() >= kCmdlineMax) {
    return absl::InvalidArgumentError(
        absl::StrCat("command line of ", cmdline.size(), " bytes; at most ",
                     kCmdlineMax - 1));
  }
  if (kind == ImageKind::kBzImage) {
    return LoadBzImage(image, initrd, cmdline, memory, ram_size);
  }
  if (!initrd.empty()) {
    return absl::InvalidArgumentError("an initrd needs a bzImage kernel");
  }
  VMMKIT_ASSIGN_OR_RETURN(uint64_t entry, LoadElf(image, memory, ram_size));
  BootInfo info;
  info.kind = ImageKind::kElf;
  info.entry = entry;
  if (!cmdline.empty()) {
    std::string cl(cmdline);
    cl.push_back('\0');
    VMMKIT_RETURN_IF_ERROR(
        Write(memory, kCmdlineAddr,
              absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(cl.data()),
                                  cl.size()),
              "command line"));
    info.rdi = kCmdlineAddr;
  }
  return info;
}

Selectors SelectorsFor(ImageKind kind) {
  if (kind == ImageKind::kBzImage) return {0x10, 0x18, 0x20};
  return {0x08, 0x10, 0x18};
}

absl::Status WriteLongModeTables(const virtqueue::GuestMemory& memory,
                                 ImageKind kind) {
  // GDT: null, then code/data/TSS at the kind's selectors.
  const Selectors sel = SelectorsFor(kind);
  uint64_t gdt[6] = {};
  gdt[sel.code / 8] = kGdtCode64;
  gdt[sel.data / 8] = kGdtData;
  gdt[sel.tss / 8] = kGdtTss;
  VMMKIT_RETURN_IF_ERROR(memory.WriteObj(kGdtAddr, gdt));
  // PML4[0] -> PDPT; PDPT[0..3] -> 4 PDs; each PD maps 1 GiB in 2 MiB pages.
  constexpr uint64_t kPresentRw = 0x3, kPageSize = 0x80;
  VMMKIT_RETURN_IF_ERROR(memory.Fill(kPml4Addr, 0x6000, 0));
  VMMKIT_RETURN_IF_ERROR(memory.WriteObj(kPml4Addr, kPdptAddr | kPresentRw));
  for (uint64_t i = 0; i < 4; ++i) {
    VMMKIT_RETURN_IF_ERROR(memory.WriteObj(
        kPdptAddr + 8 * i, (kPdAddr + 0x1000 * i) | kPresentRw));
  }
  uint64_t pd[512];
  for (uint64_t g = 0; g < 4; ++g) {
    for (uint64_t i = 0; i < 512; ++i) {
      pd[i] = ((g << 30) + (i << 21)) | kPresentRw | kPageSize;
    }
    VMMKIT_RETURN_IF_ERROR(memory.WriteObj(kPdAddr + 0x1000 * g, pd));
  }
  return absl::OkStatus();
}

void SetLongModeSregs(ImageKind kind, kvm_sregs* sregs) {
  const Selectors sel = SelectorsFor(kind);
  kvm_segment code = {};
  code.base = 0;
  code.limit = 0xffffffff;
  code.selector = sel.code;
  code.type = 0xb;  // execute/read, accessed
  code.present = 1;
  code.dpl = 0;
  code.db = 0;
  code.s = 1;
  code.l = 1;
  code.g = 1;
  kvm_segment data = code;
  data.selector = sel.data;
  data.type = 0x3;  // read/write, accessed
  data.l = 0;
  data.db = 1;
  kvm_segment tss = {};
  tss.base = 0;
  tss.limit = 0x67;
  tss.selector = sel.tss;
  tss.type = 0xb;  // 64-bit busy TSS
  tss.present = 1;
  sregs->cs = code;
  sregs->ds = sregs->es = sregs->fs = sregs->gs = sregs->ss = data;
  sregs->tr = tss;
  sregs->ldt = {};
  sregs->ldt.selector = 0;
  sregs->ldt.type = 0x2;
  sregs->ldt.present = 1;
  sregs->ldt.limit = 0xffff;
  sregs->gdt.base = kGdtAddr;
  sregs->gdt.limit = 6 * 8 - 1;
  sregs->idt.base = 0;
  sregs->idt.limit = 0;
  constexpr uint64_t kCr0Pe = 1, kCr0Mp = 2, kCr0Et = 0x10, kCr0Ne = 0x20,
                     kCr0Wp = 1 << 16, kCr0Pg = uint64_t{1} << 31;
  sregs->cr0 = kCr0Pe | kCr0Mp | kCr0Et | kCr0Ne | kCr0Wp | kCr0Pg;
  sregs->cr3 = kPml4Addr;
  sregs->cr4 = 1 << 5;  // PAE
  constexpr uint64_t kEferSce = 1, kEferLme = 1 << 8, kEferLma = 1 << 10;
  sregs->efer = kEferSce | kEferLme | kEferLma;
}

}  // namespace vmmkit::vmm
