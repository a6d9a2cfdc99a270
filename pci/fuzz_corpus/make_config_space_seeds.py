#!/usr/bin/env python3
"""Writes the seed inputs of //pci:config_space_fuzzer into config_space/.

The encoding follows pci/config_space_fuzzer.cc: a first byte (bit 0: assign
BARs first), then operations: opcode (bit 7: write), width selector, for
writes an 8-byte little-endian value, then the opcode's arguments.
"""
import os
import struct

W = {1: 0, 2: 1, 4: 2, 8: 7, 0: 8, 3: 9}  # width -> selector
ECAM = 0xE0000000


def op(code, width, write=False, value=0, args=b""):
    b = bytes([code | (0x80 if write else 0), W[width]])
    if write:
        b += struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF)
    return b + args


def cf8(dev, fn, reg, enable=True):
    sel = 1 | (dev << 1) | (fn << 3)
    return op(0, 4, args=bytes([sel]) + struct.pack("<I", (0x80000000 if enable else 0) | reg))


def cfc(port_off, width, write=False, value=0):
    return op(1, width, write, value, bytes([4 + port_off]))


def ecam(dev, fn, reg, width, write=False, value=0):
    return op(2, width, write, value, struct.pack("<I", (dev << 15) | (fn << 12) | reg))


def bar(devidx, barno, off, width, write=False, value=0, io=False):
    sel = devidx | (barno << 2) | (0x80 if io else 0)
    return op(3, width, write, value, bytes([sel]) + struct.pack("<H", off))


def anywhere(addr, width, write=False, value=0, io=False):
    return op(4, width, write, value, struct.pack("<QB", addr, 1 if io else 0))


def raise_(devidx, vector):
    return op(5, 1, args=bytes([devidx]) + struct.pack("<H", vector))


seeds = {}

# Linux-style probe of every slot through 0xCF8/0xCFC, then BAR sizing.
s = b"\x00"
for dev in range(4):
    s += cf8(dev, 0, 0) + cfc(0, 4)
    s += cf8(dev, 0, 0x0C) + cfc(2, 1)
for reg in range(0x10, 0x28, 4):
    s += cf8(1, 0, reg) + cfc(0, 4) + cfc(0, 4, True, 0xFFFFFFFF) + cfc(0, 4) + cfc(0, 4, True, 0)
seeds["linux_probe"] = s

# BAR sizing in bytes and words, through both mechanisms.
s = b"\x00"
for reg in range(0x10, 0x28):
    s += cf8(2, 0, reg & ~3) + cfc(reg & 3, 1, True, 0xFF)
for reg in range(0x10, 0x28, 2):
    s += ecam(1, 0, reg, 2, True, 0xFFFF) + ecam(1, 0, reg, 2)
seeds["bar_sizing_bytes"] = s

# Firmware assignment, memory decoding, an MSI-X vector programmed and
# raised masked, then unmasked (delivery from the pending bit).
s = b"\x01"
s += ecam(1, 0, 0x04, 2, True, 0x0007)
s += bar(0, 1, 0x2010, 4, True, 0xFEE00000)
s += bar(0, 1, 0x2014, 4, True, 0)
s += bar(0, 1, 0x2018, 4, True, 0x41)
s += ecam(1, 0, 0x42, 2, True, 0xC000)  # enable + function mask
s += raise_(0, 1) + raise_(0, 7)
s += bar(0, 1, 0x3000, 8)
s += bar(0, 1, 0x201C, 4, True, 0)
s += ecam(1, 0, 0x42, 2, True, 0x8000)
s += bar(0, 1, 0x3000, 4)
seeds["msix_pending"] = s

# 2048-vector table in a 64-bit BAR: qword writes, PBA reads, function mask.
s = b"\x01"
s += ecam(2, 0, 0x04, 2, True, 0x0002)
s += bar(1, 0, 16 * 2047, 8, True, 0x00000000FEE00000)
s += bar(1, 0, 16 * 2047 + 8, 8, True, 0x55)
s += ecam(2, 0, 0x42, 2, True, 0x8000)
s += raise_(1, 2047) + raise_(1, 2048)
s += bar(1, 0, 0x8000 + 248, 8)
seeds["msix_2048"] = s

# I/O BARs, decoding toggled, capability window with hooks.
s = b"\x01"
s += cf8(1, 0, 0x04) + cfc(0, 2, True, 0x0001)
s += bar(0, 0, 0x10, 4, True, 0x12345678, io=True) + bar(0, 0, 0x10, 2, io=True)
s += cf8(1, 0, 0x04) + cfc(0, 2, True, 0x0000)
s += bar(0, 0, 0x10, 1, io=True)
for reg in range(0x7C, 0x94, 2):
    s += ecam(1, 0, reg, 4) + ecam(1, 0, reg, 4, True, 0xFFFFFFFF)
s += op(7, 1, args=b"\x00\x01") + ecam(1, 0, 0x05, 1, True, 0x04)
seeds["io_and_caps"] = s

# Malformed: odd widths, addresses at the top of memory, ports past 0xCFF,
# ECAM accesses across a function's 4 KiB, the enable bit clear.
s = b"\x00"
for width in (0, 3, 8):
    s += cfc(1, width) + ecam(1, 0, 0xFFE, width) + anywhere(0xFFFFFFFFFFFFFFFE, width)
s += cf8(1, 0, 0, enable=False) + cfc(0, 4) + cfc(0, 4, True, 0)
s += cfc(3, 2) + cfc(2, 4, True, 0xFFFFFFFF) + ecam(2, 1, 0xFFC, 4)
s += anywhere(0xCFB, 1, True, 1, io=True)
s += raise_(0, 0xFFFF)
seeds["malformed"] = s

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config_space")
os.makedirs(here, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(here, name), "wb") as f:
        f.write(data)
