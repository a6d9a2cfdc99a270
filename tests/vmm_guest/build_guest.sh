#!/bin/sh
# tests/vmm_guest/build_guest.sh OUT LINKER_SCRIPT SOURCES...: compiles the
# freestanding x86-64 test guest with explicit flags (never Bazel's, so
# --config=asan's sanitizers stay out of it) and links a static ELF64
# (ET_EXEC) with the linker script.
set -eu
out="$1"; shift
script="$1"; shift
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
inc="$(dirname "$script")/freestanding"
flags="--target=x86_64-unknown-none-elf -ffreestanding -fno-exceptions -fno-rtti
  -fno-threadsafe-statics -fno-stack-protector -fno-asynchronous-unwind-tables
  -fno-unwind-tables -nostdlib -nostdinc++ -isystem $inc -mno-red-zone
  -mgeneral-regs-only -fno-pic -fno-pie -mcmodel=small -static -O2 -g0
  -std=c++20 -Wall -Wextra -Werror -I."
objs=""
n=0
for src in "$@"; do
  case "$src" in
    *.cc) n=$((n + 1)); clang++ $flags -c "$src" -o "$tmp/$n.o"; objs="$objs $tmp/$n.o" ;;
    *.S) n=$((n + 1)); clang --target=x86_64-unknown-none-elf -c "$src" -o "$tmp/$n.o"; objs="$objs $tmp/$n.o" ;;
    *) ;;
  esac
done
# ld.lld (Debian package lld) when present, else GNU ld (binutils): both
# take the linker script.
if command -v ld.lld >/dev/null 2>&1; then
  ld.lld -static -nostdlib --no-pie -z max-page-size=4096 -T "$script" -o "$out" $objs
else
  extra=""
  ld --help 2>/dev/null | grep -q no-warn-rwx-segments && extra="--no-warn-rwx-segments"
  ld -static -nostdlib --no-pie -z max-page-size=4096 $extra -T "$script" -o "$out" $objs
fi
