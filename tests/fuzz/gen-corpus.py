#!/usr/bin/env python3
# Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/TARGET/),
# each in the input layout documented atop tests/fuzz/fuzz-TARGET.c:
#   vring     small hand-made rings, valid ones (direct, indirect, event
#             index, a migration) and a few malformed;
#   devstate  live device records as a source sends them (a setup list,
#             DEV_STATE data and markers, DEV_CONFIG, a multifd packet) and
#             a few refused;
#   gdev      device frames as the guest's read makes them, and bad ones;
#   qmp       QMP sessions: negotiation, each command of the target's table
#             with good and bad arguments, oob, deferred replies, garbage,
#             values cut across writes, UTF-8, an oversized value;
#   vmsd      SECTION_FULL records of the target's three descriptions at
#             each version, with and without subsections, and refused ones;
#   rp        return path messages as a destination sends them (PONG,
#             requests, MISSING bitmaps of each block, SHUT) and bad ones;
#   hs        the stream header, multifd hellos, preempt handshakes and a
#             recovery's opening, good and bad;
#   stream    main connections a real source of fuzz-vm.h's VM sent (with
#             and without checksums, running, switchover-ack, multifd),
#             recorded by the fuzz-capture tool (capture.c), and a few
#             cut short;
#   pcstream  main connections of postcopy migrations of that VM (switched
#             after the first pass or on request, with and without
#             checksums, pages dirtied so that DISCARD and the background
#             stream carry some), recorded by the same tool, and cut short;
#   pcconn    postcopy migrations of that VM with preempt (and one
#             without) whose main connection was cut after the switch and
#             recovered: the four connections (main, preempt, the
#             recovered main and preempt), recorded by the same tool, and
#             cut short;
#   src       the return paths the destinations of those recordings sent
#             (without multifd), stamped with the bytes the source had
#             sent, after fuzz-src.c's config byte; and cut short;
#   multifd   the multifd channel of those recordings (config byte, then
#             the packets after the handshake), and a few cut short.
# stream, pcstream, pcconn, multifd and src need the built tool: FUZZ_CAPTURE=path (default
# build/tests/fuzz/fuzz-capture); recorded, not hand-made, they follow the
# wire format of the tree they were built from.
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


# ---- qmp: byte 0 picks in_max (256 << b % 5), byte 1 the write size ----
def qmp(lines, in_max=4, chunk=0):
    return bytes([in_max, chunk]) + b''.join(
        (l if isinstance(l, bytes) else l.encode()) + b'\r\n' for l in lines)


CAPS = '{"execute": "qmp_capabilities"}'
CAPS_OOB = '{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}'
CHANNEL = ('{"channel-type": "main", "addr": {"transport": "socket", "type": "inet", '
           '"host": "127.0.0.1", "port": "4444"}}')


