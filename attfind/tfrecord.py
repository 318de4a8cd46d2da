"""``examples_1.tfrecord``, the release's AttFind effects, read and written without TensorFlow.

The file is a TFRecord: records, each ``length`` (uint64 LE), ``masked_crc32c(length bytes)``
(uint32 LE), ``data``, ``masked_crc32c(data)`` (uint32 LE), where ``masked(c) = ((c >> 15) |
(c << 17)) + 0xa282ead8`` mod 2^32 and crc32c is CRC-32C (Castagnoli). Each ``data`` is one
serialised ``tf.train.Example`` per image with float-list features

- ``base_prob``: the classifier's output on the reconstruction, ``C`` values (logits in the
  notebook, despite the name);
- ``dlatent``: ``D`` values (514);
- ``result``: the effects, flattened from ``[S, 2, C]`` (for each style coordinate, the change
  of each class when moving it to its min, then to its max).

``read_examples`` returns ``effects`` as ``[N, 2, S, C]`` (the notebook's
``style_change_effect``): ``result.reshape(S, 2, C).transpose(1, 0, 2)`` per image;
``write_examples`` / ``write_effects`` do the inverse.

The Example protobuf subset is encoded and decoded here in pure Python (``Example.features``
-> ``Features.feature`` map<string, Feature> -> ``Feature.float_list`` / ``int64_list`` /
``bytes_list``), so the PyTorch side needs no TensorFlow. ``codec="tensorflow"`` uses
TensorFlow's generated ``example_pb2`` instead; ``"auto"`` uses it only if TensorFlow is already
imported (importing it just for this would take seconds). Both give the same arrays.
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Mapping

import numpy as np

from porting.atomic import atomic_path
from porting.errors import PortError

FEATURES = ("base_prob", "dlatent", "result")


class TFRecordError(PortError):
    """A TFRecord or Example that is truncated, corrupted or not shaped as the release's."""


# --------------------------------------------------------------------------- CRC-32C


def _make_table() -> np.ndarray:
    poly = 0x82F63B78  # Castagnoli, reflected
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(poly), t >> 1).astype(np.uint32)
    return t


_TABLE = _make_table()
_TABLE_LIST = [int(x) for x in _TABLE]
_LANES = 512            # byte lanes processed side by side by the NumPy path
_NUMPY_FROM = 4096      # below this many bytes the plain loop is faster


def _crc_loop(data: bytes, crc: int) -> int:
    t = _TABLE_LIST
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


