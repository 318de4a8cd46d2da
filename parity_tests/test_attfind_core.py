"""The framework-free AttFind core (attfind.selection), the dlatents.pkl reader and the
examples_1.tfrecord reader/writer, on small synthetic arrays with hand-checked answers."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attfind import selection as sel
from attfind import sufficiency
from models_pt.stylespace import StyleSpace
from attfind.tfrecord import (TFRecordError, crc32c, decode_example, encode_example,
                              iter_records, masked_crc32c, read_examples, write_effects,
                              write_examples, write_records)



# --------------------------------------------------------------------------- helpers


def noise_effects(n=10, s=20, c=2, seed=0, scale=0.01):
    return (np.random.default_rng(seed).normal(size=(n, 2, s, c)) * scale).astype(np.float32)


def only_d0_gains(gains, c=2, target=0):
    """gains [N, S] -> effects [N, 2, S, C] with those values at d = 0 for the target class."""
    gains = np.asarray(gains, np.float32)
    e = np.zeros((gains.shape[0], 2, gains.shape[1], c), np.float32)
    e[:, 0, :, target] = gains
    return e


# --------------------------------------------------------------------------- steps 1-4


def test_style_ranges_and_shift_targets():
    styles = np.array([[0.0, 5.0, -1.0], [2.0, 3.0, 1.0], [1.0, 4.0, 0.0]], np.float32)
    lo, hi = sel.style_ranges(styles)
    np.testing.assert_array_equal(lo, [0, 3, -1])
    np.testing.assert_array_equal(hi, [2, 5, 1])
    lo2, hi2 = sel.style_ranges([styles[:1], styles[1:]])  # in batches
    np.testing.assert_array_equal(lo2, lo)
    np.testing.assert_array_equal(hi2, hi)

    space = StyleSpace([3])
    one = space.deltas(styles[2], lo, hi)
    assert one.shape == (2, 3)
    np.testing.assert_array_equal(one, [[-1, -1, -1], [1, 1, 1]])
    many = space.deltas(styles, lo, hi, shift_size=0.5)
    assert many.shape == (3, 2, 3)
    np.testing.assert_array_equal(many[0], 0.5 * (np.stack([lo, hi]) - styles[0]))
    np.testing.assert_array_equal((styles[:, None, :] + space.deltas(styles, lo, hi))[:, 1], np.broadcast_to(hi, (3, 3)))


def test_unstable_filter_boundary_750_vs_751():
    e = np.zeros((4, 2, 400, 2), np.float32)  # 1600 entries per image
    e[0].reshape(-1)[:750] = 3.0       # exactly 750 above 2: kept
    e[1].reshape(-1)[:751] = -3.0      # 751 (negative counts too): zeroed
    e[2].reshape(-1)[:900] = 2.0       # exactly 2 is not "above 2": kept
    e[3].reshape(-1)[:5] = 0.5
    before = e.copy()
    out, unstable = sel.filter_unstable(e)
    assert unstable.tolist() == [False, True, False, False]
    assert not out[1].any()
    np.testing.assert_array_equal(out[[0, 2, 3]], e[[0, 2, 3]])
    np.testing.assert_array_equal(e, before)  # input untouched
    assert sel.filter_unstable(e, max_count=749)[1].tolist() == [True, True, False, False]


def test_non_finite_effects_are_an_error():
    e = noise_effects()
    e[3, 1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"non-finite.*images \[3\]"):
        sel.filter_unstable(e)


def test_split_by_class_ties_go_to_class_0():
    assert sel.split_by_class(np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])).tolist() == [1, 0, 0]


# --------------------------------------------------------------------------- step 5


def test_greedy_finds_a_planted_coordinate_in_the_right_direction():
    e = noise_effects(n=12, s=30)
    e[:, 1, 17, 0] += 0.8   # moving coordinate 17 up raises class 0 on every image
    e[:, 0, 17, 0] -= 0.8
    picks = sel.greedy_select(e, np.ones(12, bool), target_class=0, num_indices=3)
    assert picks[0] == (1, 17)
    assert len(picks) == 3 and len(set(picks)) == 3


def test_greedy_coverage_an_image_at_the_bound_stops_contributing():
    # gains at d = 0 for coordinates 0..2; image A reaches coverage 1.0 with the first pick
    gains = [[1.0, 0.9, 0.0],   # A
             [0.5, 0.0, 0.3],   # B
             [0.5, 0.0, 0.3]]   # C
    e = only_d0_gains(gains)
    run = sel.greedy_run(e, np.ones(3, bool), 0, num_indices=8, max_image_effect=1.0)
    # pick 1: means (2/3, 0.3, 0.2) -> j = 0; A is covered (1.0, not below 1.0);
    # pick 2 over B, C: (-, 0, 0.3) -> j = 2, although j = 1 has the larger mean over all three
    assert run.picks == [(0, 0), (0, 2)]
    assert run.stop == "no_gain"  # B, C at 0.8: nothing left raises them
    np.testing.assert_allclose(run.gains, [2 / 3, 0.3])
    # without the bound, image A keeps counting and coordinate 1 comes second
    assert sel.greedy_select(e, np.ones(3, bool), 0, max_image_effect=100.0)[:2] == [(0, 0), (0, 1)]


def test_greedy_stops_when_no_image_is_left_below_the_bound():
    # the notebook would take the mean over no images (NaN) and argmax over NaNs
    e = only_d0_gains([[1.5, 0.2, 0.1], [1.0, 0.3, 0.1]])
    run = sel.greedy_run(e, np.ones(2, bool), 0, num_indices=8)
    assert run.picks == [(0, 0)] and run.stop == "no_image_left"
    empty = sel.greedy_run(e, np.zeros(2, bool), 0)
    assert empty.picks == [] and empty.stop == "no_images"


def test_greedy_stops_when_every_remaining_gain_is_zero():
    e = -np.abs(noise_effects(n=5, s=10))  # nothing raises class 0
    run = sel.greedy_run(e, np.ones(5, bool), 0)
    assert run.picks == [] and run.stop == "no_gain"


def test_greedy_ties_take_the_lowest_flat_index():
    e = np.zeros((2, 2, 5, 2), np.float32)
    e[:, 1, 1, 1] = 0.4   # k = 6
    e[:, 0, 3, 1] = 0.4   # k = 3: same gain, lower flat index
    e[:, 1, 0, 1] = 0.2
    run = sel.greedy_run(e, np.ones(2, bool), 1, num_indices=2, max_image_effect=10)
    assert run.picks == [(0, 3), (1, 1)]
    assert run.near_ties(1e-9) == [0]  # step 0 won by index, not by gain; step 1 by 0.4 vs 0.2
    assert run.runner_ups[0] == (1, 1) and run.runner_up_gains[1] == pytest.approx(0.2)


def test_greedy_discriminator_filter_skips_rejected_candidates():
    e = noise_effects(n=8, s=12)
    e[:, 1, 4, 0] += 1.0    # best
    e[:, 0, 9, 0] += 0.3    # second best
    asked = []

    def fake_disc(d, j):
        asked.append((d, j))
        return (d, j) == (1, 4)  # the discriminator dislikes the best candidate
    run = sel.greedy_run(e, np.ones(8, bool), 0, num_indices=2, max_image_effect=10, reject=fake_disc)
    assert run.picks[0] == (0, 9) and (1, 4) not in run.picks
    assert run.rejected == [(1, 4)]
    assert asked[:2] == [(1, 4), (0, 9)] and len(asked) == 3  # asked only about would-be picks
    assert sel.greedy_select(e, np.ones(8, bool), 0, num_indices=2, max_image_effect=10,
                             reject=lambda d, j: True) == []


# --------------------------------------------------------------------------- step 6 and attfind


def hand_effects():
    """N = 2, S = 3, C = 2 with values chosen for hand computation."""
    e = np.zeros((2, 2, 3, 2), np.float32)
    # effect[n, d, j, c]
    e[:, 1, 0, 0] = [0.5, 0.3]     # (1, 0): class-0 mean 0.4
    e[:, 0, 0, 1] = [0.2, 0.0]     #         class-1 mean of (0, 0) 0.1  -> score 0.5
    e[:, 0, 2, 0] = [0.1, 0.1]     # (0, 2): 0.1
    e[:, 1, 2, 1] = [0.3, 0.1]     #         + 0.2                       -> score 0.3
    e[:, 1, 1, 0] = [0.6, 0.4]     # (1, 1): 0.5
    e[:, 0, 1, 1] = [0.5, 0.3]     #         + 0.4                       -> score 0.9
    e[:, 0, 2, 1] = [9.0, 9.0]     # never scored: (1, 2) from class 1 is dropped (coordinate 2 taken)
    return e


def test_combine_classes_order_and_scores_by_hand():
    e = hand_effects()
    picks0 = [(1, 0), (0, 2)]
    picks1 = [(1, 2), (0, 1)]  # (1, 2): coordinate 2 is among class 0's -> dropped; (0, 1) -> flipped (1, 1)
    out = sel.combine_classes(picks0, picks1, e)
    assert [(a.direction, a.coordinate) for a in out] == [(1, 1), (1, 0), (0, 2)]
    np.testing.assert_allclose([a.score for a in out], [0.9, 0.5, 0.3], rtol=1e-6)
    d, j, score = out[0]  # plain (d, j, score) tuples
    assert (d, j) == (1, 1)


def test_combine_classes_ties_keep_candidate_order():
    e = np.zeros((1, 2, 4, 2), np.float32)  # every score 0
    out = sel.combine_classes([(0, 3), (1, 2)], [(1, 0), (0, 3), (0, 1)], e)
    # flipped class-1 picks with a new coordinate, in pick order, then the class-0 picks
    assert [(a.direction, a.coordinate) for a in out] == [(0, 0), (1, 1), (0, 3), (1, 2)]


def planted_release(n=20, s=16, seed=1):
    """Class-1 images respond to coordinate 5 going up (towards class 0); class-0 images to
    coordinate 9 going down (towards class 1). A decoy that raises class 0 only on class-0 images
    must not be picked for class 0 (greedy for class c runs over the *other* class)."""
    rng = np.random.default_rng(seed)
    e = (rng.normal(size=(n, 2, s, 2)) * 0.01).astype(np.float32)
    logits = np.zeros((n, 2), np.float32)
    cls1 = np.arange(n) % 2 == 1
    logits[cls1, 1] = 2.0
    logits[~cls1, 0] = 2.0
    e[cls1, 1, 5, 0] += 0.9
    e[cls1, 1, 5, 1] -= 0.9
    e[~cls1, 0, 9, 1] += 0.6
    e[~cls1, 0, 9, 0] -= 0.6
    e[~cls1, 1, 3, 0] += 2.5    # decoy: raises class 0 on images that already are class 0
    return e, logits, cls1


def test_attfind_targets_each_class_over_the_other_class_images():
    e, logits, cls1 = planted_release()
    res = sel.attfind(e, logits, num_indices=4)
    assert res.labels.tolist() == cls1.astype(int).tolist()
    assert res.picks[0][0] == (1, 5) and (1, 3) not in res.picks[0]
    assert res.picks[1][0] == (0, 9)
    assert res.runs[0].num_images == cls1.sum() and res.runs[1].num_images == (~cls1).sum()
    assert res.ranking[0] == (1, 5) and res.origins[0] == 0
    assert (1, 9) in res.ranking and res.origins[res.ranking.index((1, 9))] == 1  # flipped class-1 pick
    assert not res.unstable.any()


def test_attfind_unstable_images_stay_in_their_class_with_zero_effects():
    e, logits, cls1 = planted_release()
    e[0].reshape(-1)[:41] = 5.0  # image 0 (class 0) is unstable (64 entries here, so a lower bound)
    res = sel.attfind(e, logits, num_indices=2, unstable_max_count=40)
    assert res.unstable.tolist() == [True] + [False] * (len(e) - 1)
    assert res.picks[1][0] == (0, 9)


def test_attfind_result_json_round_trip():
    e, logits, _ = planted_release()
    res = sel.attfind(e, logits, num_indices=3, pick_filter=sel.FixedRejection(lambda d, j: j == 7))
    text = res.to_json()
    d = json.loads(text)
    assert d["format"] == sel.RESULT_FORMAT and d["params"]["pick_filter"] is True
    assert d["attributes"][0] == {"direction": 1, "coordinate": 5, "score": res.attributes[0].score, "origin": 0}
    back = sel.AttFindResult.from_json(text)
    assert back.attributes == res.attributes and back.picks == res.picks and back.origins == res.origins
    assert back.runs[0] == res.runs[0] and back.runs[1] == res.runs[1]
    np.testing.assert_array_equal(back.labels, res.labels)
    np.testing.assert_array_equal(back.unstable, res.unstable)
    with pytest.raises(ValueError, match="not an AttFind result"):
        sel.AttFindResult.from_dict({"format": "other"})


def test_attfind_needs_two_classes_and_matching_logits():
    with pytest.raises(ValueError, match="2 classes"):
        sel.attfind(np.zeros((3, 2, 4, 3), np.float32), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="base_logits"):
        sel.attfind(np.zeros((3, 2, 4, 2), np.float32), np.zeros((4, 2)))


# --------------------------------------------------------------------------- variants and measures


def test_independent_ranking():
    e = np.zeros((2, 5, 2), np.float32)
    e[1, 3, 0] = 0.9
    e[0, 3, 0] = 0.8    # same coordinate, other direction: left out by default
    e[0, 1, 0] = 0.5
    e[1, 4, 0] = 0.5    # tie with (0, 1): the lower flat index (0 * 5 + 1) first
    e[1, 2, 0] = -0.3
    e[0, 0, 1] = 5.0    # other class: irrelevant
    assert sel.independent_ranking(e, 0, 3) == [(1, 3, pytest.approx(0.9)), (0, 1, 0.5), (1, 4, 0.5)]
    assert [x[:2] for x in sel.independent_ranking(e, 0, 2, unique_coordinates=False)] == [(1, 3), (0, 3)]
    assert len(sel.independent_ranking(e, 0, 10, positive_only=True)) == 3
    assert len(sel.independent_ranking(e, 0, 10)) == 5  # every coordinate once


def test_sufficiency_plan_directions_and_fraction():
    labels = np.array([1, 0, 1])
    ranked = [sel.Attribute(1, 5, 0.9), sel.Attribute(0, 2, 0.5), sel.Attribute(0, 5, 0.4), sel.Attribute(1, 7, 0.1)]
    plan = sufficiency.sufficiency_plan(labels, ranked, k=3)
    assert plan.edits(0) == [(1, 5), (0, 2), (1, 7)]    # class 1: as ranked; (0, 5) repeats coordinate 5
    assert plan.edits(1) == [(0, 5), (1, 2), (0, 7)]    # class 0: flipped
    assert plan.counts.tolist() == [3, 3, 3] and plan.directions.shape == (3, 3)
    assert sufficiency.sufficiency_plan(labels, ranked, k=10).counts.tolist() == [3, 3, 3]  # 3 distinct coordinates

    styles = np.arange(3 * 8, dtype=np.float32).reshape(3, 8)
    lo, hi = styles.min(0) - 1, styles.max(0) + 1
    deltas = plan.deltas(StyleSpace([8]), styles, lo, hi)
    moved = styles + deltas
    assert moved[0, 5] == hi[5] and moved[0, 2] == lo[2] and moved[0, 7] == hi[7]
    assert moved[1, 5] == lo[5] and moved[1, 2] == hi[2] and moved[1, 7] == lo[7]
    untouched = np.ones((3, 8), bool)
    untouched[:, [2, 5, 7]] = False
    assert not deltas[untouched].any()

    before = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    after = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 1.0], [0.0, 1.0]])
    assert sufficiency.sufficiency_fraction(before, after) == 0.75
    assert sufficiency.sufficiency_fraction(before, after, mask=[True, False, True, False]) == 0.5
    with pytest.raises(ValueError):
        sufficiency.sufficiency_fraction(before[:0], after[:0])


def test_independent_sufficiency_plan_aims_at_the_other_class():
    e = np.zeros((2, 2, 4, 2), np.float32)
    e[0, 1, 2, 1] = 0.7   # image 0 is class 0: its own best move towards class 1
    e[1, 0, 3, 0] = 0.4   # image 1 is class 1: towards class 0
    plan = sufficiency.independent_sufficiency_plan(e, [0, 1], k=1)
    assert plan.edits(0) == [(1, 2)] and plan.edits(1) == [(0, 3)]


def test_near_ties():
    ranked = [(1, 0, 3.0), (0, 4, 2.9999), (1, 2, 2.0), (0, 1, 1.0), (1, 9, 0.99995)]
    assert sel.near_ties(ranked, 1e-3) == [(ranked[0], ranked[1]), (ranked[3], ranked[4])]
    assert sel.near_ties([{"score": 1.0}, {"score": 1.5}], 0.1) == []
    attrs = [sel.Attribute(0, 1, 0.5), sel.Attribute(1, 1, 0.5)]
    assert sel.near_ties(attrs, 1e-12) == [(attrs[0], attrs[1])]


# --------------------------------------------------------------------------- examples_1.tfrecord


def _crc32c_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert crc32c(b"") == 0
    rng = np.random.default_rng(0)
    for n in (1, 3, 4095, 4096, 4097, 9999):  # google-crc32c and a bit-by-bit reference agree
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(data) == _crc32c_bitwise(data), n
    c = crc32c(b"abc")
    assert masked_crc32c(b"abc") == (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def random_release(n=3, s=7, c=2, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, c)).astype(np.float32), rng.normal(size=(n, d)).astype(np.float32),
            rng.normal(size=(n, 2, s, c)).astype(np.float32))


def test_effects_round_trip_and_layout(tmp_path):
    base, lat, eff = random_release()
    path = write_effects(tmp_path / "examples_1.tfrecord", base, lat, eff)
    b2, l2, e2 = read_examples(path)
    np.testing.assert_array_equal(b2, base)
    np.testing.assert_array_equal(l2, lat)
    np.testing.assert_array_equal(e2, eff)
    # on disk, 'result' is [S, 2, C] per image, flattened
    first = decode_example(next(iter_records(path)))
    np.testing.assert_array_equal(first["result"].reshape(7, 2, 2)[4, 1], eff[0, 1, 4])
    assert [p.name for p in tmp_path.iterdir()] == ["examples_1.tfrecord"]
    # per-record writing with 'result' as [S, 2, C] gives the same bytes
    records = [{"base_prob": base[i], "dlatent": lat[i], "result": eff[i].transpose(1, 0, 2)} for i in range(3)]
    assert write_examples(tmp_path / "again.tfrecord", records).read_bytes() == path.read_bytes()


def test_example_codec_other_kinds():
    data = encode_example({"f": np.array([1.5, -2.0], np.float32), "i": np.array([3, -1, 2**40]),
                           "b": [b"x", b""], "empty": np.zeros(0, np.float32)})
    out = decode_example(data)
    np.testing.assert_array_equal(out["f"], [1.5, -2.0])
    np.testing.assert_array_equal(out["i"], [3, -1, 2**40])
    assert out["b"] == [b"x", b""] and out["empty"].shape == (0,)


def test_truncated_and_corrupted_tfrecords(tmp_path):
    base, lat, eff = random_release()
    good = write_effects(tmp_path / "good.tfrecord", base, lat, eff).read_bytes()
    rec = len(good) // 3
    cases = {
        "cut_in_header.tfrecord": (good[:rec + 5], r"record 1 \(byte \d+\): truncated: 5 of 12 header bytes"),
        "cut_in_data.tfrecord": (good[:2 * rec + 40], r"record 2 \(byte \d+\): truncated"),
        "bad_data.tfrecord": (good[:rec + 20] + bytes([good[rec + 20] ^ 1]) + good[rec + 21:],
                              r"record 1 \(byte \d+\): corrupted: the data CRC"),
        "bad_length.tfrecord": (good[:rec] + struct.pack("<Q", 10**12) + good[rec + 8:],
                                r"record 1 \(byte \d+\): corrupted: the length field's CRC"),
        "empty.tfrecord": (b"", r"no records"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(TFRecordError, match=rf"{name}: {message}"):
            read_examples(tmp_path / name)


def test_wrong_example_content_is_named(tmp_path):
    path = write_records(tmp_path / "x.tfrecord", [encode_example({"base_prob": [0.1, 0.9], "dlatent": [1.0],
                                                                   "result": [0.0] * 8}),
                                                   encode_example({"base_prob": [0.1, 0.9], "dlatent": [1.0]})])
    with pytest.raises(TFRecordError, match=r"x\.tfrecord: record 1: feature 'result' should be a float list, it is missing"):
        read_examples(path)
    write_records(path, [encode_example({"base_prob": [0.1, 0.9], "dlatent": [1.0], "result": [0.0] * 6})])
    with pytest.raises(TFRecordError, match=r"record 0: 'result' has 6 values, not a multiple of 2 x 2"):
        read_examples(path)
    write_records(path, [b"\xff\xff\xff"])
    with pytest.raises(TFRecordError, match=r"record 0: not a tf.train.Example"):
        read_examples(path)


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "examples_1.tfrecord"
    write_records(path, [b"old"])

    def payloads():
        yield b"new"
        raise RuntimeError("interrupted")
    with pytest.raises(RuntimeError):
        write_records(path, payloads())
    assert list(iter_records(path)) == [b"old"]
    assert [p.name for p in tmp_path.iterdir()] == ["examples_1.tfrecord"]


def test_tensorflow_reads_the_pure_writer(tmp_path, tf):
    base, lat, eff = random_release(n=4, s=6)
    path = write_effects(tmp_path / "examples_1.tfrecord", base, lat, eff)
    spec = {"base_prob": tf.io.FixedLenFeature([2], tf.float32), "dlatent": tf.io.FixedLenFeature([5], tf.float32),
            "result": tf.io.FixedLenFeature([6 * 2 * 2], tf.float32)}
    got = [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(str(path))]
    assert len(got) == 4
    for i, ex in enumerate(got):
        np.testing.assert_array_equal(ex["base_prob"].numpy(), base[i])
        np.testing.assert_array_equal(ex["dlatent"].numpy(), lat[i])
        np.testing.assert_array_equal(ex["result"].numpy().reshape(6, 2, 2).transpose(1, 0, 2), eff[i])


def test_pure_reader_reads_tensorflows_writer(tmp_path, tf):
    from tensorflow.core.example import example_pb2
    base, lat, eff = random_release(n=3, s=1500, seed=2)  # records above the NumPy CRC threshold
    path = tmp_path / "examples_1.tfrecord"
    serialised = []
    with tf.io.TFRecordWriter(str(path)) as w:
        for i in range(3):
            ex = example_pb2.Example()
            ex.features.feature["base_prob"].float_list.value.extend(base[i].tolist())
            ex.features.feature["dlatent"].float_list.value.extend(lat[i].tolist())
            ex.features.feature["result"].float_list.value.extend(eff[i].transpose(1, 0, 2).reshape(-1).tolist())
            serialised.append(ex.SerializeToString())
            w.write(serialised[-1])
    assert list(iter_records(path)) == serialised
    for a, want in zip(read_examples(path), (base, lat, eff)):
        np.testing.assert_array_equal(a, want)
    # and TensorFlow's protos decode what this module's encoder wrote
    other = write_effects(tmp_path / "ours.tfrecord", base, lat, eff)
    for data, i in zip(iter_records(other), range(3)):
        ex = example_pb2.Example.FromString(data)
        np.testing.assert_array_equal(np.asarray(ex.features.feature["base_prob"].float_list.value, np.float32), base[i])
        np.testing.assert_array_equal(np.asarray(ex.features.feature["dlatent"].float_list.value, np.float32), lat[i])


def test_the_readers_and_the_core_need_neither_tensorflow_nor_torch(tmp_path):
    base, lat, eff = random_release()
    path = write_effects(tmp_path / "examples_1.tfrecord", base, lat, eff)
    code = ("import sys; import attfind.selection, models_pt.dlatents, porting.dlatents, attfind.tfrecord as t; "
            f"b, l, e = t.read_examples({str(path)!r}); assert e.shape == (3, 2, 7, 2); "
            "bad = [m for m in ('tensorflow', 'torch') if m in sys.modules]; assert not bad, bad")
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
