# Small helpers to inspect and patch VHDX images in tests
#
# Copyright (c) 2026 The Hyper-V checkpoints project authors
#
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Only what the tests need: the two 4 KiB headers (64 KiB and 128 KiB),
# whose checksum is CRC-32C over the header with the checksum field
# zeroed (MS-VHDX 2.2.2).

import struct
import uuid

HEADER_OFFSETS = (64 * 1024, 128 * 1024)
HEADER_SIZE = 4096


def _crc32c_table():
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def read_headers(path):
    """Return [(sequence, file_write_guid, data_write_guid)] of both headers"""
    out = []
    with open(path, 'rb') as f:
        for off in HEADER_OFFSETS:
            f.seek(off)
            h = f.read(HEADER_SIZE)
            seq, = struct.unpack_from('<Q', h, 8)
            out.append((seq, uuid.UUID(bytes_le=h[16:32]),
                        uuid.UUID(bytes_le=h[32:48])))
    return out


def _rewrite_headers(path, start, data):
    """Put @data at byte @start of both headers, with new checksums"""
    with open(path, 'r+b') as f:
        for off in HEADER_OFFSETS:
            f.seek(off)
            h = bytearray(f.read(HEADER_SIZE))
            if h[0:4] != b'head':
                raise ValueError(f'{path}: no VHDX header at {off}')
            h[start:start + len(data)] = data
            h[4:8] = b'\0\0\0\0'
            struct.pack_into('<I', h, 4, crc32c(h))
            f.seek(off)
            f.write(h)


def set_data_write_guid(path, guid):
    """Write @guid (uuid.UUID) as DataWriteGuid of both headers"""
    _rewrite_headers(path, 32, guid.bytes_le)


def set_log_guid(path, guid):
    """Write @guid (uuid.UUID) as LogGuid of both headers, as a writer
    killed between setting it and writing the first log entry leaves it"""
    _rewrite_headers(path, 48, guid.bytes_le)


def log_guid(path):
    """LogGuid of the header with the higher sequence number"""
    with open(path, 'rb') as f:
        best = None
        for off in HEADER_OFFSETS:
            f.seek(off)
            h = f.read(HEADER_SIZE)
            seq, = struct.unpack_from('<Q', h, 8)
            if best is None or seq > best[0]:
                best = (seq, uuid.UUID(bytes_le=h[48:64]))
    return best[1]


METADATA_REGION = uuid.UUID('8b7ca206-4790-4b9a-b8fe-575f050f886e')
PARENT_LOCATOR_ITEM = uuid.UUID('a8d35f2d-b30b-454d-abf7-d3d84834ab0c')


def locator_offset(path):
    """(file offset, length) of the Parent Locator item of @path"""
    with open(path, 'rb') as f:
        f.seek(192 * 1024)
        rt = f.read(64 * 1024)
        count, = struct.unpack_from('<I', rt, 8)
        md_off = None
        for i in range(count):
            e = rt[16 + 32 * i:48 + 32 * i]
            if uuid.UUID(bytes_le=e[0:16]) == METADATA_REGION:
                md_off, = struct.unpack_from('<Q', e, 16)
        f.seek(md_off)
        table = f.read(64 * 1024)
        count, = struct.unpack_from('<H', table, 10)
        for i in range(count):
            e = table[32 + 32 * i:64 + 32 * i]
            if uuid.UUID(bytes_le=e[0:16]) == PARENT_LOCATOR_ITEM:
                off, length = struct.unpack_from('<II', e, 16)
                return md_off + off, length
    raise ValueError(f'{path}: no parent locator')


def locator_entries(path):
    """The key/value entries of the Parent Locator of @path, as a dict"""
    off, length = locator_offset(path)
    with open(path, 'rb') as f:
        f.seek(off)
        item = f.read(length)
    count, = struct.unpack_from('<H', item, 18)
    entries = {}
    for i in range(count):
        ko, vo, kl, vl = struct.unpack_from('<IIHH', item, 20 + 12 * i)
        entries[item[ko:ko + kl].decode('utf-16-le')] = \
            item[vo:vo + vl].decode('utf-16-le')
    return entries


def patch(path, offset, data):
    with open(path, 'r+b') as f:
        f.seek(offset)
        f.write(data)


BAT_REGION = uuid.UUID('2dc27766-f623-4200-9d64-115e9bfd4a08')


def bat_offset(path):
    """File offset of the BAT of @path"""
    with open(path, 'rb') as f:
        f.seek(192 * 1024)
        rt = f.read(64 * 1024)
    count, = struct.unpack_from('<I', rt, 8)
    for i in range(count):
        e = rt[16 + 32 * i:48 + 32 * i]
        if uuid.UUID(bytes_le=e[0:16]) == BAT_REGION:
            return struct.unpack_from('<Q', e, 16)[0]
    raise ValueError(f'{path}: no BAT region')


def bat_entry(path, index):
    """(state, file offset) of BAT entry @index"""
    with open(path, 'rb') as f:
        f.seek(bat_offset(path) + 8 * index)
        e, = struct.unpack('<Q', f.read(8))
    return e & 7, e & ~0xFFFFF


def set_bat_entry(path, index, state, offset):
    patch(path, bat_offset(path) + 8 * index,
          struct.pack('<Q', (offset & ~0xFFFFF) | state))
