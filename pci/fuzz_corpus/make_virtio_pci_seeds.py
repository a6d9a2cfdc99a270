#!/usr/bin/env python3
"""Writes seed inputs for //pci:virtio_pci_fuzzer (see the opcode list in
pci/virtio_pci_fuzzer.cc): a legacy probe with rng I/O, a modern one, the
same through the PCI_CFG window, and MSI-X with a config interrupt."""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "virtio_pci")
STATUS_SEQ = [0, 1, 3, 11, 15, 7, 0x80, 0x40, 0x83, 0x8f, 2, 4]
LEGACY = {0: 0, 4: 1, 8: 2, 12: 3, 14: 4, 16: 5, 18: 6, 19: 7, 20: 8, 22: 9}
COMMON = {0x00: 0, 0x04: 1, 0x08: 2, 0x0c: 3, 0x10: 4, 0x12: 5, 0x14: 6,
          0x16: 8, 0x18: 9, 0x1a: 10, 0x1c: 11}


def legacy(off, value=0, status=None, window=0):
    b = bytes([4, LEGACY[off]]) + struct.pack("<I", value)
    if off == 18:
        b += bytes([STATUS_SEQ.index(status)])
    return b + bytes([window])


def common(off, value=0, status=None, window=0):
    b = bytes([5, COMMON[off]]) + struct.pack("<Q", value)
    if off == 0x14:
        b += bytes([STATUS_SEQ.index(status)])
    if off == 0x1c:
        b += bytes([1])
    return b + bytes([window])


def chain(n_bufs, kick):
    b = bytes([8, n_bufs - 1])
    for i in range(n_bufs):
        b += struct.pack("<HHB", i * 3, 64 * (i + 1), 1)
    return b + bytes([kick])


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def main():
    os.makedirs(OUT, exist_ok=True)
    lp = (legacy(18, status=1) + legacy(18, status=3) +
          legacy(4, 1 << 29) + bytes([7, 1, 8, 2, 1]) +
          legacy(18, status=7) + chain(2, 0) + bytes([9]) + chain(1, 0) +
          bytes([9]) + legacy(19) + legacy(18, status=0))
    write("legacy_probe_io", lp)
    mp = (common(0x14, status=1) + common(0x14, status=3) +
          common(0x08, 1) + common(0x0c, 1) + common(0x14, status=11) +
          bytes([7, 0, 4, 0]) + common(0x14, status=15) + chain(3, 2) +
          bytes([9]) + chain(1, 1) + bytes([9, 10, 0]))
    write("modern_probe_io", mp)
    wp = (common(0x14, status=1, window=1) + common(0x14, status=3, window=1) +
          common(0x08, 1, window=1) + common(0x0c, 1, window=1) +
          common(0x14, status=11, window=1) + bytes([7, 0, 8, 1]) +
          common(0x14, status=15, window=1) + chain(1, 2) + bytes([9]))
    write("pci_cfg_window", wp)
    mx = (bytes([11]) + struct.pack("<H", 0x8000) + bytes([0, 0]) +
          bytes([11]) + struct.pack("<H", 0x8000) + bytes([1, 0]) +
          common(0x10, 0) + common(0x14, status=1) + common(0x14, status=3) +
          common(0x08, 1) + common(0x0c, 1) + common(0x14, status=11) +
          bytes([7, 0, 4, 1]) + common(0x16, 0) + common(0x1a, 1) +
          common(0x14, status=15) + chain(1, 2) + bytes([13, 9]))
    write("msix_config_interrupt", mx)


if __name__ == "__main__":
    main()
