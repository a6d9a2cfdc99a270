// tests/vmm_guest/start.S: entry points and interrupt stubs of the test guest.
//
// _start:   64-bit entry per vmm contract A (long mode, identity-mapped 4 GiB,
//           interrupts off, RDI = command line or 0). Each vCPU that arrives
//           here gets its own stack by LAPIC id; the BSP (id 0) runs
//           GuestMain(cmdline), any other vCPU runs GuestApMain(id).
// _start32: PVH entry (32-bit protected mode, paging off, EBX = hvm_start_info)
//           so that QEMU can boot the same ELF as a reference platform: builds
//           the page tables and GDT contract A describes, enters long mode and
//           continues at _start with the PVH command line.
// isr_stubs: one stub per vector 0..255 (pushes a dummy error code where the
//           CPU pushes none, then the vector), all ending in InterruptEntry
//           (vector, frame). isr_stub_table holds their addresses.

#define STACK_SIZE 131072
#define MAX_CPUS 4

  .section .text.start, "ax"
  .code64
  .globl _start
_start:
  cli
  cld
  mov %rdi, %r12                 // the command line
  mov $1, %eax
  cpuid
  shr $24, %ebx                  // initial LAPIC id
  cmp $MAX_CPUS, %ebx
  jae park
  mov %ebx, %eax
  inc %eax
  imul $STACK_SIZE, %eax
  lea stacks(%rip), %rsp
  add %rax, %rsp                 // top of this vCPU's stack
  xor %ebp, %ebp
  test %ebx, %ebx
  jnz 1f
  mov %r12, %rdi
  call GuestMain
  jmp park
1:
  mov %ebx, %edi
  call GuestApMain
park:
  cli
  hlt
  jmp park

// ---- PVH (QEMU) entry: 32-bit protected mode, paging off, EBX = start info.
  .code32
  .globl _start32
_start32:
  cli
  cld
  mov %ebx, %esi                 // keep the start info
  // PD: 2048 entries of 2 MiB (present, writable, PS) covering 4 GiB.
  lea pvh_pd, %edi
  xor %eax, %eax
  mov $0x83, %eax
  xor %edx, %edx
  mov $2048, %ecx
2:
  mov %eax, (%edi)
  mov %edx, 4(%edi)
  add $0x200000, %eax
  adc $0, %edx
  add $8, %edi
  loop 2b
  // PDPT: 4 entries pointing at the 4 PD pages.
  lea pvh_pdpt, %edi
  lea pvh_pd, %eax
  or $3, %eax
  mov $4, %ecx
3:
  mov %eax, (%edi)
  movl $0, 4(%edi)
  add $4096, %eax
  add $8, %edi
  loop 3b
  // PML4[0] -> PDPT.
  lea pvh_pdpt, %eax
  or $3, %eax
  mov %eax, pvh_pml4
  movl $0, pvh_pml4 + 4
  lgdt pvh_gdt_desc
  mov %cr4, %eax
  or $0x20, %eax                 // PAE
  mov %eax, %cr4
  lea pvh_pml4, %eax
  mov %eax, %cr3
  mov $0xc0000080, %ecx          // EFER
  rdmsr
  or $0x100, %eax                // LME
  wrmsr
  mov %cr0, %eax
  or $0x80000001, %eax           // PG | PE
  mov %eax, %cr0
  ljmp $0x08, $pvh_long
  .code64
pvh_long:
  mov $0x10, %eax
  mov %eax, %ds
  mov %eax, %es
  mov %eax, %ss
  mov %eax, %fs
  mov %eax, %gs
  mov %esi, %esi
  mov 24(%rsi), %rdi             // hvm_start_info.cmdline_paddr
  jmp _start

  .section .rodata
  .p2align 4
pvh_gdt:
  .quad 0
  .quad 0x00af9a000000ffff       // 0x08: 64-bit code
  .quad 0x00cf92000000ffff       // 0x10: data
pvh_gdt_end:
pvh_gdt_desc:
  .word pvh_gdt_end - pvh_gdt - 1
  .long pvh_gdt

// Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY = 18), read by QEMU.
  .section .note.pvh, "a", @note
  .p2align 2
  .long 4
  .long 4
  .long 18
  .asciz "Xen"
  .p2align 2
  .long _start32
  .p2align 2