def qmp_seeds():
    return {
        'negotiate': qmp([CAPS, '{"execute": "query-commands", "id": 1}']),
        'schema': qmp([CAPS, '{"execute": "query-qmp-schema", "id": "s"}']),
        'args': qmp([CAPS, '{"execute": "x-now", "arguments": {"uri": "tcp:1:2", "detach": true, '
                     '"i": -5, "u": 18446744073709551615, "size": 4096, "f": 1.5, "any": [1, {}], '
                     '"capabilities": [{"capability": "multifd", "state": true}], '
                     '"nested": {"n": 4294967295, "tags": [["a"], []], "addr": {"k": 1}}, '
                     '"channels": [' + CHANNEL + ']}, "id": [1]}']),
        'bad-args': qmp([CAPS, '{"execute": "x-now", "arguments": {"capabilities": [{"capability": "x", "state": 1}]}}',
                         '{"execute": "x-now", "arguments": {"nested": {"n": -1}}}',
                         '{"execute": "x-now", "arguments": {"channels": [{"channel-type": "main", '
                         '"addr": {"transport": "socket", "type": "unix"}}]}}',
                         '{"execute": "x-now", "arguments": {"u": -1, "size": 1.5, "bogus": 1}}',
                         '{"execute": "x-now", "arguments": []}']),
        'defer': qmp([CAPS, '{"execute": "x-defer", "id": 1, "arguments": {"addrs": [{"type": "fd", "str": "x"}]}}',
                      '{"execute": "x-now", "id": 2}', '{"execute": "x-defer", "id": 3}',
                      '{"execute": "x-event"}', '{"execute": "x-fail", "id": 4}'], chunk=7),
        'oob': qmp([CAPS_OOB, '{"execute": "x-defer", "id": "a"}', '{"execute": "x-now", "id": "b"}',
                    '{"exec-oob": "x-oob", "id": "c", "arguments": {"value": 7}}',
                    '{"exec-oob": "x-now", "id": "d"}', '{"exec-oob": "x-fail"}', 'garbage',
                    '{"execute": "x-oob", "exec-oob": "x-oob"}'] + ['{"execute": "x-now"}'] * 10),
        'envelope': qmp(['{"execute": "x-now"}', CAPS, CAPS, '[]', '3', '{"execute": 1}',
                         '{"arguments": {}}', '{"execute": "nope", "id": null}',
                         '{"execute": "x-now", "extra": 1}', '{"exec-oob": "x-oob"}',
                         '{"execute": "x-now", "arguments": 5}',
                         '{"execute": "x-now", "execute": "x-now"}']),
        'framing': qmp([CAPS, '{"execute": "x-now"}  {"execute": "x-now"}{"execute":"x-now"}',
                        '}}}]]] garbage "unterminated', 'tru', r'{"execute": "x-now", "id": "\u00e9\ud83d\ude00"}',
                        b'{"execute": "x-now", "id": "\xc3\xa9\xf0\x9f\x98\x80"}',
                        b'{"execute": "x-now", "id": "\xc3"}', b'\xff\xfe{}'], chunk=3),
        'oversized': qmp([CAPS, '{"execute": "x-now", "arguments": {"any": "' + 'x' * 600 + '"}}',
                          '{"execute": "x-now", "id": 9}'], in_max=1),
        # A message cut inside a UTF-8 sequence made the reply invalid JSON: the client was dropped.
        'long-utf8-name': qmp([CAPS, '{"execute": "x-now", "arguments": {"a' + 'é' * 300 + '": 1}, "id": 1}',
                               '{"execute": "x' + 'é' * 300 + '"}', 'a' + 'é' * 120 + ' garbage',
                               '{"execute": "x-now", "id": 2}']),
        'drip': qmp([CAPS, '{"execute": "x-now", "arguments": {"i": 1e5, "f": -0.0}, "id": {"a": [true, false, null]}}'], chunk=1),
    }


# ---- vmsd: the vmstate body (vmstate.c) in a SECTION_FULL record ----
FT = {'u8': (1, '>B'), 'u16': (2, '>H'), 'u32': (3, '>I'), 'u64': (4, '>Q'), 'i32': (5, '>i'),
      'i64': (6, '>q'), 'bool': (7, '>B')}


def vfield(name, kind, value, ftype=None, size=None):
    if kind == 'bytes':
        t, data = 8, value
    elif kind == 'arr':
        t, data = 9, b''.join(struct.pack('>Q', x) for x in value)
    else:
        t, data = FT[kind][0], struct.pack(FT[kind][1], value)
    t = t if ftype is None else ftype
    return bytes([1, t, len(name)]) + name + struct.pack('>I', len(data) if size is None else size) + data


def vsub(name, version, body):
    return bytes([5, len(name)]) + name + struct.pack('>II', version, len(body)) + body


def dev_body(version, opt=None, deep=True):
    b = (vfield(b'u8', 'u8', 7) + vfield(b'u16', 'u16', 0x1234) + vfield(b'u32', 'u32', 5)
         + vfield(b'u64', 'u64', 1 << 40) + vfield(b'i32', 'i32', -3) + vfield(b'i64', 'i64', -(1 << 50))
         + vfield(b'flag', 'bool', 1) + vfield(b'bytes', 'bytes', b'b' * 13)
         + vfield(b'arr', 'arr', [1, 2, 3, 4]))
    if version >= 2:
        b += vfield(b'v2', 'u64', 22)
    if version >= 3:
        b += vfield(b'v3', 'u32', 33)
    sub1 = vfield(b'sub_a', 'u32', 9) + vfield(b'sub_b', 'bool', 0)
    if deep:
        sub1 += vsub(b'deep', 1, vfield(b'deep', 'bytes', b'd' * 5) + b'\0')
    b += vsub(b'sub1', 2, sub1 + b'\0')
    if opt is not None:
        b += vsub(b'opt', 1, vfield(b'odd', 'u32', opt) + b'\0')
    return b + b'\0'


