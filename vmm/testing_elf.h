// vmm/testing_elf.h: builds a minimal static ELF64 x86-64 executable around
// machine code, for tests of the loader and of the VMM with tiny guests.
//
//   std::vector<uint8_t> elf = MakeElf({0xf4}, /*load=*/0x100000);
//   // one PT_LOAD at `load` holding the code, entry at its first byte,
//   // bss_bytes more zeroed after it.
#ifndef VMMKIT_VMM_TESTING_ELF_H_
#define VMMKIT_VMM_TESTING_ELF_H_

#include <elf.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace vmmkit::vmm::testing {

inline std::vector<uint8_t> MakeElf(const std::vector<uint8_t>& code,
                                    uint64_t load = 0x100000,
                                    uint64_t bss_bytes = 0) {
  Elf64_Ehdr eh = {};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_EXEC;
  eh.e_machine = EM_X86_64;
  eh.e_version = EV_CURRENT;
  eh.e_entry = load;
  eh.e_phoff = sizeof(Elf64_Ehdr);
  eh.e_ehsize = sizeof(Elf64_Ehdr);
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = 1;
  Elf64_Phdr ph = {};
  ph.p_type = PT_LOAD;
  ph.p_flags = PF_R | PF_X | PF_W;
  ph.p_offset = 0x1000;
  ph.p_vaddr = load;
  ph.p_paddr = load;
  ph.p_filesz = code.size();
  ph.p_memsz = code.size() + bss_bytes;
  ph.p_align = 0x1000;
  std::vector<uint8_t> out(0x1000 + code.size(), 0);
  std::memcpy(out.data(), &eh, sizeof(eh));
  std::memcpy(out.data() + sizeof(eh), &ph, sizeof(ph));
  std::memcpy(out.data() + 0x1000, code.data(), code.size());
  return out;
}

// Little x86-64 encodings the tests combine.
inline void Emit(std::vector<uint8_t>& c, std::initializer_list<uint8_t> b) {
  c.insert(c.end(), b);
}
inline void Imm32(std::vector<uint8_t>& c, uint32_t v) {
  for (int i = 0; i < 4; ++i) c.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
inline void Imm64(std::vector<uint8_t>& c, uint64_t v) {
  for (int i = 0; i < 8; ++i) c.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
// mov dx, port
inline void MovDx(std::vector<uint8_t>& c, uint16_t port) {
  Emit(c, {0x66, 0xba, static_cast<uint8_t>(port),
           static_cast<uint8_t>(port >> 8)});
}
// mov eax, imm32
inline void MovEax(std::vector<uint8_t>& c, uint32_t v) {
  c.push_back(0xb8);
  Imm32(c, v);
}
// mov al, imm8 ; out dx, al
inline void OutAl(std::vector<uint8_t>& c, uint8_t v) {
  Emit(c, {0xb0, v, 0xee});
}
// Serial output of `s` (dx must not be needed afterwards).
inline void Print(std::vector<uint8_t>& c, const std::string& s) {
  MovDx(c, 0x3f8);
  for (char ch : s) OutAl(c, static_cast<uint8_t>(ch));
}
// Exit with `code` through port 0x501 (4-byte write), then spin.
inline void Exit(std::vector<uint8_t>& c, uint32_t code) {
  MovDx(c, 0x501);
  MovEax(c, code);
  Emit(c, {0xef, 0xeb, 0xfe});  // out dx, eax ; jmp $
}

}  // namespace vmmkit::vmm::testing

#endif  // VMMKIT_VMM_TESTING_ELF_H_
