"""Readers agree across formats; bad input gets one clear line, exit code 2, nothing half-written."""
from __future__ import annotations

import os
import shutil
import stat
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from crosscheck.tf_side import build_keras
from porting.errors import ReaderError
from porting.readers import open_checkpoint
from conftest import run_cli




def assert_bad_input(result, *words):
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, f"want one line, got: {err!r}"
    for w in words:
        assert w in err, f"{w!r} not in {err!r}"


def no_output_written(folder: Path):
    leftovers = [p.name for p in folder.iterdir()] if folder.exists() else []
    assert not leftovers, f"half-written output left behind: {leftovers}"


# ----------------------------------------------------------------- formats

def test_every_format_reads_the_same_variables(small_classifier):
    model, _, paths = small_classifier
    expected = {v.name: v.numpy() for v in model.variables}
    for fmt in ("savedmodel", "zip", "h5", "checkpoint"):
        with open_checkpoint(paths[fmt]) as ck:
            assert set(ck.names) == set(expected), fmt
            for name, value in expected.items():
                np.testing.assert_array_equal(ck.read(name), value, err_msg=f"{fmt}: {name}")
    with open_checkpoint(str(paths["checkpoint"]) + ".index") as ck:  # the .index path works too
        assert set(ck.names) == set(expected)


def test_every_format_converts_to_identical_weights(small_classifier, tmp_path):
    from safetensors.numpy import load_file

    _, _, paths = small_classifier
    states = {}
    for fmt in ("savedmodel", "zip", "h5", "checkpoint"):
        out = tmp_path / f"{fmt}.safetensors"
        result = run_cli("convert", "--tf-ckpt", paths[fmt], "--out", out)
        assert result.exit_code == 0, result.output
        assert "0 unused" in result.output
        states[fmt] = load_file(str(out))
    for fmt, state in states.items():
        assert state.keys() == states["zip"].keys()
        for k in state:
            np.testing.assert_array_equal(state[k], states["zip"][k], err_msg=f"{fmt}: {k}")


def test_both_keras_weights_layouts_convert_to_the_savedmodels_tensors(small_classifier, tmp_path):
    """save_weights("x.weights.h5") (tf_keras' and Keras 3's default layout: layers/<class>/vars/<i>,
    no names) and save_weights("x.h5", save_format="h5") of the same classifier, and its
    SavedModel, convert to bit-identical tensors."""
    from safetensors.numpy import load_file

    model, _, paths = small_classifier
    new, legacy = tmp_path / "x.weights.h5", tmp_path / "x.h5"
    model.save_weights(str(new))
    model.save_weights(str(legacy), save_format="h5")
    with h5py.File(new, "r") as f:
        assert "layer_names" not in f.attrs and "layers/conv2d/vars/0" in f   # the nameless layout
    with open_checkpoint(new, build_keras=build_keras) as ck:
        assert ck.fmt == "keras3-h5" and "conv1/kernel:0" in ck.names
    with pytest.raises(ReaderError, match="reading it needs the TF reference model of the classifier"):
        with open_checkpoint(new):        # porting alone cannot: the layout needs models_tf
            pass
    states = {}
    for src in (new, legacy, paths["zip"]):
        out = tmp_path / f"{src.name}.safetensors"
        result = run_cli("convert", "--tf-ckpt", src, "--out", out)
        assert result.exit_code == 0 and "0 unused" in result.output, result.output
        states[src.name] = load_file(str(out))
    want = states[paths["zip"].name]
    for name, state in states.items():
        assert state.keys() == want.keys(), name
        for k in state:
            np.testing.assert_array_equal(state[k], want[k], err_msg=f"{name}: {k}")


