#!/usr/bin/env python3
"""Writes seed inputs for //pci:admin_fuzzer (see the opcode list in
pci/admin_fuzzer.cc): a legacy probe of member 1 through the shim with a
kick through the notify area, every admin command through the queue, raw
commands with bad groups/opcodes/members, and raw chains of odd shapes."""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "admin")
LEGACY = [0, 4, 8, 12, 14, 16, 18, 19, 20, 22]
STATUS = [0, 1, 3, 7, 0x80, 0x40, 11]


def shim_write(off, data):
    b = bytes([4, 1, off, len(data)]) + bytes(data) + bytes(8 - len(data))
    return b


def shim_read(off, width):
    return bytes([3, 0, off, width]) + bytes(8)


def reg(r, member, value=0, read=False):
    return bytes([2, r, member - 1, 1 if read else 0]) + struct.pack("<I", value)


def queue_cmd(opcode, group, member, data, res):
    return (bytes([1, opcode, group, member, len(data)]) + bytes(data) +
            bytes([res]))


def raw(cmd, res):
    return bytes([0, len(cmd)]) + bytes(cmd) + bytes([res])


def chain(shapes, fill=b""):
    b = bytes([8, len(shapes) - 1])
    for flags, slot, length in shapes:
        b += bytes([flags, slot, length])
    return b + (fill + bytes(64))[:64]


seeds = {}
# A legacy driver on member 1 through the shim: reset, ACK, DRIVER, features,
# queue 0 at PFN 0x40, DRIVER_OK, a kick, config reads at every width.
s = shim_write(18, [0]) + shim_write(18, [1]) + shim_write(18, [3])
s += shim_read(0, 4) + shim_write(4, [0, 0, 0, 0]) + shim_write(14, [0, 0])
s += shim_read(12, 2) + shim_write(8, [0x40, 0, 0, 0]) + shim_write(18, [7])
s += shim_write(16, [0, 0]) + shim_read(19, 1) + shim_read(18, 4)
s += bytes([11, 0x80]) + shim_read(20, 2) + shim_write(20, [0, 0])
s += bytes([11, 0]) + shim_read(17, 8)
s += bytes([7, 0, 0]) + bytes([7, 4, 0])
seeds["shim_legacy_probe"] = s
# Every command through the queue, good and bad.
s = b""
for op in range(9):
    for member in (0, 1, 2, 3):
        s += queue_cmd(op, 1, member, [0x12, 0, 0, 0, 0, 0, 0, 0, 1], 64)
s += queue_cmd(1, 1, 0, [0x7f, 0, 0, 0, 0, 0, 0, 0], 0)
s += queue_cmd(1, 1, 0, [0x03], 0) + queue_cmd(3, 1, 1, [18], 1)
s += queue_cmd(1, 1, 0, [0x7f], 0)
s += queue_cmd(0, 0, 0, [], 8) + queue_cmd(0, 2, 0, [], 8)
seeds["queue_commands"] = s
# Legacy registers of both members.
s = b""
for r in range(10):
    for m in (1, 2):
        s += reg(r, m, 3 if LEGACY[r] == 18 else 0x10)
        s += reg(r, m, read=True)
seeds["legacy_registers"] = s
# Raw commands.
s = raw([], 8) + raw([0, 0], 8) + raw([0, 0, 1, 0], 16)
s += raw([3, 0, 1, 0] + [0] * 12 + [1] + [0] * 7 + [18], 9)
s += raw([2, 0, 1, 0] + [0] * 12 + [2] + [0] * 7 + [18] + [0] * 7 + [1], 8)
s += raw([6, 0, 1, 0] + [0] * 12 + [2] + [0] * 7, 72)
s += raw([5, 0, 1, 0] + [0] * 12 + [2] + [0] * 7 + [4], 12)
s += raw([7, 0, 1, 0], 8) + raw([3, 0, 1, 0] + [0] * 12 + [9], 9)
seeds["raw_commands"] = s
# Raw chains: readable+writable, writable first, off the end, one alone.
hdr = bytes([0, 0, 1, 0]) + bytes(20)
s = chain([(0, 0, 24), (1, 1, 16)], hdr)
s += chain([(1, 1, 16), (0, 0, 24)], hdr)
s += chain([(0, 0, 24), (0x81, 1, 200)], hdr)
s += chain([(0, 0, 4)], hdr) + chain([(1, 0, 64)], hdr)
s += bytes([9]) + queue_cmd(0, 1, 0, [], 8)
seeds["raw_chains"] = s
# SR-IOV: NumVFs 1, a read of member 2, VF Enable off, a new driver.
s = queue_cmd(0, 1, 0, [], 8) + bytes([12, 1, 1, 0]) + reg(6, 2, read=True)
s += bytes([12, 0, 0, 0]) + queue_cmd(0, 1, 0, [], 8) + bytes([9])
s += queue_cmd(0, 1, 0, [], 8)
seeds["sriov_toggle"] = s
seeds["empty"] = b""

os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print("wrote", len(seeds), "seeds to", OUT)
