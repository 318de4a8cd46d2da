"""The StylEx generator: released catalogue, notebook API after a SavedModel round trip, parity
over the 250 real dlatents (float32 and float64), StyleSpace edits, negative controls."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from models_tf import generator as tfg
from porting import mapping
from porting.convert import convert_checkpoint, convert_path, prepare
from porting.kinds import generator as kind
from porting.mapping import MappingError
from porting.readers import Checkpoint, open_checkpoint
from crosscheck.verify import verify_checkpoint
from porting.kinds.generator import check_images, check_inputs, make_inputs
from porting.verdict import judge

TOL32, TOL64 = 1e-4, 1e-9   # direct image comparisons outside verify (its rule: porting.verdict)
STYLE_TOL32 = 1e-5


def released_catalogue(resolution=256, label_size=2, z_dim=512, mapping_layers=8, ch_max=512) -> dict:
    """Every variable name and shape of the released generator, written out from
    release-format.md's name patterns and its channel rule ch(r) = min(32768 // r, 512)."""
    ch = lambda r: min(32768 // r, ch_max)  # noqa: E731
    w = z_dim + label_size
    cat = {}

    def style(scope, c):
        cat[f"generator_style_calculator/{scope}/StyleGAN2Dense/weight:0"] = (w, c)
        cat[f"generator_style_calculator/{scope}/FusedBiasActivation/bias:0"] = (1, c)

    def layer(scope, cin, cout):
        cat[f"generator_synthesis/{scope}/ModulatedConv2D/weight:0"] = (3, 3, cin, cout)
        cat[f"generator_synthesis/{scope}/FusedBiasAct/BiasAct:0"] = (1, cout, 1, 1)
        cat[f"generator_synthesis/{scope}/NoiseStrength:0"] = (1,)

    def torgb(r):
        cat[f"generator_synthesis/ToRGB{r}x{r}/ModulatedConv2D/weight:0"] = (1, 1, ch(r), 3)
        cat[f"generator_synthesis/ToRGB{r}x{r}/FusedBiasActivation/ToRGBBiasAct:0"] = (1, 3, 1, 1)

    style("StyleVectorConst", ch(4))
    style("StyleVectorConstRGB", ch(4))
    cat["generator_synthesis/ConstBlock4x4/Const4x4:0"] = (1, ch(4), 4, 4)
    layer("ConstBlock4x4/GeneratorLayer4x4", ch(4), ch(4))
    torgb(4)
    cat["Noise0:0"] = (1, 1, 4, 4)
    for log_r in range(3, int(math.log2(resolution)) + 1):
        r, i = 2 ** log_r, log_r - 3
        style(f"StyleVector{i}_0", ch(r // 2))
        style(f"StyleVector{i}_1", ch(r))
        style(f"StyleVectorRGB{i}", ch(r))
        layer(f"GeneratorBlock{r}x{r}/Conv0Up", ch(r // 2), ch(r))
        layer(f"GeneratorBlock{r}x{r}/Conv1", ch(r), ch(r))
        torgb(r)
        cat[f"Noise{2 * log_r - 5}:0"] = (1, 1, r, r)
        cat[f"Noise{2 * log_r - 4}:0"] = (1, 1, r, r)
    for i in range(mapping_layers):
        cat[f"generator/generator_mapping/Dense{i}/MappingDense_{i}:0"] = (z_dim, z_dim)
        cat[f"generator/generator_mapping/DenseBiasAct{i}/MappingBias_{i}:0"] = (z_dim,)
    cat["dlatent_avg:0"] = (w,)
    return cat


def checkpoint_of(model, name="generator") -> Checkpoint:
    """The model's variables as the converter sees a checkpoint (no SavedModel round trip)."""
    values = {v.name: v.numpy() for v in model.variables}
    return Checkpoint(Path(f"{name}.savedmodel.zip"), "memory", {n: a.shape for n, a in values.items()},
                      {n: a.dtype.name for n, a in values.items()}, lambda n: values[n])


def to_pt(model, rules=None) -> torch.nn.Module:
    """Convert a TF model's variables into a PyTorch generator through the converter's own path
    (``porting.convert.convert_checkpoint``), optionally with other rules."""
    ck = checkpoint_of(model)
    ck.sha256 = lambda: "in memory"     # no file behind it to hash
    conv = convert_checkpoint(ck, rules=rules)
    assert conv.kind == "generator" and conv.plan.unused == [], conv.plan.unused
    return conv.module()


def pt_images(module, w: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(w).to(next(module.parameters()).dtype)).numpy()


def tf_images(model, w: np.ndarray) -> np.ndarray:
    return model.g_synthesis(model.style_vector_calculator(w.astype(model.dtype))).numpy()


@pytest.fixture(scope="module")
def small():
    """A seeded 64 px generator with few channels, its converted PyTorch port, and 250 dlatents."""
    config = tfg.small_config(64, channel_max=64)
    model = tfg.seeded_generator(config, seed=0)
    pt_config = kind.infer_config({v.name: tuple(v.shape) for v in model.variables})
    w = make_inputs(pt_config, 250, 64, 0)
    return model, to_pt(model), w


@pytest.fixture(scope="module")
def small_zip(small, tmp_path_factory):
    from crosscheck.reference_release import save_savedmodel_zip

    d = tmp_path_factory.mktemp("gen")
    path = save_savedmodel_zip(small[0], d / "generator.savedmodel.zip", "generator.savedmodel")
    weights, _ = convert_path(path, d / "generator.safetensors")
    return path, weights


# ----------------------------------------------------------------- the TF reference

@pytest.fixture(scope="module")
def generator_256():
    """The TF reference generator at the release configuration (256 px, 5760 StyleSpace
    coordinates), seeded; built once for the two tests that need it."""
    return tfg.seeded_generator(tfg.release_config(256), seed=1)


def test_release_catalogue_matches_release_format(generator_256):
    model = generator_256
    got = {v.name: tuple(v.shape) for v in model.variables}
    want = released_catalogue()
    assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []
    wrong = {n: (got[n], want[n]) for n in want if got[n] != want[n]}
    assert not wrong, wrong
    conv_styles = sum(b.dense_bias.weights[0].shape[1] for b in model.style_vector_calculator.style_dense_blocks)
    assert conv_styles == 5760 and len(model.style_vector_calculator.style_dense_blocks) == 13


def test_seeded_images_have_structure(small):
    model, _, w = small
    check_inputs(w)
    images = tf_images(model, w[:32])
    check_images(images)
    for v in model.variables:
        if "NoiseStrength" in v.name or "bias" in v.name.lower():
            assert np.count_nonzero(v.numpy()) == v.numpy().size, f"{v.name} has zeros"


def test_savedmodel_round_trip_keeps_the_notebook_api(small, small_zip):
    """load_model on the unzipped release file; the notebook's calls; a bias assign_add is a
    StyleSpace shift, and equals the PyTorch edit."""
    from crosscheck.tf_side import load_savedmodel

    _, module, w = small
    with open_checkpoint(small_zip[0]) as ck:
        loaded = load_savedmodel(ck)
        batch = w[:3]
        styles = loaded.style_vector_calculator(batch, training=False)
        base = np.asarray(loaded.g_synthesis(styles, training=False))
        assert base.shape == (3, 3, 64, 64)
        layer, channel, delta = 3, 5, 0.7
        bias = loaded.style_vector_calculator.style_dense_blocks[layer].dense_bias.weights[0]
        assert tuple(bias.shape) == (1, styles[0][layer].shape[1])
        bias.assign_add(np.eye(1, bias.shape[1], channel, dtype=np.float32) * delta)
        try:
            shifted = np.asarray(loaded.g_synthesis(loaded.style_vector_calculator(batch, training=False),
                                                    training=False))
        finally:
            bias.assign_add(-np.eye(1, bias.shape[1], channel, dtype=np.float32) * delta)
    assert np.abs(shifted - base).max() > 1e-2, "the style shift changed nothing"
    coord = sum(s.shape[1] for s in styles[0][:layer]) + channel
    with torch.no_grad():
        conv, rgb = module.style_vectors(torch.from_numpy(batch[:1]))
        before = {k: v.clone() for k, v in module.state_dict().items()}
        edited = module.synthesis_edit(conv, rgb, [coord, coord], [delta, 0.0]).numpy()
        assert all(torch.equal(before[k], v) for k, v in module.state_dict().items()), "weights mutated"
    assert np.abs(edited[0] - shifted[0]).max() <= TOL32
    assert np.abs(edited[1] - base[0]).max() <= TOL32


# ----------------------------------------------------------------- config inference and bad input

@pytest.mark.parametrize("resolution,label_size,ch_max", [(32, 2, 512), (64, 2, 512), (256, 2, 512),
                                                          (64, 3, 512), (128, 2, 256)])
def test_config_inferred_from_names_and_shapes(resolution, label_size, ch_max):
    shapes = released_catalogue(resolution, label_size, ch_max=ch_max)
    config = kind.infer_config(shapes)
    assert config["resolution"] == resolution and config["label_size"] == label_size
    assert config["w_dim"] == 512 + label_size and config["mapping_layers"] == 8
    assert config["channels"] == [min(32768 // (4 * 2 ** i), ch_max) for i in range(len(config["channels"]))]
    prep = prepare(list(shapes), shapes, "released catalogue")
    assert prep.kind.name == "generator" and prep.config == config and prep.plan.unused == []
    scoped = {"generator/" + n if not n.startswith("generator/") else n: s for n, s in shapes.items()}
    assert kind.infer_config(scoped) == config, "an extra leading scope must not matter"


def test_names_off_the_pattern_fail_clearly():
    shapes = released_catalogue(64)
    renamed = {n.replace("GeneratorBlock", "GenBlock"): s for n, s in shapes.items()}
    with pytest.raises(MappingError, match="do not follow the StylEx generator's pattern"):
        kind.infer_config(renamed)
    missing = {n: s for n, s in shapes.items() if "GeneratorBlock16x16" not in n}
    with pytest.raises(MappingError, match=r"expected every power of two"):
        kind.infer_config(missing)
    no_noise = {n: s for n, s in shapes.items() if n != "Noise3:0"}
    with pytest.raises(MappingError, match=r"'Noise3:0'.*convs\.b16_conv0\.noise"):
        prepare(list(no_noise), no_noise, "released catalogue")


def test_unseen_label_size_and_resolution_convert(tmp_path):
    config = tfg.small_config(32, channel_max=16, label_size=3)
    model = tfg.seeded_generator(config, seed=5)
    config = kind.infer_config(checkpoint_of(model).shapes)
    assert config["label_size"] == 3 and config["resolution"] == 32 and config["channels"] == [16] * 4
    module = to_pt(model)  # every variable used, every tensor filled
    w = make_inputs(config, 4, 32, 0)
    assert np.abs(tf_images(model, w) - pt_images(module, w)).max() <= TOL32


# ----------------------------------------------------------------- parity

def _float64_twin(model):
    from crosscheck.tf_side import rebuild

    return rebuild("generator", {**model.config}, "float64", {v.name: v.numpy() for v in model.variables})


def _styles_and_images(module, w: np.ndarray) -> dict:
    with torch.no_grad():
        conv, rgb = module.style_vectors(torch.from_numpy(w).to(next(module.parameters()).dtype))
        out = {"images": module.synthesis(conv, rgb).numpy()}
    out.update({f"style{i}": s.numpy() for i, s in enumerate(conv + rgb)})
    return out


def test_parity_float32_all_250_released_dlatents(small):
    """Images and every style vector, judged as verify judges them: exact in float64 against TF's
    float64 run, and the port's float32 error within the rounding model's bound."""
    from porting import rounding

    model, module, w = small
    assert len(w) == 250
    check_inputs(w)
    model64 = _float64_twin(model)
    module64 = to_pt(model).double()
    rows = []
    for chunk in np.array_split(w, 10):
        ref_styles = model.style_vector_calculator(chunk)
        ref = model.g_synthesis(ref_styles).numpy()
        check_images(ref)
        true_styles = model64.style_vector_calculator(chunk.astype(np.float64))
        truth = {"images": model64.g_synthesis(true_styles).numpy()}
        truth.update({f"style{i}": t.numpy() for i, t in enumerate(true_styles[0] + true_styles[1])})
        tf32 = {"images": ref}
        tf32.update({f"style{i}": t.numpy() for i, t in enumerate(ref_styles[0] + ref_styles[1])})
        got32 = _styles_and_images(module, chunk)
        got64, errors = rounding.simulate(lambda: _styles_and_images(module64, chunk.astype(np.float64)), samples=1)
        rows += [judge(k, truth[k], got64=got64[k], got32=got32[k], tf32=tf32[k], model_error=errors[k])
                 for k in truth]
    worst = max(rows, key=lambda r: r.score)
    assert all(r.exact for r in rows), max(rows, key=lambda r: r.score64)
    assert worst.passed, f"{worst.name}: port error {worst.port_error:.2e}, the model's {worst.model_error:.2e}"
    images = max((r for r in rows if r.name == "images"), key=lambda r: r.max_abs_diff)
    print(f"250 dlatents: images |TF-PT| {images.max_abs_diff:.2e} (old bar {TOL32}); worst score {worst.score:.2f}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_per_layer_parity_through_verify(small_zip, dtype):
    with open_checkpoint(small_zip[0]) as ck:
        report = verify_checkpoint(ck, small_zip[1], dtype, num_images=6)
    names = [r.name for r in report.layers]
    assert "style/conv8" in names and "b64/conv0" in names and "b64/rgb" in names and names[-1] == "image"
    assert report.passed, [(r.name, r.max_abs_diff) for r in report.layers if not r.passed][:5]
    if dtype == "float32":
        assert report.savedmodel["passed"], "the rebuilt TF model must equal the SavedModel"


def test_float64_end_to_end(small):
    model, _, w = small
    model64 = _float64_twin(model)
    module64 = to_pt(model).double()
    ref = tf_images(model64, w[:16].astype(np.float64))
    assert np.abs(ref - pt_images(module64, w[:16].astype(np.float64))).max() <= TOL64


def test_parity_256px_release_configuration(generator_256):
    """The release configuration itself (5760 StyleSpace coordinates), on the first 2 real
    dlatents (seeded Gaussian ones in a checkout without them; the 32 px tests run 250; here
    each image costs TF's and the port's runs in both precisions and the rounding model's)."""
    model = generator_256
    module = to_pt(model)
    w = make_inputs(kind.infer_config({v.name: tuple(v.shape) for v in model.variables}), 2, 256, 0)
    ref = tf_images(model, w)
    check_images(ref)
    truth = tf_images(_float64_twin(model), w.astype(np.float64))
    got = pt_images(module, w)
    from porting import rounding

    module64 = to_pt(model).double()
    got64, errors = rounding.simulate(lambda: {"images": pt_images(module64, w.astype(np.float64))}, samples=1)
    row = judge("images", truth, got64=got64["images"], got32=got, tf32=ref, model_error=errors["images"])
    assert row.passed, f"port error {row.port_error:.2e}, the model's {row.model_error:.2e}, score64 {row.score64}"
    from models_pt.inference import fuse_generator, optimize_for_inference  # the inference forms
    fast = optimize_for_inference(module)
    assert judge("images", truth, got32=pt_images(fast, w), model_error=errors["images"]).passed
    for composite in (False, True):
        assert judge("images", truth, got32=pt_images(fuse_generator(module, composite), w),
                     model_error=errors["images"]).passed, f"fused form, composite_up={composite}"
    first = [next(iter(m.convs.values())).weight for m in (module, fast)]
    assert not first[0].is_contiguous(memory_format=torch.channels_last), "the original is left as it was"
    assert first[1].is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        conv, _ = module.style_vectors(torch.from_numpy(w))
    ref_conv = model.style_vector_calculator(w)[0]
    assert sum(c.shape[1] for c in conv) == 5760
    assert max(float(np.abs(a.numpy() - b.numpy()).max()) for a, b in zip(ref_conv, conv)) <= STYLE_TOL32


@pytest.fixture(scope="module")
def small_judged(small):
    """64 of the small generator's dlatents: TF's float64 images, the readable port in float64
    and its rounding-model error, the verdict's inputs for the fused forms."""
    from porting import rounding

    model, _, w = small
    w = w[:64]
    model64 = _float64_twin(model)
    truth = model64.g_synthesis(model64.style_vector_calculator(w.astype(np.float64))).numpy()
    check_images(truth)
    module64 = to_pt(model).double()
    _, errors = rounding.simulate(lambda: {"images": pt_images(module64, w.astype(np.float64))}, samples=1)
    return w, truth, errors["images"], module64


@pytest.mark.parametrize("composite", [False, True], ids=["fused", "composite"])
def test_fused_forms_are_judged_as_the_port(small, small_judged, composite):
    """``fuse_generator``'s forms (fewer passes over the activations; with ``composite_up``, each
    up-sampling conv and its FIR filter as one transposed conv): exact in float64 against TF's
    float64 images, within the rounding model's bound in float32, as verify judges the port."""
    from models_pt.inference import FusedModulatedConv, FusedToRGB, fuse_generator

    _, module, _ = small
    w, truth, model_error, module64 = small_judged
    fused, fused64 = fuse_generator(module, composite), fuse_generator(module64, composite)
    assert sum(type(m) is FusedModulatedConv for m in fused.modules()) == len(module.convs)
    assert sum(type(m) is FusedToRGB for m in fused.modules()) == len(module.torgbs)
    assert type(next(iter(module.convs.values()))) is not FusedModulatedConv, "the original is left as it was"
    row = judge("images", truth, got64=pt_images(fused64, w.astype(np.float64)), got32=pt_images(fused, w),
                model_error=model_error)
    assert row.exact and row.passed, f"score64 {row.score64}, port error {row.port_error:.2e}"


@pytest.mark.parametrize("wrong", ["unflipped composite kernel", "composite kernel one pixel off", "gain left out"])
def test_control_wrong_fused_forms_fail(small, small_judged, monkeypatch, wrong):
    """Easy slips in a fusion: the composite kernel built from the unflipped 3x3 kernel, or one
    pixel off (padded 2 and 4 instead of 3 and 3), and leaky ReLU's sqrt(2) gain left out when it
    is folded into the demodulation and the bias."""
    from models_pt import inference

    _, module, _ = small
    w, truth, model_error, _ = small_judged
    right = inference.composite_up_kernel
    if wrong == "unflipped composite kernel":
        monkeypatch.setattr(inference, "composite_up_kernel", lambda k, fir: right(k.flip([2, 3]), fir))
    elif wrong == "composite kernel one pixel off":
        monkeypatch.setattr(inference, "composite_up_kernel",
                            lambda k, fir: torch.nn.functional.pad(right(k, fir)[..., 1:, 1:], (0, 1, 0, 1)))
    else:
        monkeypatch.setattr(inference, "SQRT2", 1.0)
    fused = inference.fuse_generator(module, wrong != "gain left out")
    row = judge("images", truth, got32=pt_images(fused, w), model_error=model_error)
    assert not row.passed, f"port error {row.port_error:.2e} passed"


# ----------------------------------------------------------------- negative controls

def _with_rule(target: str, **change) -> list:
    rules = [mapping.Rule(**{**r.__dict__, **change}) if r.target == target else r for r in kind.RULES]
    assert rules != list(kind.RULES), f"no rule {target!r}"
    return rules


def _control_diff(small, module) -> float:
    model, _, w = small
    return float(np.abs(tf_images(model, w[:8]) - pt_images(module, w[:8])).max())


UP_WEIGHT = next(r.target for r in kind.RULES if "flip_hw" in r.transform)
NOISE = next(r.target for r in kind.RULES if r.target.endswith(r"\.noise"))
STYLE_BIAS = next(r.target for r in kind.RULES if r.target.startswith("conv_styles") and r.target.endswith("bias"))


def test_control_unflipped_upsampling_kernel(small):
    assert _control_diff(small, to_pt(small[0], _with_rule(UP_WEIGHT, transform=["conv_kernel"]))) > 100 * TOL32


def test_control_wrong_noise_index(small):
    def off_by_one(m):
        k = int(kind._noise(m)[len("Noise"):-2])
        return f"Noise{k + 1 if k % 2 else k - 1 if k else 0}:0"  # swap each block's two noises
    module = to_pt(small[0], _with_rule(NOISE, source=off_by_one))
    assert _control_diff(small, module) > 100 * TOL32


def test_control_doubled_style_bias_offset(small):
    module = to_pt(small[0], _with_rule(STYLE_BIAS, transform=["squeeze", "plus_one"]))
    assert _control_diff(small, module) > 100 * TOL32


def test_control_missing_style_bias_offset(small, monkeypatch):
    from models_pt import generator as ptg

    monkeypatch.setattr(ptg.StyleDense, "forward",
                        lambda self, w: torch.nn.functional.linear(w, self.weight * self.scale, self.bias))
    assert _control_diff(small, to_pt(small[0])) > 100 * TOL32


def test_mapping_network_parity(small):
    """z -> w (not used by AttFind, ported all the same), against TF's mapping network."""
    model, module, _ = small
    rng = np.random.default_rng(3)
    z = rng.normal(size=(16, model.config["z_dim"])).astype(np.float32)
    labels = rng.dirichlet(np.ones(model.config["label_size"]), 16).astype(np.float32)
    ref = model.generator_mapping((z, labels)).numpy()
    assert ref[:, :-2].std(axis=0).mean() > 0.1, "mapping output barely depends on z"
    with torch.no_grad():
        got = module.mapping(torch.from_numpy(z), torch.from_numpy(labels)).numpy()
    assert np.abs(ref - got).max() <= TOL32
    np.testing.assert_array_equal(module.dlatent_avg.numpy(), model.dlatent_avg.numpy())


def test_an_unexpected_unused_variable_fails_the_conversion(small):
    """A TF variable no rule maps fails the conversion, naming it, unless the kind's record
    expects it (optimizer state) or --allow-unused is given."""
    model = small[0]
    values = {v.name: v.numpy() for v in model.variables}

    def with_extra(name):
        extra = {**values, name: np.zeros(3, np.float32)}
        ck = Checkpoint(Path("generator.savedmodel.zip"), "memory", {n: a.shape for n, a in extra.items()},
                        {n: a.dtype.name for n, a in extra.items()}, lambda n: extra[n])
        ck.sha256 = lambda: "in memory"
        return ck

    with pytest.raises(MappingError, match=r"generator_synthesis/Extra/weight:0.*--allow-unused"):
        convert_checkpoint(with_extra("generator_synthesis/Extra/weight:0"))
    conv = convert_checkpoint(with_extra("generator_synthesis/Extra/weight:0"), allow_unused=True)
    assert conv.plan.unused == ["generator_synthesis/Extra/weight:0"]
    assert convert_checkpoint(with_extra("optimizer/iter:0")).plan.unused == ["optimizer/iter:0"]