@pytest.mark.parametrize("widths", ["equal", "tapered"])
@pytest.mark.parametrize("kind", ["generator", "encoder", "discriminator"])
def test_nameless_keras_layout_of_every_release_model_converts(kind, widths, tmp_path):
    """The generator, encoder and discriminator saved with save_weights("x.weights.h5") convert to
    the same tensors as their SavedModels (and, where Keras' names-kept HDF5 layout holds every
    weight, as that file): their configs are told from the file's structure. Once with every
    width equal (32 px), once with widths that halve per resolution as the release's do (64 px,
    64 down to 8), where reading a width from the wrong layer cannot go unnoticed."""
    from safetensors.numpy import load_file

    from models_tf import generator as tfg
    from models_tf import resnet_d
    from crosscheck.reference_release import save_savedmodel_zip

    res, cap, base = (32, 16, 32768) if widths == "equal" else (64, 64, 512)
    if kind == "generator":
        config = {**tfg.small_config(res, channel_max=cap), "channel_base": base}
        model = tfg.seeded_generator(config, seed=2)
        chans = tfg.channels(config)
    else:
        config = {**resnet_d.small_config(kind, res, cap), "channel_base": base}
        model = resnet_d.seeded(kind, config, seed=3)
        chans = resnet_d.channels(config)
    assert (len(set(chans.values())) == 1) == (widths == "equal"), chans
    new, legacy = tmp_path / f"{kind}.weights.h5", tmp_path / f"{kind}.h5"
    model.save_weights(str(new))
    model.save_weights(str(legacy), save_format="h5")
    sources = [new, save_savedmodel_zip(model, tmp_path / f"{kind}.savedmodel.zip", f"{kind}.savedmodel")]
    if kind != "generator":        # the names-kept layout stores layers' weights only, not dlatent_avg
        sources.append(legacy)
    states = {}
    for src in sources:
        out = tmp_path / f"{src.name}.safetensors"
        result = run_cli("convert", "--tf-ckpt", src, "--out", out)
        assert result.exit_code == 0 and f"{kind}:" in result.output and "0 unused" in result.output, result.output
        states[src.name] = load_file(str(out))
    with open_checkpoint(new, build_keras=build_keras) as ck:
        assert ck.fmt == "keras3-h5"
    want = states[sources[1].name]
    assert np.ptp(np.concatenate([v.ravel() for v in want.values()])) > 1.0        # seeded, not zeros
    for name, state in states.items():
        assert state.keys() == want.keys(), name
        for k in state:
            np.testing.assert_array_equal(state[k], want[k], err_msg=f"{name}: {k}")


def test_nameless_keras_layout_of_another_model_is_refused(tmp_path):
    """A model that is none of the release's in the nameless layout cannot be mapped without
    guessing: one line says which layout was found and how to save a file that converts. So
    does a release model whose file lost a layer."""
    import tf_keras as keras

    from models_tf import resnet_d

    other = keras.Sequential([keras.layers.Dense(4, input_shape=(3,)), keras.layers.Dense(2)])
    path = tmp_path / "other.weights.h5"
    other.save_weights(str(path))
    result = run_cli("convert", "--tf-ckpt", path, "--out", tmp_path / "o.safetensors")
    assert result.exit_code == 2
    assert "does not carry the variables' names" in result.stderr and "save_format='h5'" in result.stderr
    assert "none of the release's models" in result.stderr and not (tmp_path / "o.safetensors").exists()

    enc = resnet_d.seeded("encoder", resnet_d.small_config("encoder", 32, 16), seed=3)
    path = tmp_path / "e.weights.h5"
    enc.save_weights(str(path))
    with h5py.File(path, "a") as f:
        del f["layers/block_1/conv0"]                    # a layer's weights gone
    result = run_cli("convert", "--tf-ckpt", path, "--out", tmp_path / "e.safetensors")
    assert result.exit_code == 2 and "the encoder" in result.stderr and "Keras cannot load it" in result.stderr, \
        result.stderr
    assert not (tmp_path / "e.safetensors").exists()


def test_inspect_lists_every_variable_with_its_target(small_classifier):
    _, _, paths = small_classifier
    result = run_cli("inspect", "--tf-ckpt", paths["zip"])
    assert result.exit_code == 0, result.output
    assert "conv_dw_13/depthwise_kernel:0" in result.output
    assert "-> blocks.12.dw.weight  [depthwise_kernel]" in result.output
    assert "137 used, 0 unused" in result.output


