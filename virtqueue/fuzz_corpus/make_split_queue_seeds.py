#!/usr/bin/env python3
"""Writes the seed corpus of //virtqueue:split_queue_fuzzer.

The format is the one split_queue_fuzzer.cc reads: a header (flags, size,
maximum, ring addresses in 16-byte units from the start of guest memory,
misalignment bits, legacy alignment, initial indices) and a list of operations.
Run from the repository root:
  python3 virtqueue/fuzz_corpus/make_split_queue_seeds.py
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "split_queue")

BIG, EVENT_IDX, NO_INDIRECT, LEGACY, RAW_SIZE = 1, 2, 4, 0x20, 0x40
ADJACENT, GAP = 0x08, 0x10


def header(flags=0, size_log=8, raw_size=0, max_size=0, desc=0, avail=0x100,
           used=0x200, odd=0, align=12, next_avail=0, next_used=0):
    return struct.pack("<BBHHHHHBBHH", flags, size_log, raw_size, max_size,
                       desc, avail, used, odd, align, next_avail, next_used)


def addr(offset, sel=0):
    return struct.pack("<BI", sel, offset)


def length(n, raw=False):
    return struct.pack("<BI", 1 if raw else 0, n)


def raw_desc(index, offset, n, flags, nxt, op=0, sel=0, raw=False):
    return (bytes([op]) + struct.pack("<H", index) + addr(offset, sel) +
            length(n, raw) + struct.pack("<HH", flags, nxt))


def table_desc(index, offset, n, flags, nxt, **kw):
    return raw_desc(index, offset, n, flags, nxt, op=1, **kw)


def indirect_desc(index, offset, entries, flags=0, nxt=0):
    return (bytes([2]) + struct.pack("<HH", index, offset) + bytes([0, entries]) +
            struct.pack("<HH", flags, nxt))


def publish(head):
    return bytes([3]) + struct.pack("<H", head)


def avail_idx(idx):
    return bytes([4]) + struct.pack("<H", idx)


def used_event(e):
    return bytes([5]) + struct.pack("<H", e)


def no_interrupt(on):
    return bytes([6, 1 if on else 0])


def chain(bufs):
    return bytes([7, len(bufs) - 1]) + b"".join(
        struct.pack("<IH", a, n) for a, n in bufs)


def indirect_chain(table, bufs):
    return bytes([8, len(bufs) - 1, table]) + b"".join(
        struct.pack("<IH", a, n) for a, n in bufs)


POP, UNDO, PUBLISH_USED, DISABLE, ENABLE, NEEDS, HAS, RESET, ACTIVATE = (
    bytes([9]), bytes([11]), bytes([15]), bytes([16]), bytes([17]),
    bytes([18]), bytes([19]), bytes([20]), bytes([21]))


def add_used(n, any_head=0):
    return bytes([12]) + struct.pack("<IH", n, any_head)


def batch(count):
    return bytes([13]) + bytes([0x10] * count)


def push_used(head, n):
    return bytes([14]) + struct.pack("<HI", head, n)


D = 0x10000  # data buffers start here (offset into guest memory)

SEEDS = {
    "direct_le": header() + b"".join([
        chain([(D, 64), (D + 0x1000, 512)]), POP, add_used(512),
        chain([(D, 16), (D + 0x2000, 16), (D + 0x3000, 4096)]), NEEDS, POP,
        add_used(4096), NEEDS, HAS, POP]),
    "direct_be_batch": header(flags=BIG) + b"".join([
        chain([(D, 64)]), chain([(D + 0x100, 8), (D + 0x200, 8)]),
        chain([(D + 0x300, 1)]), POP, POP, POP, batch(3), POP, NEEDS]),
    "indirect_le": header() + b"".join([
        indirect_chain(0, [(D, 16), (D + 0x100, 32), (D + 0x200, 64)]),
        POP, add_used(64),
        indirect_desc(5, 0x400, 2), table_desc(64, D, 16, 1, 65),
        table_desc(65, D + 0x40, 16, 2, 0), publish(5), POP, add_used(16)]),
    "indirect_be_nested": header(flags=BIG) + b"".join([
        table_desc(0, 0, 32, 4, 0), indirect_desc(1, 0, 1), publish(1), POP,
        add_used(0), chain([(D, 8)]), POP, add_used(8)]),
    "event_idx": header(flags=EVENT_IDX) + b"".join([
        used_event(1), chain([(D, 8)]), chain([(D, 8)]), DISABLE, POP, POP,
        add_used(8), NEEDS, add_used(8), NEEDS, ENABLE,
        chain([(D, 8)]), ENABLE, POP, push_used(0, 8), PUBLISH_USED, NEEDS]),
    "event_idx_be_wrap": header(flags=BIG | EVENT_IDX, next_avail=65534,
                                next_used=65534) + b"".join([
        chain([(D, 8)]), chain([(D, 8)]), chain([(D, 8)]), POP, POP, POP,
        batch(3), used_event(65535), NEEDS, chain([(D, 8)]), POP,
        add_used(1), NEEDS]),
    "legacy_4096": header(flags=LEGACY, size_log=7, align=12) + b"".join([
        chain([(D, 100), (D + 0x800, 100)]), POP, UNDO, POP, add_used(100),
        no_interrupt(True), NEEDS, no_interrupt(False), NEEDS]),
    "legacy_be_align64": header(flags=LEGACY | BIG, size_log=4,
                                align=6) + b"".join([
        chain([(D, 1)]), POP, add_used(1), RESET, ACTIVATE, chain([(D, 1)]),
        POP, add_used(1)]),
    "malformed_chains": header() + b"".join([
        raw_desc(0, D, 16, 1, 1), raw_desc(1, D, 16, 1, 0), publish(0), POP,
        add_used(0),
        raw_desc(2, D, 16, 2, 3), raw_desc(3, D, 16, 0, 0, raw=False),
        publish(2), POP, add_used(0),
        raw_desc(4, 0xFFFF0, 0x100, 0, 0), publish(4), POP, add_used(0),
        raw_desc(6, 0, 0x20, 4 | 1, 0), publish(6), POP, add_used(0),
        raw_desc(7, D, 0xFFFFFFFF, 1, 8, raw=True),
        raw_desc(8, D, 0x100, 0, 0), publish(7), POP, add_used(0),
        chain([(D, 8)]), POP]),
    "ring_errors": header() + b"".join([
        chain([(D, 8)]), POP, publish(300), POP, UNDO, POP, HAS, ENABLE,
        RESET, ACTIVATE, avail_idx(1000), POP, NEEDS, RESET, ACTIVATE,
        chain([(D, 8)]), POP, add_used(8)]),
    "two_regions": header(flags=ADJACENT, desc=0x7F00) + b"".join([
        chain([(0x7FFF0, 32)]), POP, add_used(32),
        indirect_desc(9, 0xFFF0, 2), publish(9), POP]),
    "bad_config": header(flags=RAW_SIZE, raw_size=100, odd=0x07) + b"".join([
        POP, ACTIVATE, RESET, ACTIVATE, HAS, NEEDS]),
    "no_indirect_gap": header(flags=NO_INDIRECT | GAP) + b"".join([
        indirect_chain(0, [(D, 16)]), POP, add_used(0), chain([(D, 8)]),
        POP, add_used(8)]),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