def _apply(op: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Apply a GF(2)-linear map of 32-bit registers, given as ``op[b]`` = image of bit ``b``."""
    bits = ((x[:, None] >> np.arange(32, dtype=np.uint32)) & 1).astype(bool)
    return np.bitwise_xor.reduce(np.where(bits, op[None, :], np.uint32(0)), axis=1)


def _zeros_op(nbytes: int) -> np.ndarray:
    """The map 'feed ``nbytes`` zero bytes to the CRC register' (register x -> x M^nbytes)."""
    unit = np.uint32(1) << np.arange(32, dtype=np.uint32)  # the register's 32 basis vectors
    op = _TABLE[unit & 0xFF] ^ (unit >> 8)  # one zero byte: reg -> T[reg & 0xFF] ^ (reg >> 8)
    result = None  # identity
    n = nbytes
    while n:
        if n & 1:
            result = op.copy() if result is None else _apply(op, result)
        n >>= 1
        if n:
            op = _apply(op, op)
    return unit if result is None else result


def _crc_lanes(data: bytes) -> int:
    """CRC register (init 0, no final xor) of ``data``, computed in ``_LANES`` parallel lanes.

    CRC without init is linear: with zero bytes prepended it is unchanged, and
    ``crc(A || B) = shift(crc(A), len(B)) ^ crc(B)``. So we left-pad to a multiple of the lane
    count, run every lane at once (one NumPy step per byte position), and fold the lanes
    pairwise, shifting the left one of each pair by its partner's length."""
    n = len(data)
    lane_len = -(-n // _LANES)
    buf = np.zeros(_LANES * lane_len, dtype=np.uint8)
    buf[len(buf) - n:] = np.frombuffer(data, dtype=np.uint8)
    cols = buf.reshape(_LANES, lane_len).T.astype(np.uint32)  # [position, lane], contiguous rows
    reg = np.zeros(_LANES, dtype=np.uint32)
    for row in cols:
        reg = _TABLE[(reg ^ row) & 0xFF] ^ (reg >> 8)
    op = _zeros_op(lane_len)
    while len(reg) > 1:
        reg = _apply(op, reg[0::2]) ^ reg[1::2]
        if len(reg) > 1:
            op = _apply(op, op)
    return int(reg[0])


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as TFRecord uses it (init and final xor 0xFFFFFFFF)."""
    data = bytes(data)
    if len(data) < _NUMPY_FROM:
        return _crc_loop(data, 0xFFFFFFFF) ^ 0xFFFFFFFF
    # A starting register x equals x's 4 little-endian bytes xored into the first 4 data bytes.
    head = bytes(b ^ 0xFF for b in data[:4])
    return _crc_lanes(head + data[4:]) ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --------------------------------------------------------------------------- TFRecord container


def encode_record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc32c(length)) + data
            + struct.pack("<I", masked_crc32c(data)))


def _read_exact(f: BinaryIO, n: int) -> bytes:
    out = f.read(n)
    return out if out is not None else b""


def iter_records(path) -> Iterator[bytes]:
    """Yield the payload of each record of a TFRecord file, checking both CRCs. Raises
    ``TFRecordError`` naming the file, the record index and the byte offset if the file is
    truncated or corrupted. (Compressed TFRecords are not supported; the release's is not.)"""
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise TFRecordError(f"{path}: cannot read: {e.strerror or e}") from None
    with f:
        index, offset = 0, 0
        while True:
            header = _read_exact(f, 12)
            if not header:
                return
            where = f"{path}: record {index} (byte {offset})"
            if len(header) < 12:
                raise TFRecordError(f"{where}: truncated: {len(header)} of 12 header bytes")
            (length,), (len_crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
            if masked_crc32c(header[:8]) != len_crc:
                raise TFRecordError(f"{where}: corrupted: the length field's CRC does not match "
                                    "(not a TFRecord file, or damaged)")
            body = _read_exact(f, length + 4)
            if len(body) < length + 4:
                raise TFRecordError(f"{where}: truncated: the record says {length} bytes + 4 of CRC, "
                                    f"the file has {len(body)} left")
            data, (data_crc,) = body[:length], struct.unpack("<I", body[length:])
            if masked_crc32c(data) != data_crc:
                raise TFRecordError(f"{where}: corrupted: the data CRC does not match")
            yield data
            index += 1
            offset += 12 + length + 4


def write_records(path, payloads: Iterable[bytes]) -> Path:
    """Write payloads as a TFRecord file, atomically (temporary file beside it, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for p in payloads:
            f.write(encode_record(bytes(p)))
    return path


# --------------------------------------------------------------------------- Example protobuf (pure)

# Field numbers (tensorflow/core/example/{example,feature}.proto):
# Example.features = 1; Features.feature = 1 (map entry: key = 1, value = 2);
# Feature.bytes_list = 1, float_list = 2, int64_list = 3; *List.value = 1.
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(field_no: int, payload: bytes) -> bytes:
    return _varint(field_no << 3 | _LEN) + _varint(len(payload)) + payload


class _ProtoError(Exception):
    pass


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _ProtoError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _ProtoError("varint too long")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(field number, wire type, value)``; LEN values are memoryviews."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field_no, wire = key >> 3, key & 7
        if field_no == 0:
            raise _ProtoError("field number 0")
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire == _I64:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == _LEN:
            n, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == _I32:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise _ProtoError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise _ProtoError("truncated field")
        yield field_no, wire, value


def _decode_feature(buf: memoryview):
    kind, values = None, []
    for field_no, wire, value in _fields(buf):
        if wire != _LEN or field_no not in (1, 2, 3):
            continue  # unknown field: skipped, as protobuf does
        new_kind = {1: "bytes", 2: "float", 3: "int64"}[field_no]
        if kind is not None and new_kind != kind:  # oneof: the last one set wins
            values = []
        kind = new_kind
        for f2, w2, v2 in _fields(value):
            if f2 != 1:
                continue
            if kind == "bytes" and w2 == _LEN:
                values.append(bytes(v2))
            elif kind == "float" and w2 == _LEN:  # packed
                if len(v2) % 4:
                    raise _ProtoError("packed float list of odd length")
                values.append(np.frombuffer(v2, dtype="<f4"))
            elif kind == "float" and w2 == _I32:
                values.append(np.frombuffer(v2, dtype="<f4"))
            elif kind == "int64" and w2 == _LEN:  # packed varints
                pos, ints = 0, []
                while pos < len(v2):
                    x, pos = _read_varint(v2, pos)
                    ints.append(x - (1 << 64) if x >= 1 << 63 else x)
                values.append(np.asarray(ints, dtype=np.int64))
            elif kind == "int64" and w2 == _VARINT:
                values.append(np.asarray([v2 - (1 << 64) if v2 >= 1 << 63 else v2], dtype=np.int64))
            else:
                raise _ProtoError(f"{kind}_list value with wire type {w2}")
    if kind == "float":
        return np.concatenate(values).astype(np.float32) if values else np.zeros(0, np.float32)
    if kind == "int64":
        return np.concatenate(values) if values else np.zeros(0, np.int64)
    if kind == "bytes":
        return values
    return None  # a Feature with no kind set


def decode_example(data: bytes) -> dict[str, Any]:
    """A serialised ``tf.train.Example`` -> ``{name: value}``: float lists as float32 arrays,
    int64 lists as int64 arrays, bytes lists as lists of bytes, an empty Feature as None."""
    out: dict[str, Any] = {}
    try:
        for f1, w1, features in _fields(memoryview(data)):
            if f1 != 1 or w1 != _LEN:
                continue
            for f2, w2, entry in _fields(features):
                if f2 != 1 or w2 != _LEN:
                    continue
                key, value = "", memoryview(b"")
                for f3, w3, v3 in _fields(entry):
                    if f3 == 1 and w3 == _LEN:
                        key = bytes(v3).decode("utf-8")
                    elif f3 == 2 and w3 == _LEN:
                        value = v3
                out[key] = _decode_feature(value)  # a repeated map key: the last one wins
    except (_ProtoError, UnicodeDecodeError) as e:
        raise TFRecordError(f"not a tf.train.Example: {e}") from None
    return out


def _is_bytes_list(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, bytes) for v in value)


def _feature_bytes(value) -> bytes:
    if _is_bytes_list(value):
        inner = b"".join(_len_field(1, v) for v in value)
        return _len_field(1, inner)
    arr = np.asarray(value)
    if np.issubdtype(arr.dtype, np.integer):
        packed = b"".join(_varint(int(v) & 0xFFFFFFFFFFFFFFFF) for v in arr.reshape(-1))
        return _len_field(3, _len_field(1, packed) if packed else b"")
    packed = np.ascontiguousarray(arr.reshape(-1), dtype="<f4").tobytes()
    return _len_field(2, _len_field(1, packed) if packed else b"")


def encode_example(features: Mapping[str, Any]) -> bytes:
    """``{name: values}`` -> a serialised ``tf.train.Example`` (pure Python, deterministic: map
    entries in the given order). Float arrays become packed float lists (cast to float32),
    integer arrays int64 lists, lists of bytes bytes lists."""
    entries = b"".join(_len_field(1, _len_field(1, k.encode("utf-8")) + _len_field(2, _feature_bytes(v)))
                       for k, v in features.items())
    return _len_field(1, entries)


# --------------------------------------------------------------------------- Example via TensorFlow


def _tf_example_pb2():
    from tensorflow.core.example import example_pb2  # noqa: PLC0415 (optional, heavy)
    return example_pb2


def _use_tf(codec: str) -> bool:
    if codec == "pure":
        return False
    if codec == "tensorflow":
        return True
    if codec == "auto":
        return "tensorflow" in sys.modules
    raise ValueError(f"codec must be 'auto', 'pure' or 'tensorflow', got {codec!r}")


def _tf_encode(pb2, features: Mapping[str, Any]) -> bytes:
    ex = pb2.Example()
    for k, v in features.items():
        if _is_bytes_list(v):
            ex.features.feature[k].bytes_list.value.extend(v)
            continue
        arr = np.asarray(v)
        if np.issubdtype(arr.dtype, np.integer):
            ex.features.feature[k].int64_list.value.extend(int(x) for x in arr.reshape(-1))
        else:
            ex.features.feature[k].float_list.value.extend(arr.reshape(-1).astype(np.float32).tolist())
    return ex.SerializeToString()


def _tf_decode(pb2, data: bytes) -> dict[str, Any]:
    ex = pb2.Example()
    try:
        ex.ParseFromString(data)
    except Exception as e:  # google.protobuf.message.DecodeError
        raise TFRecordError(f"not a tf.train.Example: {e}") from None
    out: dict[str, Any] = {}
    for k, f in ex.features.feature.items():
        kind = f.WhichOneof("kind")
        if kind == "float_list":
            out[k] = np.asarray(f.float_list.value, dtype=np.float32)
        elif kind == "int64_list":
            out[k] = np.asarray(f.int64_list.value, dtype=np.int64)
        elif kind == "bytes_list":
            out[k] = list(f.bytes_list.value)
        else:
            out[k] = None
    return out


# --------------------------------------------------------------------------- the release's file


def write_examples(path, records: Iterable[Mapping[str, Any]], codec: str = "pure") -> Path:
    """Write one ``tf.train.Example`` per record, atomically. A record maps feature names to
    values; for the release's format: ``base_prob [C]``, ``dlatent [D]`` and ``result``, either
    flat or ``[S, 2, C]`` (flattened in C order). Values are stored as float32 lists."""
    use_tf = _use_tf(codec)
    pb2 = _tf_example_pb2() if use_tf else None

    def payloads():
        for r in records:
            feats = {k: v if _is_bytes_list(v) else np.asarray(v).reshape(-1) for k, v in r.items()}
            yield _tf_encode(pb2, feats) if use_tf else encode_example(feats)
    return write_records(path, payloads())


def write_effects(path, base_prob, dlatents, effects, codec: str = "pure") -> Path:
    """Write the release's ``examples_1.tfrecord`` from arrays: ``base_prob [N, C]``,
    ``dlatents [N, D]``, ``effects [N, 2, S, C]`` (stored per image as ``[S, 2, C]``)."""
    base_prob, dlatents, effects = np.asarray(base_prob), np.asarray(dlatents), np.asarray(effects)
    n = len(base_prob)
    if effects.ndim != 4 or effects.shape[1] != 2 or len(dlatents) != n or len(effects) != n \
            or effects.shape[3] != base_prob.shape[1]:
        raise ValueError(f"write_effects: shapes do not fit: base_prob {list(base_prob.shape)}, "
                         f"dlatents {list(dlatents.shape)}, effects {list(effects.shape)} (expected [N, 2, S, C])")
    per_image = effects.transpose(0, 2, 1, 3)  # [N, S, 2, C]
    return write_examples(path, ({"base_prob": base_prob[i], "dlatent": dlatents[i], "result": per_image[i]}
                                 for i in range(n)), codec=codec)


def read_examples(path, codec: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``examples_1.tfrecord`` -> ``(base_prob [N, C], dlatents [N, D], effects [N, 2, S, C])``,
    float32. ``C`` comes from ``base_prob``; ``S = len(result) / (2 C)``; every image must agree.
    ``effects[n, d, j, c]`` = ``result_n.reshape(S, 2, C)[j, d, c]``."""
    path = Path(path)
    use_tf = _use_tf(codec)
    pb2 = _tf_example_pb2() if use_tf else None
    base, lat, res = [], [], []
    shapes = None
    for i, data in enumerate(iter_records(path)):
        try:
            ex = _tf_decode(pb2, data) if use_tf else decode_example(data)
        except TFRecordError as e:
            raise TFRecordError(f"{path}: record {i}: {e}") from None
        for name in FEATURES:
            v = ex.get(name)
            if not isinstance(v, np.ndarray) or v.dtype != np.float32:
                got = "missing" if name not in ex else ("an empty feature" if v is None else
                                                        f"a {'bytes' if isinstance(v, list) else v.dtype} list")
                raise TFRecordError(f"{path}: record {i}: feature {name!r} should be a float list, it is {got}")
        b, d, r = ex["base_prob"], ex["dlatent"], ex["result"]
        c = len(b)
        if c == 0 or len(r) % (2 * c):
            raise TFRecordError(f"{path}: record {i}: 'result' has {len(r)} values, not a multiple of "
                                f"2 x {c} classes")
        s = len(r) // (2 * c)
        if shapes is None:
            shapes = (c, len(d), s)
        elif shapes != (c, len(d), s):
            raise TFRecordError(f"{path}: record {i}: {c} classes, {len(d)} dlatent values, {s} styles; "
                                f"record 0 has {shapes[0]}, {shapes[1]}, {shapes[2]}")
        base.append(b)
        lat.append(d)
        res.append(r.reshape(s, 2, c))
    if shapes is None:
        raise TFRecordError(f"{path}: no records")
    effects = np.stack(res).transpose(0, 2, 1, 3)  # [N, S, 2, C] -> [N, 2, S, C]
    return np.stack(base), np.stack(lat), np.ascontiguousarray(effects)
