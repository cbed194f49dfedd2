"""TensorFlow's tensor-bundle checkpoint format (`X.index` + `X.data-00000-of-00001`) in numpy.

The index is a LevelDB-style table: blocks of prefix-compressed key/value entries, an index
block pointing at them, and a 48-byte footer. The empty key holds a BundleHeaderProto; every
other key is a tensor name whose value is a BundleEntryProto (dtype, shape, shard, offset, size,
crc32c). The data files hold the raw little-endian tensors. Only the tensors asked for are read,
each checked against its shape, size and checksum. No TensorFlow needed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np

MAGIC = 0xDB4775248B80FB57
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 14: "bfloat16", 19: np.float16}


class BundleError(ValueError):
    """A malformed or inconsistent checkpoint; the message names the file or tensor."""


def varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise IndexError("varint runs past the end")
        b = buf[pos]
        result |= (b & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not b & 0x80:
            return result, pos


def proto_fields(buf: bytes):
    """Yield (field number, value) of a protobuf message; length-delimited values as bytes."""
    pos = 0
    while pos < len(buf):
        tag, pos = varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            n, pos = varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, value


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def snappy_decompress(buf: bytes) -> bytes:
    """Raw snappy: a varint length, then literal and back-reference elements."""
    n, pos = varint(buf, 0)
    out = bytearray()
    while pos < len(buf):
        tag = buf[pos]
        kind, pos = tag & 3, pos + 1
        if kind == 0:  # literal
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                length = int.from_bytes(buf[pos : pos + extra], "little")
                pos += extra
            out += buf[pos : pos + length + 1]
            pos += length + 1
            continue
        if kind == 1:
            length, offset = 4 + ((tag >> 2) & 7), ((tag >> 5) << 8) | buf[pos]
            pos += 1
        else:
            size = 2 if kind == 2 else 4
            length, offset = (tag >> 2) + 1, int.from_bytes(buf[pos : pos + size], "little")
            pos += size
        for _ in range(length):  # copies may overlap their own output
            out.append(out[-offset])
    if len(out) != n:
        raise ValueError("snappy block decompressed to the wrong length")
    return bytes(out)


def read_block(data: bytes, offset: int, size: int) -> bytes:
    """A table block's contents, its trailer (compression byte, masked crc) checked."""
    contents, trailer = data[offset : offset + size], data[offset + size : offset + size + 5]
    if len(contents) != size or len(trailer) != 5:
        raise ValueError("block runs past the end of the file")
    kind, crc = trailer[0], struct.unpack("<I", trailer[1:])[0]
    if masked_crc(contents + trailer[:1]) != crc:
        raise ValueError(f"block at offset {offset} fails its checksum")
    if kind == 1:
        return snappy_decompress(contents)
    if kind != 0:
        raise ValueError(f"block at offset {offset} has unknown compression {kind}")
    return contents


def block_entries(block: bytes):
    """Yield (key, value) of a block: prefix-compressed entries, then the restart array."""
    (n_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end, pos, key = len(block) - 4 - 4 * n_restarts, 0, b""
    while pos < end:
        shared, pos = varint(block, pos)
        unshared, pos = varint(block, pos)
        n_value, pos = varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + n_value]
        pos += n_value


@dataclass(frozen=True)
class Entry:
    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int | None


def parse_entry(buf: bytes) -> Entry:
    f = {"dtype": 0, "shape": (), "shard": 0, "offset": 0, "size": 0, "crc32c": None}
    for field, value in proto_fields(buf):
        if field == 1:
            f["dtype"] = value
        elif field == 2:
            dims = [dim for n, dim in proto_fields(value) if n == 2]
            f["shape"] = tuple(next((v for n, v in proto_fields(d) if n == 1), 0) for d in dims)
        elif field in (3, 4, 5, 6):
            f[("shard", "offset", "size", "crc32c")[field - 3]] = value
        elif field == 7:
            raise ValueError("sliced (partitioned) tensors are not supported")
    return Entry(**f)


