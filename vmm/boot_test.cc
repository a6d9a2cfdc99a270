// Tests of the image loaders, boot structures and MP table, without KVM.
#include "vmm/boot.h"

#include <elf.h>

#include <cstring>

#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "virtqueue/guest_memory.h"
#include "vmm/mptable.h"
#include "vmm/testing_elf.h"

namespace vmmkit::vmm {
namespace {

using virtqueue::GuestMemoryMmap;
using ::vmmkit::testing::StatusIs;
using ::vmmkit::vmm::testing::MakeElf;

constexpr uint64_t kRam = 16 << 20;

class BootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = GuestMemoryMmap::Create({{0, kRam}});
    ASSERT_TRUE(m.ok()) << m.status();
    mem_ = *std::move(m);
  }
  template <typename T>
  T Read(uint64_t addr) {
    absl::StatusOr<T> v = mem_->ReadObj<T>(addr);
    EXPECT_TRUE(v.ok());
    return v.ok() ? *v : T{};
  }
  std::unique_ptr<GuestMemoryMmap> mem_;
};

Elf64_Phdr& Phdr(std::vector<uint8_t>& elf) {
  return *reinterpret_cast<Elf64_Phdr*>(elf.data() + sizeof(Elf64_Ehdr));
}
Elf64_Ehdr& Ehdr(std::vector<uint8_t>& elf) {
  return *reinterpret_cast<Elf64_Ehdr*>(elf.data());
}

TEST_F(BootTest, ElfLoadsSegmentsAndZeroesBss) {
  ASSERT_OK(mem_->Fill(0x100000, 0x2000, 0xaa));
  std::vector<uint8_t> elf = MakeElf({0x90, 0x90, 0xf4}, 0x100000, 0x100);
  absl::StatusOr<BootInfo> info = LoadImage(elf, {}, "a=b", *mem_, kRam);
  ASSERT_OK(info.status());
  EXPECT_EQ(info->kind, ImageKind::kElf);
  EXPECT_EQ(info->entry, 0x100000u);
  EXPECT_EQ(info->rdi, kCmdlineAddr);
  EXPECT_EQ(info->rsi, 0u);
  EXPECT_EQ(Read<uint8_t>(0x100002), 0xf4);
  for (uint64_t a = 0x100003; a < 0x100103; ++a) {
    ASSERT_EQ(Read<uint8_t>(a), 0) << a;
  }
  EXPECT_EQ(Read<uint8_t>(0x100103), 0xaa);  // past memsz: untouched
  char cl[4];
  ASSERT_OK(mem_->Read(kCmdlineAddr,
                       absl::MakeSpan(reinterpret_cast<uint8_t*>(cl), 4)));
  EXPECT_EQ(std::string(cl, 4), std::string("a=b\0", 4));
}

TEST_F(BootTest, ElfEmptyCmdlineGivesRdiZero) {
  std::vector<uint8_t> elf = MakeElf({0xf4});
  absl::StatusOr<BootInfo> info = LoadImage(elf, {}, "", *mem_, kRam);
  ASSERT_OK(info.status());
  EXPECT_EQ(info->rdi, 0u);
}

