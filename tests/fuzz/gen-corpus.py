#!/usr/bin/env python3
# Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/TARGET/),
# each in the input layout documented atop tests/fuzz/fuzz-TARGET.c:
#   vring     small hand-made rings, valid ones (direct, indirect, event
#             index, a migration) and a few malformed;
#   devstate  live device records as a source sends them (a setup list,
#             DEV_STATE data and markers, DEV_CONFIG, a multifd packet) and
#             a few refused;
#   gdev      device frames as the guest's read makes them, and bad ones.
# usage: tests/fuzz/gen-corpus.py [TARGET [OUTDIR]]  (no TARGET: all)
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


def vring_seeds():
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
    return seeds


# ---- devstate: tags and layouts of format.h's live device body ----
DEV_EOS, DEV_STATE, DEV_CONFIG, DEV_MF_SYNC = 0x00, 0x01, 0x02, 0x03
TAG_LIST, TAG_MF, TAG_SUMS = 0x10, 0x11, 0x12    # this target's own (fuzz-devstate.c)
F_END, F_INIT = 1, 2
LIVE_F_CONFIG, LIVE_F_PRECOPY = 1, 2
MF_PKT_MAGIC, MF_VERSION, MF_DEVICE = 0x46524d50, 1, 0x4


def dev_list(*devs):
    b = struct.pack('>I', len(devs))
    for name, inst, flags, ver in devs:
        b += bytes([len(name)]) + name + struct.pack('>IBI', inst, flags, ver)
    return bytes([TAG_LIST]) + b


def dev_state(dev, index, flags, data=b''):
    return bytes([DEV_STATE]) + struct.pack('>IIII', dev, index, flags, len(data)) + data


def dev_config(dev, version, data):
    return bytes([DEV_CONFIG]) + struct.pack('>III', dev, version, len(data)) + data


def xxh3(data, seed):
    """XXH3-64 with a seed, from the system's libxxhash (stream/sum.h's checksum)."""
    import ctypes
    lib = ctypes.CDLL("libxxhash.so.0")
    lib.XXH3_64bits_withSeed.restype = ctypes.c_uint64
    lib.XXH3_64bits_withSeed.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]
    return lib.XXH3_64bits_withSeed(data, len(data), seed)


def dev_state_sum(dev, index, flags, data=b'', good=True):
    """DEV_STATE of a version 2 stream: the checksum after the header (wrong unless good)."""
    s = xxh3(data, dev << 32 | index) ^ (0 if good else 1)
    return bytes([DEV_STATE]) + struct.pack('>IIIIQ', dev, index, flags, len(data), s) + data


def dev_config_sum(dev, version, data):
    s = xxh3(data, dev << 32 | 0xffffffff)
    return bytes([DEV_CONFIG]) + struct.pack('>IIIQ', dev, version, len(data), s) + data


def mf_dev(num, dev, index, data, flags=MF_DEVICE, hflags=0):
    hdr = struct.pack('>IIIIIIQ', MF_PKT_MAGIC, MF_VERSION, flags, 0, 0, 0, num)
    return bytes([TAG_MF]) + hdr + struct.pack('>IIII', dev, index, hflags, len(data)) + data


def devstate_seeds():
    one = dev_list((b'gdev', 0, LIVE_F_CONFIG, 1))
    return {
        'list': dev_list((b'gdev', 0, LIVE_F_CONFIG, 1), (b'gdev', 1, LIVE_F_CONFIG | LIVE_F_PRECOPY, 1)),
        'body': one + dev_state(0, 0, 0, b'FDEV' + bytes(12) + b'x' * 16) + dev_state(0, 1, 0, b'y')
        + dev_state(0, 2, F_END) + dev_config(0, 1, bytes(20)) + bytes([DEV_EOS]),
        'precopy': one + dev_state(0, 0, 0, b'z' * 8) + dev_state(0, 1, F_INIT) + bytes([DEV_EOS]),
        'multifd': one + mf_dev(7, 0, 0, b'w' * 32) + mf_dev(8, 0, 1, b'v') + bytes([DEV_MF_SYNC])
        + dev_state(0, 2, F_END) + bytes([DEV_EOS]),
        'bad-count': bytes([TAG_LIST]) + struct.pack('>I', 65),
        'bad-name': bytes([TAG_LIST]) + struct.pack('>I', 1) + b'\x03g\x00v' + bytes(9),
        'bad-len': dev_state(0, 0, 0) + dev_state(0, 0, F_END | F_INIT),
        'bad-marker': bytes([DEV_STATE]) + struct.pack('>IIII', 0, 3, F_END, 5),
        'bad-mf-flags': mf_dev(1, 0, 0, b'', hflags=F_END),
        'truncated': dev_state(0, 0, 0, b'abcdef')[:12],
        'sums': one + bytes([TAG_SUMS]) + dev_state_sum(0, 0, 0, b'FDEV' + bytes(12) + b'x' * 16)
        + dev_state_sum(0, 1, F_END) + dev_config_sum(0, 1, bytes(20)) + bytes([DEV_EOS]),
        'sums-bad': one + bytes([TAG_SUMS]) + dev_state_sum(0, 0, 0, b'q' * 9, good=False),
    }


# ---- gdev: the guest's device frames (devices.c), 64 KiB of device memory ----
def frame(at, data, magic=b'FDEV', length=None):
    n = len(data) if length is None else length
    return magic + struct.pack('>IQ', n, at) + data


def gdev_seeds():
    return {
        'one': frame(0, b'a' * 64),
        'several': frame(0x100, b'b' * 32) + frame(0xfff0, b'c' * 16) + frame(0x100, b'd'),
        'empty-frame': frame(0x10000, b''),
        'bad-magic': frame(0, b'e' * 8, magic=b'FDEW'),
        'past-end': frame(0xfff8, b'f' * 16),
        'length-past-buffer': frame(0, b'g' * 8, length=9),
        'short-header': frame(0, b'h')[:10],
        'offset-wraps': frame(0xfffffffffffffff0, b'i' * 32),
    }


TARGETS = {'vring': vring_seeds, 'devstate': devstate_seeds, 'gdev': gdev_seeds}


def write(target, out):
    os.makedirs(out, exist_ok=True)
    for name, data in TARGETS[target]().items():
        with open(os.path.join(out, name), 'wb') as f:
            f.write(data)


if len(sys.argv) > 1:
    write(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else
          os.path.join(os.path.dirname(__file__), 'corpus', sys.argv[1]))
else:
    for t in TARGETS:
        write(t, os.path.join(os.path.dirname(__file__), 'corpus', t))
