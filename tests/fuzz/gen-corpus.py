#!/usr/bin/env python3
# Writes the seed corpus of fuzz-vring (tests/fuzz/corpus/vring/): small,
# hand-made rings in the input layout documented atop fuzz-vring.c, valid
# ones (direct, indirect, event index, a migration) and a few malformed.
# usage: tests/fuzz/gen-corpus.py [OUTDIR]
import os
import struct
import sys

A = 0x10000          # gpa of block "a" (the image starts there)
NEXT, WRITE, INDIRECT = 1, 2, 4


def layout(num):
    desc = 0
    avail = 16 * num
    used = (avail + 6 + 2 * num + 3) & ~3
    return desc, avail, used


def seed(num_shift, flags, cap, ops, chains, extra=None, avail_extra=0, addrs=(0, 0, 0)):
    """chains: list of (head, [(addr, len, flags, next)...]) placed at their heads."""
    num = 1 << num_shift
    img = bytearray(0x3000)
    desc, avail, used = layout(num)
    for head, descs in chains:
        for i, (addr, ln, fl, nx) in descs:
            struct.pack_into('<QIHH', img, desc + 16 * i, addr, ln, fl, nx)
    for k, (head, _) in enumerate(chains):
        struct.pack_into('<H', img, avail + 4 + 2 * (k % num), head)
    struct.pack_into('<H', img, avail + 2, len(chains) + avail_extra)
    for off, data in (extra or []):
        img[off:off + len(data)] = data
    hdr = bytes([num_shift, flags, cap]) + struct.pack('<HHH', *addrs) + bytes(ops)
    assert len(hdr) == 25
    return hdr + bytes(img)


def ops(*o):
    o = list(o) + [3] * (16 - len(o))
    return o[:16]


seeds = {}
# Two direct chains: readable + writable.
seeds['direct'] = seed(3, 0, 8, ops(0, 3, 0), [
    (0, [(0, (A + 0x2000, 64, NEXT, 1)), (1, (A + 0x2100, 64, WRITE, 0))]),
    (2, [(2, (A + 0x2200, 16, 0, 0))]),
])
# An indirect chain of three buffers.
tbl = b''.join(struct.pack('<QIHH', a, l, f, n) for a, l, f, n in [
    (A + 0x2000, 32, NEXT, 1), (A + 0x2100, 32, NEXT | WRITE, 2), (A + 0x2200, 32, WRITE, 0)])
seeds['indirect'] = seed(3, 2, 8, ops(0, 0), [
    (0, [(0, (A + 0x1c00, 48, INDIRECT, 0))]),
], extra=[(0x1c00, tbl)])
# Event index, notification changes, a save/load with chains in flight.
seeds['event-idx-migrate'] = seed(4, 1 | 2 | 8, 2, ops(2, 0, 3, 6, 1 << 2, 0, 3, 0, 0, 0, 3), [
    (0, [(0, (A + 0x2000, 8, 0, 0))]),
    (1, [(1, (A + 0x2010, 8, WRITE, 0))]),
    (2, [(2, (A + 0x2020, 8, NEXT, 3)), (3, (A + 0x2030, 8, WRITE, 0))]),
])
# A long chain over the whole ring (256 entries).
seeds['long-chain'] = seed(8, 0, 64, ops(0), [
    (0, [(i, (A + 0x2000 + 16 * (i % 16), 16, NEXT if i < 255 else 0, i + 1)) for i in range(256)]),
])
# Rings at chosen addresses (into block "b").
seeds['custom-addrs'] = seed(2, 4, 4, ops(0), [], addrs=(0x8000, 0x8100, 0x8200))
# Malformed: a loop, a buffer straddling a/b, avail index too far.
seeds['loop'] = seed(3, 0, 64, ops(0), [(0, [(0, (A + 0x2000, 8, NEXT, 1)), (1, (A + 0x2000, 8, NEXT, 0))])])
seeds['straddle'] = seed(3, 0, 8, ops(0), [(0, [(0, (0x1fff0, 32, 0, 0))])])
seeds['avail-too-far'] = seed(3, 0, 8, ops(0), [(0, [(0, (A + 0x2000, 8, 0, 0))])], avail_extra=20)

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), 'corpus', 'vring')
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), 'wb') as f:
        f.write(data)
