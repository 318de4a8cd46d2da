"""Encoder and discriminator: released names, parity float32/float64, label conditioning,
negative controls."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import models_pt
from models_pt import resnet_d as ptd
from models_tf import resnet_d as tfd
from crosscheck.reference_release import save_savedmodel_zip
from porting.convert import convert_path
from porting.kinds import resnet_d as kinds
from porting.mapping import MappingError
from porting.readers import open_checkpoint
from crosscheck.verify import verify_checkpoint
from porting.kinds.resnet_d import check_images, make_labelled

TOL32 = 1e-4   # a spread the outputs must exceed, and the size a deliberately wrong port must pass


def released_catalogue(kind: str, resolution: int = 256) -> dict:
    """Names and shapes from release-format.md's patterns, ch(r) = min(32768 // r, 512)."""
    ch = lambda r: min(32768 // r, 512)  # noqa: E731
    enc = kind == "encoder"
    scope, p, blk = ("encoder/", "Encoder", "EncoderBlock") if enc else ("discriminator_1/", "", "DiscriminatorBlock")
    cat = {f"{p}FromRGB{resolution}x{resolution}/StyleGAN2Conv2D/weight:0": (1, 1, 3, ch(resolution)),
           f"{p}FromRGB{resolution}x{resolution}/FusedBiasActivation/FromRGBBias:0": (1, ch(resolution), 1, 1)}
    for log_r in range(3, int(math.log2(resolution)) + 1):
        r = 2 ** log_r
        cat[f"{blk}{r}x{r}/Conv0/weight:0"] = (3, 3, ch(r), ch(r))
        cat[f"{blk}{r}x{r}/Conv0Bias/BiasAct0:0"] = (1, ch(r), 1, 1)
        cat[f"{blk}{r}x{r}/Conv1Down/weight:0"] = (3, 3, ch(r), ch(r // 2))
        cat[f"{blk}{r}x{r}/Conv1DownBiasAct/BiasAct1:0"] = (1, ch(r // 2), 1, 1)
        cat[f"{blk}{r}x{r}/Skip/weight:0"] = (1, 1, ch(r), ch(r // 2))
    cat["Conv4x4/weight:0"] = (3, 3, ch(4) + (0 if enc else 1), ch(4))
    cat[f"{p}ConvBiasAct4x4/ConvBiasAct4x4:0"] = (1, ch(4), 1, 1)
    cat[f"{p}Dense4x4/weight:0"] = (ch(4) * 16, ch(4))
    cat[f"{p}DenseBiasAct4x4/DenseBiasAct4x4:0"] = (ch(4),)
    cat["style_gan2_dense/weight:0" if enc else "style_gan2_dense_4/weight:0"] = (ch(4), 512 if enc else 2)
    cat[f"{p}OutputBiasAct/OutputBiasAct:0"] = (512 if enc else 2,)
    return {scope + n: s for n, s in cat.items()}


@pytest.mark.parametrize("kind", ["encoder", "discriminator"])
def test_release_catalogue(kind):
    model = tfd.build(kind, tfd.release_config(kind, 256))
    assert {v.name: tuple(v.shape) for v in model.variables} == released_catalogue(kind)
    config = kinds.infer_config(kind, released_catalogue(kind))
    assert config["resolution"] == 256 and config["channels"][-1] == 128


def test_names_off_the_pattern_fail_clearly():
    cat = {n.replace("EncoderBlock", "EncBlock"): s for n, s in released_catalogue("encoder", 64).items()}
    with pytest.raises(MappingError, match="do not follow the StylEx encoder's pattern"):
        kinds.infer_config("encoder", cat)


@pytest.fixture(scope="module", params=["encoder", "discriminator"])
def converted(request, tmp_path_factory):
    kind = request.param
    model = tfd.seeded(kind, tfd.small_config(kind, 32), seed=2)
    d = tmp_path_factory.mktemp(kind)
    path = save_savedmodel_zip(model, d / f"{kind}.savedmodel.zip", f"{kind}.savedmodel")
    weights, conv = convert_path(path, d / f"{kind}.safetensors")
    assert conv.kind == kind and conv.plan.unused == []
    return kind, model, path, weights


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_parity_per_layer(converted, dtype):
    _, _, path, weights = converted
    with open_checkpoint(path) as ck:
        report = verify_checkpoint(ck, weights, dtype, num_images=4)
    assert report.passed, [(r.name, r.max_abs_diff) for r in report.layers if not r.passed]
    if dtype == "float32":
        assert report.savedmodel["passed"]


def _outputs(kind, model, module, x, labels):
    ref = model(x) if kind == "encoder" else model((x, labels))
    with torch.no_grad():
        args = (torch.from_numpy(x),) if kind == "encoder" else (torch.from_numpy(x), torch.from_numpy(labels))
        got = module(*args)
    return np.asarray(ref), got.numpy()


def test_outputs_not_degenerate_and_labels_condition_the_score(converted):
    kind, model, _, weights = converted
    x, labels = make_labelled({"resolution": 32, "label_size": 2}, 8, 32, 0)
    check_images(x)
    ref, _ = _outputs(kind, model, models_pt.load(weights), x, labels)
    assert float(ref.std(axis=0).mean()) > 1e3 * TOL32, "outputs barely depend on the image"
    if kind == "discriminator":
        flipped, _ = _outputs(kind, model, models_pt.load(weights), x, labels[:, ::-1].copy())
        assert np.abs(flipped - ref).max() > 1e3 * TOL32, "labels do not condition the score"


def _control(converted, monkeypatch, patch) -> float:
    kind, model, _, weights = converted
    x, labels = make_labelled({"resolution": 32, "label_size": 2}, 4, 32, 1)
    patch(monkeypatch)
    ref, got = _outputs(kind, model, models_pt.load(weights), x, labels)
    return float(np.abs(ref - got).max())


def test_control_missing_residual_scale(converted, monkeypatch):
    def patch(mp):
        mp.setattr(ptd.Block, "forward", lambda self, x, fir: self.conv1(self.conv0(x, fir), fir) + self.skip(x, fir))
    assert _control(converted, monkeypatch, patch) > 100 * TOL32


def test_control_wrong_downsampling_padding(converted, monkeypatch):
    real = ptd.fir_filter
    monkeypatch.setattr(ptd, "fir_filter", lambda x, k, p0, p1: real(x, k, p1 + 1, p0 - 1))
    assert _control(converted, monkeypatch, lambda mp: None) > 100 * TOL32


def test_control_minibatch_stddev(converted, monkeypatch):
    kind = converted[0]
    if kind == "encoder":
        pytest.skip("the encoder has no minibatch stddev")
    monkeypatch.setattr(ptd, "minibatch_stddev", lambda x, group: torch.cat([x, torch.zeros_like(x[:, :1])], 1))
    assert _control(converted, monkeypatch, lambda mp: None) > 100 * TOL32