// ---- Interrupts.
  .text
  .code64
  .p2align 4
isr_common:
  push %rax
  push %rcx
  push %rdx
  push %rsi
  push %rdi
  push %r8
  push %r9
  push %r10
  push %r11
  mov 72(%rsp), %rdi             // vector
  lea 80(%rsp), %rsi             // error code, then RIP, CS, RFLAGS, RSP, SS
  cld
  call InterruptEntry
  pop %r11
  pop %r10
  pop %r9
  pop %r8
  pop %rdi
  pop %rsi
  pop %rdx
  pop %rcx
  pop %rax
  add $16, %rsp                  // vector, error code
  iretq

  .altmacro
  .macro ISR_STUB n
  .p2align 3
isr_stub_\n:
  .if (\n == 8) || (\n == 10) || (\n == 11) || (\n == 12) || (\n == 13) || (\n == 14) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
  .else
  push $0
  .endif
  push $\n
  jmp isr_common
  .endm
  .macro ISR_ADDR n
  .quad isr_stub_\n
  .endm

  .set vec, 0
  .rept 256
  ISR_STUB %vec
  .set vec, vec + 1
  .endr

  .section .rodata
  .p2align 3
  .globl isr_stub_table
isr_stub_table:
  .set vec, 0
  .rept 256
  ISR_ADDR %vec
  .set vec, vec + 1
  .endr

  .bss
  .p2align 12
pvh_pml4: .skip 4096
pvh_pdpt: .skip 4096
pvh_pd: .skip 4 * 4096
  .p2align 4
  .globl stacks
stacks: .skip STACK_SIZE * MAX_CPUS

  .section .note.GNU-stack, "", @progbits

// ---- AP start-up trampoline (INIT-SIPI-SIPI from the BSP, StartAps in
// runtime.cc). Copied to kApTrampoline (0x10000, SIPI vector 0x10); the AP
// starts in real mode at 1000:0000, goes through 32-bit protected mode to
// long mode with the BSP's CR3 (patched into ap_tramp_cr3) and jumps to
// _start, which gives it the stack of its LAPIC id.
#define TRAMP 0x10000
#define T(x) ((x) - ap_tramp_start + TRAMP)
  .section .rodata
  .p2align 4
  .globl ap_tramp_start, ap_tramp_end, ap_tramp_cr3
  .code16
ap_tramp_start:
  cli
  cld
  mov %cs, %ax
  mov %ax, %ds
  lgdtl (ap_tramp_gdt_desc - ap_tramp_start)
  mov %cr0, %eax
  or $1, %eax
  mov %eax, %cr0
  ljmpl $0x18, $T(ap_tramp_pm32)
  .code32
ap_tramp_pm32:
  mov $0x20, %eax
  mov %eax, %ds
  mov %eax, %es
  mov %eax, %ss
  mov T(ap_tramp_cr3), %eax
  mov %eax, %cr3
  mov %cr4, %eax
  or $0x20, %eax                 // PAE
  mov %eax, %cr4
  mov $0xc0000080, %ecx          // EFER.LME
  rdmsr
  or $0x100, %eax
  wrmsr
  mov %cr0, %eax
  or $0x80000000, %eax           // PG
  mov %eax, %cr0
  ljmp $0x08, $T(ap_tramp_lm64)
  .code64
ap_tramp_lm64:
  mov $0x10, %eax
  mov %eax, %ds
  mov %eax, %es
  mov %eax, %ss
  xor %edi, %edi
  movabs $_start, %rax
  jmp *%rax
  .p2align 3
ap_tramp_gdt:
  .quad 0
  .quad 0x00af9a000000ffff       // 0x08: 64-bit code
  .quad 0x00cf92000000ffff       // 0x10: data
  .quad 0x00cf9a000000ffff       // 0x18: 32-bit code
  .quad 0x00cf92000000ffff       // 0x20: 32-bit data
ap_tramp_gdt_desc:
  .word 5 * 8 - 1
  .long T(ap_tramp_gdt)
  .p2align 2
ap_tramp_cr3:
  .long 0
ap_tramp_end:
  .code64
  .section .note.GNU-stack, "", @progbits
