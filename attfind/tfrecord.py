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

No TensorFlow is needed: CRC-32C comes from ``google-crc32c`` and the Example messages from the
protobuf runtime, with classes built at import time from a descriptor of ``tf.train.Example``'s
public schema (tensorflow/core/example/{example,feature}.proto) in a private descriptor pool, so
they cannot clash with TensorFlow's own ``example_pb2`` when both are loaded. The framing is the
few lines below. From the project only ``porting.atomic`` and ``porting.errors`` are imported.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Mapping

import google_crc32c
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from porting.atomic import atomic_path
from porting.errors import PortError

FEATURES = ("base_prob", "dlatent", "result")


class TFRecordError(PortError):
    """A TFRecord or Example that is truncated, corrupted or not shaped as the release's."""


# --------------------------------------------------------------------------- CRC-32C


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as TFRecord uses it (init and final xor 0xFFFFFFFF)."""
    return google_crc32c.value(bytes(data))


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


# --------------------------------------------------------------------------- Example protobuf


def _message_classes() -> dict[str, type]:
    """tf.train.Example's classes, from a descriptor built here and a private pool."""
    F = descriptor_pb2.FieldDescriptorProto
    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL

    def field(msg, name, number, kind, label=opt, type_name=None, packed=False, oneof=None):
        f = msg.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            f.type_name = type_name
        if packed:
            f.options.packed = True
        if oneof is not None:
            f.oneof_index = oneof

    fd = descriptor_pb2.FileDescriptorProto(name="attfind/tensorflow_example.proto",
                                            package="tensorflow", syntax="proto3")
    field(fd.message_type.add(name="BytesList"), "value", 1, F.TYPE_BYTES, rep)
    field(fd.message_type.add(name="FloatList"), "value", 1, F.TYPE_FLOAT, rep, packed=True)
    field(fd.message_type.add(name="Int64List"), "value", 1, F.TYPE_INT64, rep, packed=True)
    feature = fd.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, (name, kind) in enumerate((("bytes_list", "BytesList"), ("float_list", "FloatList"),
                                           ("int64_list", "Int64List")), 1):
        field(feature, name, number, F.TYPE_MESSAGE, type_name=f".tensorflow.{kind}", oneof=0)
    features = fd.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")  # map<string, Feature> feature = 1
    entry.options.map_entry = True
    field(entry, "key", 1, F.TYPE_STRING)
    field(entry, "value", 2, F.TYPE_MESSAGE, type_name=".tensorflow.Feature")
    field(features, "feature", 1, F.TYPE_MESSAGE, rep, type_name=".tensorflow.Features.FeatureEntry")
    field(fd.message_type.add(name="Example"), "features", 1, F.TYPE_MESSAGE, type_name=".tensorflow.Features")
    # The same wire format as Example, with Features kept as bytes: writing goes through it so
    # that map entries stay in the caller's order (the runtime orders a map by hash or by key).
    raw = descriptor_pb2.FileDescriptorProto(name="attfind/raw_example.proto", package="attfind_tfrecord",
                                             syntax="proto3")
    field(raw.message_type.add(name="RawExample"), "features", 1, F.TYPE_BYTES)

    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    pool.Add(raw)
    names = ("tensorflow.Example", "tensorflow.Features", "attfind_tfrecord.RawExample")
    return {n.split(".")[1]: message_factory.GetMessageClass(pool.FindMessageTypeByName(n)) for n in names}


_CLASSES = _message_classes()
_Example, _Features, _RawExample = (_CLASSES[n] for n in ("Example", "Features", "RawExample"))


def decode_example(data: bytes) -> dict[str, Any]:
    """A serialised ``tf.train.Example`` -> ``{name: value}``: float lists as float32 arrays,
    int64 lists as int64 arrays, bytes lists as lists of bytes, an empty Feature as None."""
    ex = _Example()
    try:
        ex.ParseFromString(bytes(data))
    except DecodeError as e:
        raise TFRecordError(f"not a tf.train.Example: {e}") from None
    out: dict[str, Any] = {}
    for k, f in ex.features.feature.items():
        kind = f.WhichOneof("kind")
        if kind == "float_list":
            out[k] = np.array(f.float_list.value, dtype=np.float32)
        elif kind == "int64_list":
            out[k] = np.array(f.int64_list.value, dtype=np.int64)
        elif kind == "bytes_list":
            out[k] = list(f.bytes_list.value)
        else:
            out[k] = None  # a Feature with no kind set
    return out


def _is_bytes_list(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, bytes) for v in value)


def _set_feature(f, value) -> None:
    if _is_bytes_list(value):
        f.bytes_list.value.extend(value)
        return
    arr = np.asarray(value).reshape(-1)
    if np.issubdtype(arr.dtype, np.integer):
        f.int64_list.SetInParent()  # set even when empty
        f.int64_list.value.extend(arr.astype(np.int64).tolist())  # uint64 wraps, as on the wire
    else:
        f.float_list.SetInParent()
        f.float_list.value.extend(np.ascontiguousarray(arr, dtype="<f4").tolist())


def encode_example(features: Mapping[str, Any]) -> bytes:
    """``{name: values}`` -> a serialised ``tf.train.Example`` (deterministic: map entries in the
    given order). Float arrays become packed float lists (cast to float32), integer arrays int64
    lists, lists of bytes bytes lists."""
    entries = []
    for k, v in features.items():
        one = _Features()  # a one-entry map serialises as that entry; concatenating them is the map
        _set_feature(one.feature[k], v)
        entries.append(one.SerializeToString())
    if not entries:
        ex = _Example()
        ex.features.SetInParent()
        return ex.SerializeToString()
    return _RawExample(features=b"".join(entries)).SerializeToString()


# --------------------------------------------------------------------------- the release's file


def write_examples(path, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write one ``tf.train.Example`` per record, atomically. A record maps feature names to
    values; for the release's format: ``base_prob [C]``, ``dlatent [D]`` and ``result``, either
    flat or ``[S, 2, C]`` (flattened in C order). Values are stored as float32 lists."""
    return write_records(path, (encode_example(r) for r in records))


def write_effects(path, base_prob, dlatents, effects) -> Path:
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
                                 for i in range(n)))


def read_examples(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``examples_1.tfrecord`` -> ``(base_prob [N, C], dlatents [N, D], effects [N, 2, S, C])``,
    float32. ``C`` comes from ``base_prob``; ``S = len(result) / (2 C)``; every image must agree.
    ``effects[n, d, j, c]`` = ``result_n.reshape(S, 2, C)[j, d, c]``."""
    path = Path(path)
    base, lat, res = [], [], []
    shapes = None
    for i, data in enumerate(iter_records(path)):
        try:
            ex = decode_example(data)
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