def test_weights_rebuild_from_the_file_alone(small_classifier, tmp_path):
    import models_pt

    _, config, paths = small_classifier
    out = tmp_path / "m.safetensors"
    assert run_cli("convert", "--tf-ckpt", paths["zip"], "--out", out).exit_code == 0
    header = models_pt.read_header(out)
    from models_tf.classifier import pt_config

    assert header["kind"] == "classifier" and header["config"] == pt_config(config)
    assert len(header["source_sha256"]) == 64 and header["converter_version"]
    module = models_pt.load(out)
    assert not module.training


# ----------------------------------------------------------------- bad input

def test_missing_path(tmp_path):
    assert_bad_input(run_cli("convert", "--tf-ckpt", tmp_path / "nope.zip"), "nope.zip", "no such file")
    assert_bad_input(run_cli("inspect", "--tf-ckpt", tmp_path / "nope"), "no such file")


def test_folder_that_is_not_a_savedmodel(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "README").write_text("hello")
    assert_bad_input(run_cli("convert", "--tf-ckpt", tmp_path / "x", "--out", tmp_path / "o" / "w.safetensors"),
                     "not a SavedModel")
    no_output_written(tmp_path / "o")


def _zip_with(path: Path, name: str, data: bytes = b"x", symlink: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mobilenet.savedmodel/saved_model.pb", b"")
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, data)
    return path


@pytest.mark.parametrize("entry,symlink,words", [
    ("../escaped.txt", False, "escapes the target folder"),
    ("mobilenet.savedmodel/../../escaped.txt", False, "escapes the target folder"),
    ("/tmp/stylex-absolute-escape.txt", False, "absolute path"),
    ("mobilenet.savedmodel/link", True, "symbolic link"),
])
def test_zip_entries_escaping_the_folder_are_refused_before_extraction(tmp_path, entry, symlink, words):
    z = _zip_with(tmp_path / "evil.zip", entry, b"/etc/passwd" if symlink else b"pwned", symlink)
    result = run_cli("convert", "--tf-ckpt", z, "--out", tmp_path / "o" / "w.safetensors")
    assert_bad_input(result, "evil.zip", entry, words)
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/stylex-absolute-escape.txt").exists()
    no_output_written(tmp_path / "o")