def section_full(idstr, instance, version, body, sid=2, length=None):
    n = len(body) if length is None else length
    return (bytes([0x04]) + struct.pack('>I', sid) + bytes([len(idstr)]) + idstr
            + struct.pack('>III', instance, version, n) + body + bytes([0x7e]) + struct.pack('>I', sid))


def vmsd_seeds():
    tiny = vfield(b'u8', 'u8', 1) + b'\0'
    return {
        'dev-v3': section_full(b'dev', 0, 3, dev_body(3, opt=4)),
        'dev-v1': section_full(b'dev', 3, 1, dev_body(1, deep=False)),
        'dev-v2': section_full(b'dev', 6, 2, dev_body(2)) + section_full(b'tiny', 1, 1, tiny, sid=3),
        'subs': section_full(b'subs', 2, 2, vsub(b'sub1', 1, vfield(b'sub_a', 'u32', 1)
                                                   + vfield(b'sub_b', 'bool', 1) + b'\0')
                             + vsub(b'opt', 1, vfield(b'odd', 'u32', 2) + b'\0') + b'\0'),
        'bad-odd': section_full(b'dev', 0, 3, dev_body(3, opt=5)),
        'bad-bool': section_full(b'subs', 2, 2, vsub(b'sub1', 1, vfield(b'sub_a', 'u32', 1)
                                                       + vfield(b'sub_b', 'bool', 2) + b'\0') + b'\0'),
        'bad-type': section_full(b'tiny', 1, 1, vfield(b'u8', 'u16', 1) + b'\0'),
        'bad-size': section_full(b'tiny', 1, 1, vfield(b'u8', 'u8', 1, size=2) + b'\0'),
        'bad-version': section_full(b'dev', 0, 4, dev_body(3)),
        'bad-sub-order': section_full(b'subs', 2, 2, vsub(b'opt', 1, vfield(b'odd', 'u32', 2) + b'\0')
                                      + vsub(b'sub1', 1, b'\0') + b'\0'),
        'bad-trailing': section_full(b'tiny', 1, 1, tiny + b'x'),
        'bad-len': section_full(b'tiny', 1, 1, tiny, length=0x7fffffff),
        'bad-footer': section_full(b'tiny', 1, 1, tiny)[:-1] + b'\x09',
    }


# ---- rp: return path messages (format.h); the target's blocks ----
RP_SHUT, RP_PONG, RP_REQ, RP_RUNNING, RP_MISSING, RP_MISSING_END, RP_HEARTBEAT, RP_SWACK, RP_LOAD = range(1, 10)
CHUNK_PAGES = 32768 * 8


def rp(t, payload=b''):
    return struct.pack('>HH', t, len(payload)) + payload


def rp_req(first, n, name):
    return rp(RP_REQ, struct.pack('>QI', first, n) + bytes([len(name)]) + name)


def rp_bitmap(name, first, words):
    return rp(RP_MISSING, bytes([len(name)]) + name + struct.pack('>Q', first)
              + b''.join(struct.pack('<Q', w) for w in words))