class TensorBundle:
    """Read tensors from the checkpoint with prefix `prefix` (e.g. `DIR/model.ckpt`)."""

    def __init__(self, prefix: str | Path):
        self.prefix = Path(prefix)
        self.index_file = Path(f"{prefix}.index")
        if not self.index_file.is_file():
            raise FileNotFoundError(f"{self.index_file}: missing checkpoint index")
        try:
            self.entries, self.num_shards = self._read_index(self.index_file.read_bytes())
        except (ValueError, IndexError, struct.error) as e:
            raise BundleError(
                f"{self.index_file}: not a TensorFlow checkpoint index ({e})"
            ) from None

    @staticmethod
    def _read_index(data: bytes) -> tuple[dict[str, Entry], int]:
        if len(data) < 48 or struct.unpack_from("<Q", data, len(data) - 8)[0] != MAGIC:
            raise ValueError("bad footer magic")
        footer = data[-48:]
        _, pos = varint(footer, 0)  # metaindex handle: offset, size (unused)
        _, pos = varint(footer, pos)
        index_offset, pos = varint(footer, pos)
        index_size, pos = varint(footer, pos)
        entries, num_shards = {}, 1
        for _, handle in block_entries(read_block(data, index_offset, index_size)):
            offset, p = varint(handle, 0)
            size, _ = varint(handle, p)
            for key, value in block_entries(read_block(data, offset, size)):
                if key == b"":
                    header = dict(proto_fields(value))
                    num_shards = header.get(1, 1)
                    if header.get(2, 0) != 0:
                        raise ValueError("big-endian checkpoints are not supported")
                else:
                    entries[key.decode()] = parse_entry(value)
        return entries, num_shards

    def keys(self) -> list[str]:
        return list(self.entries)

    def data_file(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name].shape

    def read(self, name: str) -> np.ndarray:
        """Tensor `name`, its size and checksum verified; errors name the tensor and file."""
        if name not in self.entries:
            raise BundleError(f"{self.index_file}: no tensor named {name}")
        e = self.entries[name]
        if e.dtype not in DTYPES:
            raise BundleError(f"{self.index_file}: tensor {name} has unsupported dtype {e.dtype}")
        dtype = np.dtype(DTYPES[e.dtype] if e.dtype != 14 else np.uint16)
        if e.size != dtype.itemsize * int(np.prod(e.shape, dtype=np.int64)):
            raise BundleError(
                f"{self.index_file}: tensor {name} has size {e.size} bytes, "
                f"not that of {dtype.name}{list(e.shape)}"
            )
        path = self.data_file(e.shard)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing checkpoint data file (tensor {name})")
        with open(path, "rb") as f:
            f.seek(e.offset)
            raw = f.read(e.size)
        if len(raw) != e.size:
            raise BundleError(
                f"{path}: truncated: tensor {name} needs bytes {e.offset}.."
                f"{e.offset + e.size}, file has {path.stat().st_size}"
            )
        if e.crc32c is not None and masked_crc(raw) != e.crc32c:
            raise BundleError(f"{path}: tensor {name} fails its crc32c checksum")
        array = np.frombuffer(raw, dtype).reshape(e.shape)
        if e.dtype == 14:  # bfloat16: the high half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint_bytes(number << 3 | wire) + payload


def _entry_proto(array: np.ndarray, offset: int, crc: int) -> bytes:
    code = {np.dtype(v): k for k, v in DTYPES.items() if v != "bfloat16"}[array.dtype]
    dims = b"".join(_field(2, 2, _bytes_field(_field(1, 0, _varint_bytes(d)))) for d in array.shape)
    return (
        _field(1, 0, _varint_bytes(code))
        + _field(2, 2, _bytes_field(dims))
        + _field(4, 0, _varint_bytes(offset))
        + _field(5, 0, _varint_bytes(array.nbytes))
        + _field(6, 5, struct.pack("<I", crc))
    )


def _bytes_field(payload: bytes) -> bytes:
    return _varint_bytes(len(payload)) + payload


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    """Every entry a restart point (no prefix sharing): simple and valid."""
    body, restarts = bytearray(), []
    for key, value in entries:
        restarts.append(len(body))
        body += _varint_bytes(0) + _varint_bytes(len(key)) + _varint_bytes(len(value))
        body += key + value
    restarts = restarts or [0]
    return (
        bytes(body)
        + struct.pack(f"<{len(restarts)}I", *restarts)
        + struct.pack("<I", len(restarts))
    )


def write_bundle(prefix: str | Path, tensors) -> None:
    """Write (name, array) pairs as a one-shard tensor bundle, streaming the data file.

    For fixtures and benchmarks: what TensorFlow's BundleWriter writes, minus compression.
    """
    entries = []
    with open(f"{prefix}.data-00000-of-00001", "wb") as data:
        for name, array in tensors:
            raw = np.ascontiguousarray(array).tobytes()
            entries.append((name.encode(), _entry_proto(array, data.tell(), masked_crc(raw))))
            data.write(raw)
    header = _field(1, 0, _varint_bytes(1)) + _field(3, 2, _bytes_field(_field(1, 0, b"\x01")))
    table, handles = bytearray(), []
    for block in (_block([(b"", header), *sorted(entries)]), _block([])):
        handles.append(_varint_bytes(len(table)) + _varint_bytes(len(block)))
        table += block + b"\x00" + struct.pack("<I", masked_crc(block + b"\x00"))
    last_key = max([b""] + [k for k, _ in entries])
    index = _block([(last_key, handles[0])])
    index_handle = _varint_bytes(len(table)) + _varint_bytes(len(index))
    table += index + b"\x00" + struct.pack("<I", masked_crc(index + b"\x00"))
    footer = handles[1] + index_handle
    table += footer + b"\x00" * (40 - len(footer)) + struct.pack("<Q", MAGIC)
    Path(f"{prefix}.index").write_bytes(bytes(table))