def test_truncated_zip(small_classifier, tmp_path):
    _, _, paths = small_classifier
    data = paths["zip"].read_bytes()
    bad = tmp_path / "mobilenet.savedmodel.zip"
    bad.write_bytes(data[: len(data) // 2])
    assert_bad_input(run_cli("convert", "--tf-ckpt", bad, "--out", tmp_path / "o" / "w.safetensors"),
                     "mobilenet.savedmodel.zip")
    no_output_written(tmp_path / "o")


def _copy_checkpoint(paths, tmp_path) -> Path:
    src = paths["checkpoint"]
    dst = tmp_path / "ckpt"
    shutil.copytree(src.parent, dst)
    return dst / src.name


def test_truncated_checkpoint_data(small_classifier, tmp_path):
    _, _, paths = small_classifier
    prefix = _copy_checkpoint(paths, tmp_path)
    data = next(prefix.parent.glob(prefix.name + ".data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    assert_bad_input(run_cli("convert", "--tf-ckpt", prefix, "--out", tmp_path / "o" / "w.safetensors"),
                     str(prefix))
    no_output_written(tmp_path / "o")


def test_corrupted_checkpoint_index(small_classifier, tmp_path):
    _, _, paths = small_classifier
    prefix = _copy_checkpoint(paths, tmp_path)
    index = Path(str(prefix) + ".index")
    raw = bytearray(index.read_bytes())
    for i in range(40, len(raw) - 60, 7):
        raw[i] ^= 0x5A
    index.write_bytes(bytes(raw))
    assert_bad_input(run_cli("convert", "--tf-ckpt", index, "--out", tmp_path / "o" / "w.safetensors"),
                     "ckpt")
    no_output_written(tmp_path / "o")


def _edited_h5(paths, tmp_path, name: str, edit) -> Path:
    dst = tmp_path / "edited.h5"
    shutil.copy(paths["h5"], dst)
    with h5py.File(dst, "r+") as f:
        layer = name.split("/")[0]
        ds_name = f"{layer}/{name}"
        value = edit(f[ds_name][()])
        del f[ds_name]
        f[ds_name] = value
    return dst


def test_shape_mismatch_names_variable_and_shapes(small_classifier, tmp_path):
    _, _, paths = small_classifier
    bad = _edited_h5(paths, tmp_path, "conv_pw_3/kernel:0", lambda a: a[..., :-1])
    result = run_cli("convert", "--tf-ckpt", bad, "--out", tmp_path / "o" / "w.safetensors")
    assert_bad_input(result, "conv_pw_3/kernel:0", "blocks.2.pw.weight", "expected", "found")
    no_output_written(tmp_path / "o")


def test_nonfinite_weight_refused_unless_allowed(small_classifier, tmp_path):
    _, _, paths = small_classifier

    def poison(a):
        a = a.copy()
        a.flat[3] = np.nan
        return a
    bad = _edited_h5(paths, tmp_path, "conv_dw_5_bn/gamma:0", poison)
    out = tmp_path / "o" / "w.safetensors"
    assert_bad_input(run_cli("convert", "--tf-ckpt", bad, "--out", out), "conv_dw_5_bn/gamma:0", "NaN",
                     "--allow-nonfinite")
    no_output_written(tmp_path / "o")
    assert run_cli("convert", "--tf-ckpt", bad, "--out", out, "--allow-nonfinite").exit_code == 0
    assert out.exists()


def test_checkpoint_of_another_model(tmp_path):
    import tf_keras as keras

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense_head")])
    other.save_weights(str(tmp_path / "other.h5"))
    assert_bad_input(run_cli("convert", "--tf-ckpt", tmp_path / "other.h5", "--out", tmp_path / "o" / "w.safetensors"),
                     "other.h5", "cannot tell which model")
    no_output_written(tmp_path / "o")


def test_forced_kind_that_does_not_match(small_classifier, tmp_path):
    _, _, paths = small_classifier
    assert_bad_input(run_cli("convert", "--tf-ckpt", paths["zip"], "--model", "generator",
                         "--out", tmp_path / "o" / "w.safetensors"), "--model generator", "classifier")
    no_output_written(tmp_path / "o")


def test_failed_conversion_keeps_the_previous_output(small_classifier, tmp_path):
    _, _, paths = small_classifier
    out = tmp_path / "w.safetensors"
    assert run_cli("convert", "--tf-ckpt", paths["zip"], "--out", out).exit_code == 0
    before = out.read_bytes()
    bad = _edited_h5(paths, tmp_path, "conv1/kernel:0", lambda a: a[..., :-2])
    assert run_cli("convert", "--tf-ckpt", bad, "--out", out).exit_code == 2
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_verify_exits_1_and_writes_json_when_a_weight_is_wrong(small_classifier, tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    _, _, paths = small_classifier
    good = tmp_path / "good.safetensors"
    assert run_cli("convert", "--tf-ckpt", paths["zip"], "--out", good).exit_code == 0
    ok = run_cli("verify", "--tf-ckpt", paths["zip"], "--weights", good, "--json", tmp_path / "ok.json")
    assert ok.exit_code == 0, ok.output
    report = json.loads((tmp_path / "ok.json").read_text())
    assert report["passed"] and report["model"] == "classifier" and report["dtype"] == "float32"
    assert len(report["layers"]) >= 80 and {"name", "max_abs_diff"} <= set(report["layers"][0])
    assert report["output"]["max_abs_diff"] <= 1e-5

    with safe_open(str(good), "pt") as f:
        meta = f.metadata()
    state = load_file(str(good))
    state["head.conv.bias"] = state["head.conv.bias"] + 0.01
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad), metadata=meta)
    result = run_cli("verify", "--tf-ckpt", paths["zip"], "--weights", bad, "--json", tmp_path / "bad.json")
    assert result.exit_code == 1
    assert "FAILED" in result.output
    assert json.loads((tmp_path / "bad.json").read_text())["passed"] is False


def test_weights_that_are_not_ours(tmp_path, small_classifier):
    _, _, paths = small_classifier
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    assert_bad_input(run_cli("verify", "--tf-ckpt", paths["zip"], "--weights", junk), "junk.safetensors")
