#include "vmm/api/testing/tiny_guest.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace vmmkit::api::testing {
namespace {

// Assembled from (intel syntax, position independent):
//   lea rsi,[rip+msg]; mov ecx,14; mov dx,0x3f8; 1: lodsb; out dx,al; loop 1b
//   test rdi,rdi; jz main; cmp byte [rdi],'e'; jne main; mov eax,5; jmp exit
//   main: mov dx,0x3fd; in al,dx; test al,1; jz stop?; mov dx,0x3f8; in al,dx
//         cmp al,'q'; je quit; out dx,al
//   stop?: mov dx,0x502; in al,dx; test al,al; jz main; xor eax,eax; jmp exit
//   quit: mov eax,7
//   exit: mov dx,0x501; out dx,eax; 2: hlt; jmp 2b
//   msg: "tiny guest up\n"
constexpr uint8_t kCode[] = {
    0x48, 0x8d, 0x35, 0x4b, 0x00, 0x00, 0x00, 0xb9, 0x0e, 0x00, 0x00, 0x00,
    0x66, 0xba, 0xf8, 0x03, 0xac, 0xee, 0xe2, 0xfc, 0x48, 0x85, 0xff, 0x74,
    0x0c, 0x80, 0x3f, 0x65, 0x75, 0x07, 0xb8, 0x05, 0x00, 0x00, 0x00, 0xeb,
    0x25, 0x66, 0xba, 0xfd, 0x03, 0xec, 0xa8, 0x01, 0x74, 0x0a, 0x66, 0xba,
    0xf8, 0x03, 0xec, 0x3c, 0x71, 0x74, 0x0e, 0xee, 0x66, 0xba, 0x02, 0x05,
    0xec, 0x84, 0xc0, 0x74, 0xe4, 0x31, 0xc0, 0xeb, 0x05, 0xb8, 0x07, 0x00,
    0x00, 0x00, 0x66, 0xba, 0x01, 0x05, 0xef, 0xf4, 0xeb, 0xfd, 0x74, 0x69,
    0x6e, 0x79, 0x20, 0x67, 0x75, 0x65, 0x73, 0x74, 0x20, 0x75, 0x70, 0x0a,
};

// ELF64 little-endian headers (System V gABI), one PT_LOAD segment covering
// the whole file at guest-physical 0x100000.
struct Elf64Header {
  uint8_t ident[16];
  uint16_t type, machine;
  uint32_t version;
  uint64_t entry, phoff, shoff;
  uint32_t flags;
  uint16_t ehsize, phentsize, phnum, shentsize, shnum, shstrndx;
};
struct Elf64Phdr {
  uint32_t type, flags;
  uint64_t offset, vaddr, paddr, filesz, memsz, align;
};
static_assert(sizeof(Elf64Header) == 64);
static_assert(sizeof(Elf64Phdr) == 56);

constexpr uint64_t kLoadAddress = 0x100000;

}  // namespace

std::string WriteTinyGuest(const std::string& path) {
  const uint64_t code_offset = sizeof(Elf64Header) + sizeof(Elf64Phdr);
  const uint64_t size = code_offset + sizeof(kCode);
  Elf64Header eh{};
  const uint8_t ident[16] = {0x7f,         'E',      'L', 'F',
                             2 /*64-bit*/, 1 /*LE*/, 1 /*version*/};
  std::memcpy(eh.ident, ident, sizeof(ident));
  eh.type = 2;      // ET_EXEC
  eh.machine = 62;  // EM_X86_64
  eh.version = 1;
  eh.entry = kLoadAddress + code_offset;
  eh.phoff = sizeof(Elf64Header);
  eh.ehsize = sizeof(Elf64Header);
  eh.phentsize = sizeof(Elf64Phdr);
  eh.phnum = 1;
  eh.shentsize = 64;
  Elf64Phdr ph{};
  ph.type = 1;   // PT_LOAD
  ph.flags = 5;  // R+X
  ph.offset = 0;
  ph.vaddr = ph.paddr = kLoadAddress;
  ph.filesz = ph.memsz = size;
  ph.align = 0x1000;

  std::vector<uint8_t> image(size);
  std::memcpy(image.data(), &eh, sizeof(eh));
  std::memcpy(image.data() + sizeof(eh), &ph, sizeof(ph));
  std::memcpy(image.data() + code_offset, kCode, sizeof(kCode));
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr || std::fwrite(image.data(), 1, image.size(), f) != size ||
      std::fclose(f) != 0) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    std::abort();
  }
  return path;
}

}  // namespace vmmkit::api::testing
