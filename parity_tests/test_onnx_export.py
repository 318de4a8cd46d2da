"""ONNX export: every model of a converted release passes onnx.checker and matches PyTorch and TF
in onnxruntime; StyleSpace edits work through the synthesis' inputs; a corrupted file fails."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import models_pt
from porting.onnx_export import (OnnxExportError, export, onnx_feed, reference_inputs, run_onnx,
                                 verify_onnx)
from porting.kinds.generator import synthesis_input_names
from conftest import run_cli

ONNX_TOL = 1e-4   # direct comparisons of ONNX and PyTorch outputs outside the verdict


@pytest.fixture(scope="module")
def exported(attfind_release, tmp_path_factory):
    ref, weights = attfind_release
    out = tmp_path_factory.mktemp("onnx")
    result = run_cli(*["export-onnx", "--weights", str(weights), "--out", str(out),
                                           "--tf-ckpt", str(ref)])
    return result, out, weights


def test_every_model_exports_checks_and_matches_pytorch_and_tf(exported):
    result, out, _ = exported
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {f"{m}.onnx" for m in ("generator", "encoder", "discriminator",
                                                                       "mobilenet")}
    for p in out.iterdir():
        onnx.checker.check_model(onnx.load(str(p)), full_check=True)
    rows = [line.split() for line in result.output.splitlines() if ".onnx " in line and not line.startswith("wrote")]
    # model, file, inputs..., float64, score, PT score, TF score, vs PyTorch, vs TF, result
    assert len(rows) == 4 and all(r[-1] == "pass" for r in rows), result.output
    assert all(float(r[-7]) <= 1 and float(r[-6]) <= 1 and float(r[-4]) <= 1 for r in rows), result.output


def test_batch_axis_is_dynamic(exported):
    _, out, weights = exported
    clf = models_pt.load(weights)["mobilenet"]
    for n in (1, 5):
        x = reference_inputs(clf, n, 32, seed=4)
        got = run_onnx(out / "mobilenet.onnx", onnx_feed(clf, x))
        assert got.shape == (n, 2)


def test_discriminator_minibatch_groups_follow_the_batch(exported):
    """Minibatch stddev groups min(4, N) images: traced with Python's min() at the export batch,
    the file used groups of N for every N (off by 1.8e-3 at N = 8; 4 images hid it)."""
    from porting.kinds.resnet_d import DISCRIMINATOR

    _, out, weights = exported
    d = models_pt.load(weights)["discriminator"]
    for n in (1, 2, 4, 8, 12):
        x = reference_inputs(d, n, None, seed=5)
        got = run_onnx(out / "discriminator.onnx", onnx_feed(d, x))
        want = list(DISCRIMINATOR.verify.trace(d, x, "float32").values())[-1]
        assert np.abs(got - want).max() <= 1e-5, n


def test_a_stylespace_edit_through_the_onnx_synthesis(exported):
    import torch

    _, out, weights = exported
    g = models_pt.load(weights)["generator"]
    w = reference_inputs(g, 1, None, seed=7)
    feed = onnx_feed(g, w)
    with torch.no_grad():
        conv, rgb = g.style_vectors(torch.from_numpy(w))
        coords, deltas = [3, g.style_sizes[0] + 5, sum(g.style_sizes) - 1], [2.0, -1.5, 1.0]
        want = g.synthesis_edit(conv, rgb, coords, deltas).numpy()
    names = synthesis_input_names(g)
    for k, (j, d) in enumerate(zip(coords, deltas)):
        layer, c = g.split_coordinate(j)
        edited = dict(feed)
        edited[names[layer]] = feed[names[layer]].copy()
        edited[names[layer]][0, c] += d
        got = run_onnx(out / "generator.onnx", edited)[0]
        assert np.abs(got - want[k]).max() <= ONNX_TOL
        assert np.abs(got - run_onnx(out / "generator.onnx", feed)[0]).max() > 100 * ONNX_TOL  # the edit shows


def corrupted_tensor(model, stem: str):
    """The tensor the control corrupts: the generator's largest; the classifier's stem conv, which
    every later layer sees. (Its largest tensor is the last pointwise conv: on a release built from
    Gaussian dlatents, one weight there moved the score only to 7.8, one output channel to 56; the
    stem's first weight moves it to 8,400.)"""
    inits = {t.name: t for t in model.graph.initializer}
    if stem == "generator":
        return max(inits.values(), key=lambda t: int(np.prod(t.dims)))
    return inits[next(n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in inits).input[1]]


@pytest.mark.parametrize("stem", ["mobilenet", "generator"])
def test_negative_control_a_corrupted_onnx_weight_fails(exported, tmp_path, stem):
    _, out, weights = exported
    module = models_pt.load(weights)[stem]
    model = onnx.load(str(out / f"{stem}.onnx"))
    target = corrupted_tensor(model, stem)
    arr = numpy_helper.to_array(target).copy()
    arr.flat[0] += 0.5 * (np.abs(arr).max() + 1)
    target.CopyFrom(numpy_helper.from_array(arr, target.name))
    bad = tmp_path / f"{stem}.onnx"
    onnx.save(model, str(bad))
    check = verify_onnx(bad, module, 32 if stem == "mobilenet" else None, float64=False)
    assert not check.passed and check.score > 100 and check.vs_pytorch > 10 * ONNX_TOL
    assert check.port_score <= 1                     # the same bound passes PyTorch's own float32 run


def test_export_refuses_bad_input(tmp_path, attfind_release):
    _, weights = attfind_release
    r = run_cli(*["export-onnx", "--weights", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert r.exit_code == 2 and "no such file or folder" in r.stderr
    r = run_cli(*["export-onnx", "--weights", str(tmp_path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "manifest.json" in r.stderr
    g = models_pt.load(weights)["generator"]
    with pytest.raises(OnnxExportError, match="inputs"):   # a generator's inputs fed to a classifier file
        x = reference_inputs(g, 1, None)
        run_onnx(export(models_pt.load(weights)["mobilenet"], tmp_path / "m.onnx", 32), onnx_feed(g, x))