TEST_F(BootTest, ElfErrors) {
  std::vector<uint8_t> good = MakeElf({0xf4});
  // Truncated: header only, and a segment cut short.
  std::vector<uint8_t> t(good.begin(), good.begin() + 20);
  EXPECT_THAT(LoadElf(t, *mem_, kRam).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  std::vector<uint8_t> cut(good.begin(), good.end() - 1);
  EXPECT_THAT(LoadElf(cut, *mem_, kRam).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // Segment outside RAM, below 1 MiB, memsz wrapping.
  std::vector<uint8_t> e = good;
  Phdr(e).p_paddr = kRam - 0x10;
  Phdr(e).p_memsz = 0x20;
  Ehdr(e).e_entry = kRam - 0x10;
  EXPECT_THAT(LoadElf(e, *mem_, kRam).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  e = good;
  Phdr(e).p_paddr = 0x8000;
  Ehdr(e).e_entry = 0x8000;
  EXPECT_THAT(LoadElf(e, *mem_, kRam).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  e = good;
  Phdr(e).p_memsz = ~uint64_t{0};
  EXPECT_THAT(LoadElf(e, *mem_, kRam).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // filesz > memsz; entry outside segments; wrong class, machine, type.
  e = good;
  Phdr(e).p_memsz = 0;
  EXPECT_THAT(LoadElf(e, *mem_, kRam).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  e = good;
  Ehdr(e).e_entry = 0x500000;
  EXPECT_THAT(LoadElf(e, *mem_, kRam).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  e = good;
  e[EI_CLASS] = ELFCLASS32;
  EXPECT_THAT(LoadElf(e, *mem_, kRam).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  e = good;
  Ehdr(e).e_machine = EM_AARCH64;
  EXPECT_THAT(LoadElf(e, *mem_, kRam).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  e = good;
  Ehdr(e).e_type = ET_DYN;
  EXPECT_THAT(LoadElf(e, *mem_, kRam).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  e = good;
  Ehdr(e).e_phnum = 1000;
  EXPECT_THAT(LoadElf(e, *mem_, kRam).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  e = good;
  Ehdr(e).e_phoff = ~uint64_t{0} - 8;
  EXPECT_THAT(LoadElf(e, *mem_, kRam).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // An initrd with an ELF guest.
  EXPECT_THAT(
      LoadImage(good, std::vector<uint8_t>{1}, "", *mem_, kRam).status(),
      StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(BootTest, NeitherElfNorBzImage) {
  std::vector<uint8_t> junk(4096, 0x5a);
  absl::StatusOr<BootInfo> r = LoadImage(junk, {}, "", *mem_, kRam);
  EXPECT_THAT(r.status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(r.status().message(), "not a bzImage or ELF64");
  EXPECT_THAT(DetectImage({}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// A synthetic bzImage: 4 setup sectors + boot sector, then a "kernel".
std::vector<uint8_t> FakeBzImage(uint16_t version, uint8_t loadflags,
                                 uint16_t xloadflags, size_t kernel_bytes) {
  std::vector<uint8_t> img((4 + 1) * 512 + kernel_bytes, 0);
  SetupHeader h = {};
  h.setup_sects = 4;
  h.boot_flag = 0xaa55;
  h.header = kHdrSMagic;
  h.version = version;
  h.loadflags = loadflags;
  h.xloadflags = xloadflags;
  h.code32_start = 0x100000;
  h.initrd_addr_max = 0x7fffffff;
  h.cmdline_size = 2047;
  h.init_size = 0x10000;
  h.jump = 0x6aeb;  // jmp to 0x26c: the whole 2.15 header
  std::memcpy(img.data() + kSetupHeaderOffset, &h, sizeof(h));
  for (size_t i = 0; i < kernel_bytes; ++i) img[5 * 512 + i] = i & 0xff;
  return img;
}

TEST_F(BootTest, BzImageBootParams) {
  std::vector<uint8_t> img =
      FakeBzImage(0x20f, kLoadedHigh, kXlfKernel64, 0x3000);
  std::vector<uint8_t> initrd(0x1800, 0x77);
  absl::StatusOr<BootInfo> info =
      LoadImage(img, initrd, "console=ttyS0", *mem_, kRam);
  ASSERT_OK(info.status());
  EXPECT_EQ(info->kind, ImageKind::kBzImage);
  EXPECT_EQ(info->entry, 0x100200u);
  EXPECT_EQ(info->rsi, kZeroPageAddr);
  EXPECT_EQ(Read<uint8_t>(0x100000 + 0x123), 0x23);  // kernel copied
  SetupHeader h = Read<SetupHeader>(kZeroPageAddr + kSetupHeaderOffset);
  EXPECT_EQ(+h.header, kHdrSMagic);
  EXPECT_EQ(+h.type_of_loader, 0xff);
  EXPECT_EQ(+h.cmd_line_ptr, kCmdlineAddr);
  EXPECT_EQ(+h.cmdline_size, 2047u) << "the kernel's limit, kept";
  EXPECT_EQ(Read<uint32_t>(kZeroPageAddr + kZpAltMemK), (kRam >> 10) - 1024);
  EXPECT_TRUE(+h.loadflags & kCanUseHeap);
  EXPECT_EQ(+h.ramdisk_size, 0x1800u);
  // The initrd sits page-aligned at the top of RAM.
  EXPECT_EQ(+h.ramdisk_image % 4096, 0u);
  EXPECT_LE(+h.ramdisk_image + h.ramdisk_size, kRam);
  EXPECT_GT(+h.ramdisk_image + h.ramdisk_size, kRam - 4096);
  EXPECT_EQ(Read<uint8_t>(h.ramdisk_image), 0x77);
  // e820: RAM below the EBDA, reserved to 1 MiB, RAM above.
  ASSERT_EQ(Read<uint8_t>(kZeroPageAddr + kZpE820Entries), 3);
  E820Entry e[3];
  for (int i = 0; i < 3; ++i) {
    e[i] = Read<E820Entry>(kZeroPageAddr + kZpE820Table + 20 * i);
  }
  EXPECT_EQ(+e[0].addr, 0u);
  EXPECT_EQ(+e[0].size, kEbdaStart);
  EXPECT_EQ(+e[0].type, kE820Ram);
  EXPECT_EQ(+e[1].addr, kEbdaStart);
  EXPECT_EQ(+e[1].addr + e[1].size, kHighMemStart);
  EXPECT_EQ(+e[1].type, kE820Reserved);
  EXPECT_EQ(+e[2].addr, kHighMemStart);
  EXPECT_EQ(+e[2].addr + e[2].size, kRam);
  EXPECT_EQ(+e[2].type, kE820Ram);
}

// An older header (2.06) ends at 0x236; what follows in the image is setup
// code, which must not reach boot_params as header fields.
TEST_F(BootTest, BzImageHeaderLengthFromJump) {
  std::vector<uint8_t> img =
      FakeBzImage(0x206, kLoadedHigh, kXlfKernel64, 0x1000);
  img[0x201] = 0x236 - 0x202;
  std::memset(img.data() + 0x236, 0xcc, 0x26c - 0x236);
  ASSERT_OK(LoadImage(img, {}, "", *mem_, kRam).status());
  SetupHeader h = Read<SetupHeader>(kZeroPageAddr + kSetupHeaderOffset);
  EXPECT_EQ(+h.version, 0x206);
  EXPECT_EQ(+h.xloadflags, 0);
  EXPECT_EQ(+h.cmdline_size, 0u);
  EXPECT_EQ(+h.pref_address, 0u);
}

TEST_F(BootTest, BadBzImages) {
  EXPECT_THAT(
      LoadImage(FakeBzImage(0x204, kLoadedHigh, 0, 0x1000), {}, "", *mem_, kRam)
          .status(),
      StatusIs(absl::StatusCode::kInvalidArgument));  // too old
  EXPECT_THAT(LoadImage(FakeBzImage(0x20f, 0, kXlfKernel64, 0x1000), {}, "",
                        *mem_, kRam)
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument));  // zImage
  EXPECT_THAT(
      LoadImage(FakeBzImage(0x20f, kLoadedHigh, 0, 0x1000), {}, "", *mem_, kRam)
          .status(),
      StatusIs(absl::StatusCode::kInvalidArgument));  // no 64-bit entry
  EXPECT_THAT(LoadImage(FakeBzImage(0x20f, kLoadedHigh, kXlfKernel64, 0), {},
                        "", *mem_, kRam)
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument));  // no kernel
  // Larger than RAM, and an initrd that does not fit.
  EXPECT_THAT(LoadImage(FakeBzImage(0x20f, kLoadedHigh, kXlfKernel64, kRam), {},
                        "", *mem_, kRam)
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  std::vector<uint8_t> big(kRam - 0x100000, 1);
  EXPECT_THAT(LoadImage(FakeBzImage(0x20f, kLoadedHigh, kXlfKernel64, 0x1000),
                        big, "", *mem_, kRam)
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(LoadImage(FakeBzImage(0x20f, kLoadedHigh, kXlfKernel64, 0x1000),
                        {}, std::string(3000, 'x'), *mem_, kRam)
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(BootTest, LongModeTablesAndSregs) {
  ASSERT_OK(WriteLongModeTables(*mem_, ImageKind::kElf));
  EXPECT_EQ(Read<uint64_t>(kPml4Addr), kPdptAddr | 3);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(Read<uint64_t>(kPdptAddr + 8 * i), (kPdAddr + 0x1000 * i) | 3);
  }
  // The last 2 MiB page below 4 GiB maps itself (covers the LAPIC).
  EXPECT_EQ(Read<uint64_t>(kPdAddr + 0x3000 + 8 * 511), 0xffe00000u | 0x83);
  EXPECT_EQ(Read<uint64_t>(kPdAddr + 8 * 1), 0x200000u | 0x83);
  EXPECT_EQ(Read<uint64_t>(kGdtAddr + 8), kGdtCode64);
  EXPECT_EQ(Read<uint64_t>(kGdtAddr + 16), kGdtData);
  kvm_sregs s = {};
  SetLongModeSregs(ImageKind::kElf, &s);
  EXPECT_EQ(s.cs.selector, 0x08);
  EXPECT_EQ(s.ds.selector, 0x10);
  EXPECT_EQ(s.cs.l, 1);
  EXPECT_EQ(s.cr3, kPml4Addr);
  EXPECT_TRUE(s.cr0 & 1);
  EXPECT_TRUE(s.cr0 & (1u << 31));
  EXPECT_TRUE(s.cr4 & (1 << 5));
  EXPECT_EQ(s.efer & 0x500, 0x500u);  // LME | LMA
  // Linux gets __BOOT_CS 0x10 and __BOOT_DS 0x18.
  ASSERT_OK(WriteLongModeTables(*mem_, ImageKind::kBzImage));
  EXPECT_EQ(Read<uint64_t>(kGdtAddr + 0x10), kGdtCode64);
  EXPECT_EQ(Read<uint64_t>(kGdtAddr + 0x18), kGdtData);
  SetLongModeSregs(ImageKind::kBzImage, &s);
  EXPECT_EQ(s.cs.selector, 0x10);
  EXPECT_EQ(s.ss.selector, 0x18);
}

TEST(E820Test, SmallRam) {
  std::vector<E820Entry> m = E820Map(512 << 10);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].size, 512u << 10);
}

TEST(MpTableTest, LayoutAndChecksums) {
  std::vector<uint8_t> t =
      BuildMpTable({.num_cpus = 2, .pci_slots = {1, 2, 9}, .base = 0xf0000});
  ASSERT_GE(t.size(), 16 + sizeof(MpConfigHeader));
  MpFloatingPointer fp;
  std::memcpy(&fp, t.data(), sizeof(fp));
  EXPECT_EQ(std::string(fp.signature, 4), "_MP_");
  EXPECT_EQ(+fp.config_table, 0xf0010u);
  EXPECT_EQ(+fp.length, 1);
  EXPECT_EQ(+fp.spec_rev, 4);
  EXPECT_EQ(MpChecksum(t.data(), 16), 0);
  MpConfigHeader h;
  std::memcpy(&h, t.data() + 16, sizeof(h));
  EXPECT_EQ(std::string(h.signature, 4), "PCMP");
  EXPECT_EQ(+h.base_table_length, t.size() - 16);
  EXPECT_EQ(MpChecksum(t.data() + 16, h.base_table_length), 0);
  EXPECT_EQ(+h.lapic_address, kLapicAddr);
  // Walk the entries.
  size_t off = 16 + sizeof(MpConfigHeader);
  int cpus = 0, bsp = 0, buses = 0, ioapics = 0, isa = 0, local = 0;
  std::vector<std::pair<int, int>> pci;  // (source irq, intin)
  for (int i = 0; i < h.entry_count; ++i) {
    ASSERT_LT(off, t.size());
    const uint8_t type = t[off];
    if (type == kMpEntryProcessor) {
      MpProcessorEntry p;
      std::memcpy(&p, t.data() + off, sizeof(p));
      EXPECT_EQ(+p.lapic_id, cpus);
      EXPECT_TRUE(+p.cpu_flags & 1);
      if (p.cpu_flags & 2) ++bsp;
      ++cpus;
      off += 20;
      continue;
    }
    if (type == kMpEntryBus) ++buses;
    if (type == kMpEntryIoapic) {
      MpIoapicEntry io;
      std::memcpy(&io, t.data() + off, sizeof(io));
      EXPECT_EQ(+io.address, kIoapicAddr);
      EXPECT_EQ(+io.ioapic_id, 2);
      ++ioapics;
    }
    if (type == kMpEntryIoInterrupt) {
      MpInterruptEntry e;
      std::memcpy(&e, t.data() + off, sizeof(e));
      if (e.source_bus_id == kMpBusIsa) {
        EXPECT_EQ(+e.source_bus_irq, e.dest_apic_intin);
        EXPECT_EQ(+e.flags, kMpIrqEdgeHigh);
        ++isa;
      } else {
        EXPECT_EQ(+e.source_bus_id, kMpBusPci);
        EXPECT_EQ(+e.flags, kMpIrqLevelLow);
        pci.push_back({e.source_bus_irq, e.dest_apic_intin});
      }
    }
    if (type == kMpEntryLocalInterrupt) ++local;
    off += 8;
  }
  EXPECT_EQ(off, t.size());
  EXPECT_EQ(cpus, 2);
  EXPECT_EQ(bsp, 1);
  EXPECT_EQ(buses, 2);
  EXPECT_EQ(ioapics, 1);
  EXPECT_EQ(isa, 15);
  EXPECT_EQ(local, 2);
  EXPECT_EQ(pci, (std::vector<std::pair<int, int>>{
                     {1 << 2, 17}, {2 << 2, 18}, {9 << 2, 17}}));
}

}  // namespace
}  // namespace vmmkit::vmm
