#!/usr/bin/env python3
"""Writes the seed corpus of //vhost-user:message_fuzzer (see the record
format at the top of message_fuzzer.cc). Run from this directory."""
import os
import struct

UBASE = 0x7F0000000000


def req(code, payload=b"", flags=0, fds=0):
    """Record: op 0, fd kinds byte, u16 length, header + payload."""
    msg = struct.pack("<III", code, 1 | flags, len(payload)) + payload
    return bytes([0, fds]) + struct.pack("<H", len(msg)) + msg


def raw(msg, fds=0):
    return bytes([0, fds]) + struct.pack("<H", len(msg)) + msg


def memtable(guest=0, user=UBASE, need_reply=True):
    return bytes([4]) + struct.pack("<Q", guest >> 12) + struct.pack(
        "<Q", user) + bytes([8 if need_reply else 0])


def u64(v):
    return struct.pack("<Q", v)


def state(i, n):
    return struct.pack("<II", i, n)


def addr(i, desc, used, avail, flags=0):
    return struct.pack("<IIQQQQ", i, flags, UBASE + desc, UBASE + used,
                       UBASE + avail, 0)


EVENTFD = 2  # fd kind 2 in the first slot
NEED = 8


def setup(features=(1 << 32) | (1 << 30), protocol=0xB):
    s = req(1) + req(15) + req(16, u64(protocol)) + req(17) + req(3)
    s += req(2, u64(features), NEED) + memtable()
    s += req(8, state(0, 256), NEED) + req(10, state(0, 0), NEED)
    s += req(9, addr(0, 0x10000, 0x12000, 0x11000), NEED)
    s += req(12, u64(0), NEED, EVENTFD) + req(13, u64(0), NEED, EVENTFD)
    s += req(18, state(0, 1), NEED)
    return s


seeds = {
    "qemu_rng_start": setup() + bytes([5, 0]),
    "qemu_rng_start_stop": setup() + bytes([5, 0]) + req(18, state(0, 0)) +
    req(11, state(0, 0)),
    "legacy_no_protocol_bit": setup(features=0) + bytes([5, 0]),
    "no_acks": setup(protocol=0x1) + req(8, state(0, 3)),
    "reconnect": setup() + bytes([6]) + setup(),
    "bad_sizes": req(8, b"\0" * 4, NEED) + req(2, b"\0" * 12, NEED) +
    req(5, b"\0" * 8, NEED, 1) + req(24, struct.pack("<III", 0, 300, 0)),
    "fds_mismatch": req(3, b"", NEED, 0b101010) + req(12, u64(0x100), NEED, 2) +
    req(12, u64(0), NEED) + req(12, u64(0), NEED, 3),
    "memtable_hostile": req(5, struct.pack("<II", 2, 0) + struct.pack(
        "<QQQQ", 0, 1 << 20, UBASE, 0) + struct.pack(
            "<QQQQ", 0x80000, 1 << 20, UBASE + (2 << 20), 0), NEED, 0b0101) +
    req(5, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 8 << 20, UBASE,
                                                  0), NEED, 1),
    "addr_outside": req(15) + req(16, u64(0xB)) + memtable() +
    req(9, addr(0, 0x10000, 0x12000, 4 << 20), NEED) +
    req(9, addr(5, 0x10000, 0x12000, 0x11000), NEED),
    "unknown_requests": req(99, b"", NEED) + req(6, b"\0" * 16, NEED) + req(99),
    "bad_header": raw(struct.pack("<III", 1, 2, 0)) + raw(
        struct.pack("<III", 2, 1, 100000)),
    "config": req(15) + req(16, u64(0xB)) + req(24, struct.pack(
        "<III", 0, 4, 0) + b"\0" * 4) + req(25, struct.pack("<III", 0, 1, 0) +
                                          b"\1", NEED),
    "memtable_while_running": setup() + memtable(guest=0x100000) + memtable(),
}

os.makedirs("message", exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join("message", name), "wb") as f:
        f.write(data)
