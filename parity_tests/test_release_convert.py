"""Whole-release conversion: converts what is there, says what is missing, detects mislabelled zips."""
from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

import cli
import models_pt
from porting.readers import sha256_path


def run(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def test_release_folder_with_missing_and_mislabelled_models(small_classifier, tmp_path):
    _, _, paths = small_classifier
    release = tmp_path / "celeb_a_age"
    release.mkdir()
    shutil.copy(paths["zip"], release / "mobilenet.savedmodel.zip")
    shutil.copy(paths["zip"], release / "encoder.savedmodel.zip")  # a classifier under the encoder's name
    out = tmp_path / "weights"
    result = run("convert", "--tf-ckpt", release, "--out", out)
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
