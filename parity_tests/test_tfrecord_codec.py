"""attfind.tfrecord's Example codec (protobuf runtime, private descriptor pool) against
TensorFlow's own writer, parser and generated ``example_pb2``; packed and unpacked lists; both
import orders of TensorFlow and the module in one process."""
from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attfind.tfrecord import decode_example, encode_example, iter_records, read_examples, write_effects

ROOT = Path(__file__).resolve().parents[1]


def _values():
    f32 = np.array([1.5, -2.0, 0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 3.4028235e38, 0.1], np.float32)
    i64 = np.array([0, 1, -1, 127, 128, -128, 2**31, -2**31, 2**40, 2**63 - 1, -2**63], np.int64)
    return f32, i64


def _same(a, b):
    assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (a, b)


def test_reads_tensorflows_writer(tmp_path, tf):
    from tensorflow.core.example import example_pb2
    f32, i64 = _values()
    ex = example_pb2.Example()
    feat = ex.features.feature
    feat["f"].float_list.value.extend(f32.tolist())
    feat["i"].int64_list.value.extend(i64.tolist())
    feat["b"].bytes_list.value.extend([b"x", b"", b"\x00\xff"])
    feat["empty_f"].float_list.SetInParent()
    feat["empty_i"].int64_list.SetInParent()
    feat["empty_b"].bytes_list.SetInParent()
    feat["no_kind"].SetInParent()
    path = tmp_path / "tf.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        w.write(ex.SerializeToString())
        w.write(b"")
    records = list(iter_records(path))
    assert records == [ex.SerializeToString(), b""]
    out = decode_example(records[0])
    assert sorted(out) == sorted(feat)
    _same(out["f"], f32)
    _same(out["i"], i64)
    assert out["b"] == [b"x", b"", b"\x00\xff"] and out["empty_b"] == []
    _same(out["empty_f"], np.zeros(0, np.float32))
    _same(out["empty_i"], np.zeros(0, np.int64))
    assert out["no_kind"] is None
    assert decode_example(records[1]) == {}


def test_tensorflow_reads_our_writer(tmp_path, tf):
    from tensorflow.core.example import example_pb2
    f32, i64 = _values()
    features = {"b": [b"x", b""], "empty_f": np.zeros(0, np.float32), "empty_i": np.zeros(0, np.int64),
                "f": f32, "i": i64}
    data = encode_example(features)
    ex = example_pb2.Example.FromString(data)
    assert ex.SerializeToString(deterministic=True) == data  # keys given in sorted order
    _same(np.array(ex.features.feature["f"].float_list.value, np.float32), f32)
    assert list(ex.features.feature["i"].int64_list.value) == i64.tolist()
    assert ex.features.feature["empty_f"].WhichOneof("kind") == "float_list"
    assert ex.features.feature["empty_i"].WhichOneof("kind") == "int64_list"
    # TensorFlow's C++ parser, on a file of the release's shape
    rng = np.random.default_rng(1)
    base, lat = rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=(3, 514)).astype(np.float32)
    eff = rng.normal(size=(3, 2, 1500, 2)).astype(np.float32)
    path = write_effects(tmp_path / "examples_1.tfrecord", base, lat, eff)
    spec = {"base_prob": tf.io.FixedLenFeature([2], tf.float32), "dlatent": tf.io.FixedLenFeature([514], tf.float32),
            "result": tf.io.FixedLenFeature([1500 * 2 * 2], tf.float32)}
    got = [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(str(path))]
    for i, e in enumerate(got):
        _same(e["base_prob"].numpy(), base[i])
        _same(e["dlatent"].numpy(), lat[i])
        _same(e["result"].numpy().reshape(1500, 2, 2).transpose(1, 0, 2), eff[i])
    for a, want in zip(read_examples(path), (base, lat, eff)):
        _same(a, want)


def test_map_entries_keep_the_given_order():
    keys = ["result", "dlatent", "base_prob", "zeta", "alpha"]  # the runtime alone orders by hash
    data = encode_example({k: [float(i)] for i, k in enumerate(keys)})
    positions = [data.find(k.encode()) for k in keys]
    assert positions == sorted(positions)
    assert {k: v.tolist() for k, v in decode_example(data).items()} == {k: [float(i)] for i, k in enumerate(keys)}


# Hand-built wire bytes, for the unpacked encoding that other writers may use.
def _varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _len(field, payload):
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _example(key, feature_field, list_payload):
    return _len(1, _len(1, _len(1, key.encode()) + _len(2, _len(feature_field, list_payload))))


def test_packed_and_unpacked_lists_both_parse(tf):
    f32, i64 = _values()
    unpacked_f = b"".join(b"\x0d" + struct.pack("<f", x) for x in f32)  # field 1, wire type 5
    packed_f = _len(1, f32.astype("<f4").tobytes())
    unpacked_i = b"".join(b"\x08" + _varint(int(x) & (2**64 - 1)) for x in i64)  # field 1, wire type 0
    packed_i = _len(1, b"".join(_varint(int(x) & (2**64 - 1)) for x in i64))
    mixed_f = unpacked_f[:10] + _len(1, f32[2:].astype("<f4").tobytes())  # valid protobuf, not for TF's parser
    _same(decode_example(_example("f", 2, mixed_f))["f"], f32)
    for payload in (unpacked_f, packed_f):
        data = _example("f", 2, payload)
        _same(decode_example(data)["f"], f32)
        parsed = tf.io.parse_single_example(data, {"f": tf.io.FixedLenFeature([len(f32)], tf.float32)})
        _same(parsed["f"].numpy(), f32)
    for payload in (unpacked_i, packed_i):
        data = _example("i", 3, payload)
        _same(decode_example(data)["i"], i64)
        parsed = tf.io.parse_single_example(data, {"i": tf.io.FixedLenFeature([len(i64)], tf.int64)})
        _same(parsed["i"].numpy(), i64)
    assert encode_example({"f": f32}) == _example("f", 2, packed_f)
    assert encode_example({"i": i64}) == _example("i", 3, packed_i)


_BOTH = """
import sys
{first}
{second}
import numpy as np
from tensorflow.core.example import example_pb2
from attfind import tfrecord as t
data = t.encode_example({{"f": np.array([1.5, -2], np.float32), "i": np.array([-3, 4])}})
ex = example_pb2.Example.FromString(data)
assert list(ex.features.feature["f"].float_list.value) == [1.5, -2.0]
assert list(ex.features.feature["i"].int64_list.value) == [-3, 4]
out = t.decode_example(ex.SerializeToString())
assert out["f"].tolist() == [1.5, -2.0] and out["i"].tolist() == [-3, 4]
assert t._Example.DESCRIPTOR.full_name == example_pb2.Example.DESCRIPTOR.full_name == "tensorflow.Example"
assert t._Example.DESCRIPTOR is not example_pb2.Example.DESCRIPTOR
"""


@pytest.mark.parametrize("tf_first", [True, False], ids=["tensorflow_first", "tfrecord_first"])
def test_no_clash_with_tensorflows_registration(tf, tf_first):
    imports = ["import tensorflow", "import attfind.tfrecord"]
    first, second = imports if tf_first else imports[::-1]
    subprocess.run([sys.executable, "-c", _BOTH.format(first=first, second=second)], cwd=ROOT, check=True)
