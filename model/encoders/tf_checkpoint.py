"""Read the numeric tensors of a TensorFlow checkpoint ("tensor bundle") without TensorFlow.

A checkpoint ``<prefix>`` is ``<prefix>.index`` plus data shards ``<prefix>.data-NNNNN-of-MMMMM``.
The index is an SSTable in LevelDB's table format: a 48-byte footer (varint block handles of the
metaindex and index blocks, then the magic number) at the end; the index block maps keys to the
handles (offset, size) of the data blocks; every block holds prefix-compressed entries
(varints ``shared``, ``non_shared``, ``value_length``, then the key suffix and the value), then
``uint32`` restart offsets and their count, and is followed by a 5-byte trailer (compression type,
CRC). The entry with the empty key is the ``BundleHeaderProto`` (``num_shards``); every other entry
maps a tensor name to a ``BundleEntryProto`` (dtype, shape, shard_id, offset, size, crc32c): the
tensor's raw little-endian bytes are ``size`` bytes at ``offset`` in its data shard. The protobuf
fields are decoded by hand. String tensors (such as the object graph) are skipped.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from model.errors import CheckpointError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
# TensorFlow DataType enum -> numpy dtype (numeric types only; DT_STRING = 7 is skipped).
DTYPES: dict[int, str] = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?", 19: "<f2"}
DT_STRING = 7


def _varint(buf: bytes, pos: int, at: tuple[str, str]) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; returns (value, next position)."""
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CheckpointError(*at, "truncated or overlong varint")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if not byte & 0x80:
            return value, pos


def _proto_fields(buf: bytes, at: tuple[str, str]) -> list[tuple[int, int | bytes]]:
    """A protobuf message's (field number, value) pairs: varints as int, length-delimited as bytes."""
    fields: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos, at)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos, at)
            fields.append((number, value))
        elif wire == 2:
            length, pos = _varint(buf, pos, at)
            if pos + length > len(buf):
                raise CheckpointError(*at, f"truncated protobuf field {number}")
            fields.append((number, buf[pos : pos + length]))
            pos += length
        elif wire in (1, 5):  # fixed64 / fixed32 (crc32c): skipped
            pos += 8 if wire == 1 else 4
        else:
            raise CheckpointError(*at, f"unsupported protobuf wire type {wire}")
    if pos != len(buf):
        raise CheckpointError(*at, "truncated protobuf message")
    return fields


def _block(data: bytes, handle: bytes, at: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of the block that ``handle`` (varint offset, size) points to."""
    offset, pos = _varint(handle, 0, at)
    size, _ = _varint(handle, pos, at)
    if offset + size + BLOCK_TRAILER_SIZE > len(data) or size < 4:
        raise CheckpointError(*at, f"block at {offset} (+{size} bytes) runs past the end of the file")
    if data[offset + size] != 0:
        raise CheckpointError(*at, f"block at {offset} is compressed (type {data[offset + size]}), unsupported")
    block = data[offset : offset + size]
    (restarts,) = struct.unpack_from("<I", block, size - 4)
    end = size - 4 - 4 * restarts
    if end < 0:
        raise CheckpointError(*at, f"block at {offset} has a bad restart count {restarts}")
    entries: list[tuple[bytes, bytes]] = []
    key, pos = b"", 0
    while pos < end:
        shared, pos = _varint(block, pos, at)
        non_shared, pos = _varint(block, pos, at)
        value_length, pos = _varint(block, pos, at)
        if shared > len(key) or pos + non_shared + value_length > end:
            raise CheckpointError(*at, f"corrupt entry in block at {offset}")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos : pos + value_length]))
        pos += value_length
    return entries


def _shape(proto: int | bytes, at: tuple[str, str]) -> list[int]:
    """A ``TensorShapeProto``'s dimensions (field 2, each a ``Dim`` whose field 1 is the size)."""
    if not isinstance(proto, bytes):
        raise CheckpointError(*at, "shape is not a message")
    dims = [d for n, d in _proto_fields(proto, at) if n == 2 and isinstance(d, bytes)]
    return [next((int(s) for n, s in _proto_fields(d, at) if n == 1), 0) for d in dims]


def read_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """All numeric tensors of the checkpoint ``prefix`` (e.g. ``.../variables/variables``), as float32."""
    index = Path(f"{prefix}.index")
    data = index.read_bytes()
    at = (str(index), "(table footer)")
    if len(data) < FOOTER_SIZE or struct.unpack_from("<Q", data, len(data) - 8)[0] != TABLE_MAGIC:
        raise CheckpointError(*at, "not an SSTable (file too short or bad magic number)")
    footer = data[-FOOTER_SIZE:]
    pos = _varint(footer, _varint(footer, 0, at)[1], at)[1]  # skip the metaindex handle (offset, size)
    num_shards = 1
    shards: dict[int, bytes] = {}
    tensors: dict[str, np.ndarray] = {}
    for _, handle in _block(data, footer[pos:], (str(index), "(index block)")):
        for raw_key, value in _block(data, handle, (str(index), "(data block)")):
            at = (str(index), raw_key.decode("utf-8", "replace") or "(header)")
            entry = dict(_proto_fields(value, at))
            if not raw_key:  # BundleHeaderProto: num_shards = 1, endianness = 2 (0: little), version = 3
                num_shards = int(entry.get(1, 1))
                if entry.get(2, 0) != 0:
                    raise CheckpointError(*at, "big-endian checkpoints are unsupported")
                continue
            # BundleEntryProto: dtype = 1, shape = 2, shard_id = 3, offset = 4, size = 5, slices = 7.
            dtype = entry.get(1, 0)
            if dtype == DT_STRING:
                continue
            if not isinstance(dtype, int) or dtype not in DTYPES:
                raise CheckpointError(*at, f"unsupported dtype {dtype!r}")
            if 7 in entry:
                raise CheckpointError(*at, "sliced (partitioned) tensors are unsupported")
            shape = _shape(entry.get(2, b""), at)
            shard, offset, size = (entry.get(k, 0) for k in (3, 4, 5))
            if not (isinstance(shard, int) and isinstance(offset, int) and isinstance(size, int)):
                raise CheckpointError(*at, "shard_id, offset or size is not an integer")
            if shard not in shards:
                path = Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")
                if not path.is_file():
                    raise CheckpointError(*at, f"data shard {path} not found")
                shards[shard] = path.read_bytes()
            count = int(np.prod(shape))
            if size != np.dtype(DTYPES[dtype]).itemsize * count or offset + size > len(shards[shard]):
                raise CheckpointError(*at, f"bad extent: {size} bytes at {offset} for shape {shape}")
            array = np.frombuffer(shards[shard], DTYPES[dtype], count, offset)
            tensors[at[1]] = array.reshape(shape).astype(np.float32)
    if not tensors:
        raise CheckpointError(str(index), "(table)", "no numeric tensors found")
    return tensors