def rp_seeds():
    return {
        'session': rp(RP_PONG, struct.pack('>I', 7)) + rp(RP_LOAD, struct.pack('>IQQ', 0x4c000001, 1 << 20, 5000000))
        + rp(RP_SWACK) + rp(RP_RUNNING)
        + rp_req(0, 1, b'tiny') + rp_req(60, 9, b'small') + rp(RP_HEARTBEAT)
        + rp(RP_SHUT, struct.pack('>i', 0) + b'done'),
        'missing': rp_bitmap(b'tiny', 0, [1]) + rp_bitmap(b'small', 64, [0x1f])
        + rp_bitmap(b'big', CHUNK_PAGES, [0xffffffffffffffff, 0x3f]) + rp(RP_MISSING_END),
        'missing-past-end': rp_bitmap(b'small', 0, [0xffffffffffffffff, 0xffffffffffffffff]),
        'missing-full-chunk': rp_bitmap(b'big', 0, [0xffffffffffffffff] * 4096),
        'bad-missing': rp_bitmap(b'small', 65, [1]) + rp_bitmap(b'nope', 0, [1]),
        'bad-missing-short': rp(RP_MISSING, b'\x05small'),
        'bad-req': rp(RP_REQ, struct.pack('>QI', 0, 1) + b'\x05tiny'),
        'bad-req-nul': rp_req(0, 1, b'ti\0y'),
        'bad-len': struct.pack('>HH', RP_MISSING, 0xffff),
        'bad-load': rp(RP_LOAD, struct.pack('>IQ', 0x4c000001, 1 << 20)),
        'shut-error': rp(RP_SHUT, struct.pack('>i', -22) + b'x' * 400),
    }


# ---- hs: the first bytes of each connection (wire.c) ----
UUID = b'ferry-fuzz-uuid\0'    # fuzz-hs.c's
STREAM_MAGIC, PAGE = 0x46525259, 4096
MF_HS_MAGIC, PC_HS_MAGIC = 0x46524d43, 0x46525043


def hs_header(magic=STREAM_MAGIC, version=1, uuid=UUID, page=PAGE):
    return bytes([0]) + struct.pack('>II', magic, version) + uuid + struct.pack('>I', page)


def hs_mf(id_, count, magic=MF_HS_MAGIC, version=1, uuid=UUID):
    return bytes([1]) + struct.pack('>II', magic, version) + uuid + struct.pack('>II', id_, count)


def hs_pc(magic=PC_HS_MAGIC, version=1, uuid=UUID):
    return bytes([2]) + struct.pack('>II', magic, version) + uuid


def hs_resume(cmd=9, length=0, rec=0x08):
    return bytes([3]) + hs_header()[1:] + bytes([rec]) + struct.pack('>HH', cmd, length)


def hs_seeds():
    return {
        'header': hs_header(),
        'multifd': hs_mf(0, 2) + hs_mf(1, 2),
        'preempt': hs_pc(),
        'resume': hs_resume(),
        'bad-header': hs_header(magic=0x51455649) + hs_header(version=2) + hs_header(page=65536),
        'bad-multifd': hs_mf(3, 2) + hs_mf(0, 2, magic=MF_HS_MAGIC + 1) + hs_mf(0, 2, uuid=b'x' * 16),
        'bad-preempt': hs_pc(version=2) + hs_pc(uuid=b'y' * 16),
        'bad-resume': hs_resume(cmd=1, length=4),
        'truncated': hs_mf(0, 2)[:20],
    }


def captured(prefix):
    """The recordings of fuzz-capture named PREFIX-*, and each cut at a third and two thirds."""
    import subprocess
    import tempfile
    tool = os.environ.get('FUZZ_CAPTURE', os.path.join(os.path.dirname(__file__), '..', '..',
                                                        'build', 'tests', 'fuzz', 'fuzz-capture'))
    seeds = {}
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([tool, d], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name in sorted(os.listdir(d)):
            if not name.startswith(prefix + '-'):
                continue
            with open(os.path.join(d, name), 'rb') as f:
                data = f.read()
            name = name[len(prefix) + 1:]
            seeds[name] = data
            seeds[name + '-cut1'] = data[:len(data) // 3]
            seeds[name + '-cut2'] = data[:2 * len(data) // 3]
    return seeds


def stream_seeds():
    return captured('stream')


def pcstream_seeds():
    return captured('pcstream')


def pcconn_seeds():
    return captured('pcconn')


def src_seeds():
    return captured('src')


def multifd_seeds():
    return captured('multifd')


TARGETS = {'vring': vring_seeds, 'devstate': devstate_seeds, 'gdev': gdev_seeds, 'qmp': qmp_seeds,
           'vmsd': vmsd_seeds, 'rp': rp_seeds, 'hs': hs_seeds, 'stream': stream_seeds,
           'pcstream': pcstream_seeds, 'pcconn': pcconn_seeds, 'multifd': multifd_seeds,
           'src': src_seeds}


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
