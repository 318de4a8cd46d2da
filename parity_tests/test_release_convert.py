"""Whole-release conversion: converts what is there, says what is missing, detects mislabelled zips."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import models_pt
from conftest import run_cli
from porting.readers import sha256_path

ROOT = Path(__file__).resolve().parents[1]




def test_release_folder_with_missing_and_mislabelled_models(small_classifier, tmp_path):
    _, _, paths = small_classifier
    release = tmp_path / "celeb_a_age"
    release.mkdir()
    shutil.copy(paths["zip"], release / "mobilenet.savedmodel.zip")
    shutil.copy(paths["zip"], release / "encoder.savedmodel.zip")  # a classifier under the encoder's name
    out = tmp_path / "weights"
    result = run_cli("convert", "--tf-ckpt", release, "--out", out)
    assert result.exit_code == 2, result.output  # the mislabelled zip is bad input
    assert "generator      missing" in result.output and "discriminator  missing" in result.output
    assert "released name says encoder, but its variables are those of a classifier" in result.stderr
    assert not (out / "encoder.safetensors").exists()

    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["models"]["mobilenet"]
    assert entry["kind"] == "classifier"
    assert entry["source_sha256"] == sha256_path(release / "mobilenet.savedmodel.zip")
    assert entry["weights_sha256"] == sha256_path(out / "mobilenet.safetensors")
    assert set(manifest["missing"]) == {"generator", "discriminator"} and "encoder" in manifest["failed"]
    modules = models_pt.load(out)
    assert list(modules) == ["mobilenet"] and not modules["mobilenet"].training


def test_reference_release_end_to_end_and_verify_catches_a_corrupted_tensor(verified, tmp_path, capsys):
    """What `make demo` runs, at 32 px (conftest's ``release`` and ``verified``: make-reference,
    convert the folder, verify the folder), then the README's example on the converted folder,
    and the folder verify of a copy with one generator weight corrupted (float64: exactness)."""
    import pytest
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from conftest import SEEDS

    seed, ref, out, output, report = verified
    if seed != SEEDS[0]:
        pytest.skip("one release is enough")
    assert {p.name for p in ref.iterdir()} == {f"{m}.savedmodel.zip" for m in ("generator", "encoder",
                                              "discriminator", "mobilenet")} | {"dlatents.pkl", "reference.json"}
    from models_pt.dlatents import load_dlatents

    dl = load_dlatents(ref / "dlatents.pkl")
    assert len(dl) == 8 and dl[0][1].shape == (1, 514)
    assert report["passed"]
    assert {m["model"] for m in report["models"]} == {"generator", "encoder", "discriminator", "classifier",
                                                       "round trip", "attfind effects"}
    assert "round trip" in output

    # The README's downstream example on the converted folder: PyTorch only, a PNG out.
    import importlib.util
    import numpy as np
    from PIL import Image

    from porting.samples import sample_images

    face = tmp_path / "face.png"
    Image.fromarray(((sample_images(1, 48, seed=9)[0] + 1) * 127.5).astype(np.uint8)).save(face)
    spec = importlib.util.spec_from_file_location("counterfactual", ROOT / "examples" / "counterfactual.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    p0, p1 = example.main(["--weights", str(out), "--image", str(face), "--coordinate", "7", "--delta", "5",
                           "--out", str(tmp_path / "cf.png")])
    assert Image.open(tmp_path / "cf.png").size == (512, 256) and 0 < p0 < 1 and 0 < p1 < 1 and p0 != p1
    assert "seeded reference release" in capsys.readouterr().err      # it says no real face reconstructs
    # Bad input ends in one line and exit code 2, with nothing written.
    bad = {"missing image": ["--image", str(tmp_path / "nope.png")],
           "not an image": ["--image", str(ref / "reference.json")],
           "coordinate": ["--image", str(face), "--coordinate", "100000"],
           "weights": ["--image", str(face), "--weights", str(tmp_path)]}
    for what, args in bad.items():
        argv = ["--weights", str(out), "--out", str(tmp_path / "bad.png")] + args
        with pytest.raises(SystemExit) as exit_:
            example.main(argv)
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert exit_.value.code == 2 and len(err) == 1, (what, err)
        assert not (tmp_path / "bad.png").exists(), what

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    weights = copy / "generator.safetensors"
    with safe_open(str(weights), "pt") as f:
        meta = f.metadata()
    state = load_file(str(weights))
    state["convs.b16_conv1.weight"][0, 0, 1, 1] += 0.5
    save_file(state, str(weights), metadata=meta)
    result = run_cli("verify", "--float64", "--tf-ckpt", ref, "--weights", copy, "--json", tmp_path / "bad.json")
    assert result.exit_code == 1 and "FAIL" in result.output, result.output[-2000:]
    # The file no longer has its manifest's sha256: load refuses it, verify says so and judges it.
    with pytest.raises(models_pt.HashMismatchError, match="generator.safetensors: sha256"):
        models_pt.load(copy)
    assert "generator.safetensors: sha256" in capsys.readouterr().err + result.output
    verdicts = {m["model"]: m["passed"] for m in json.loads((tmp_path / "bad.json").read_text())["models"]}
    assert verdicts["generator"] is False, verdicts
    assert all(verdicts[m] for m in ("encoder", "discriminator", "classifier")), verdicts


def test_weights_name_their_class_and_a_foreign_class_is_refused(small_classifier, tmp_path):
    """The header names the module class (from the kind's record); models_pt.load builds it with
    nothing but models_pt, and refuses a header without a class or with one from elsewhere."""
    import json as _json

    import pytest
    import torch
    from safetensors.torch import load_file, save_file

    _, _, paths = small_classifier
    out = tmp_path / "mobilenet.safetensors"
    assert run_cli("convert", "--tf-ckpt", paths["zip"], "--out", out).exit_code == 0
    header = models_pt.read_header(out)
    assert header["module"] == "models_pt.classifier:MobileNetV1"
    assert type(models_pt.load(out)).__name__ == "MobileNetV1"
    state = load_file(str(out))
    for module, why in [(None, "names no module class"), ("os:system", "not a class of models_pt"),
                        ("models_pt.generator:Generator", "for a classifier, not such a module")]:
        bad = dict(header)
        bad.pop("module") if module is None else bad.update(module=module)
        path = tmp_path / f"bad_{len(why)}.safetensors"
        save_file({k: torch.as_tensor(v) for k, v in state.items()}, str(path),
                  metadata={models_pt.METADATA_KEY: _json.dumps(bad)})
        with pytest.raises(models_pt.WeightsError, match=why):
            models_pt.load(path)
