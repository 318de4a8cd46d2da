"""PyTorch modules of the StylEx release, and ``load`` to rebuild them from converted weights.

Layer: the bottom, beside ``models_tf``. PyTorch only: nothing here imports TensorFlow or any
other part of the project (a test walks the imports), so ``models_pt`` alone is what a user
needs to load converted weights. ``release_facts`` (which imports nothing at all) is what every
side of the project must agree on about the release: it lives here, at the bottom, so that all
layers can read it. Which class a weights file holds is written in its header
(``"module"``, by the converter, from the model kind's record in ``porting.kinds``).

    import models_pt
    clf = models_pt.load("weights/mobilenet.safetensors")      # one model, eval mode
    models = models_pt.load("weights/celeb_a_age")            # a converted release: {name: module}
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

__version__ = "0.4.0"   # the project's version (setup.cfg reads it); converted files record it

METADATA_KEY = "stylex_port"  # safetensors metadata entry holding our JSON header


class WeightsError(ValueError):
    """A weights file that cannot be turned back into a module."""


class HashMismatchError(WeightsError):
    """A converted file whose bytes are not those its folder's ``manifest.json`` records."""


def model_class(header: dict, path: str | Path = "weights"):
    """The class a weights header names (``"module": "models_pt.<file>:<Class>"``), checked to
    be one of this package's modules of the header's kind."""
    spec = header.get("module")
    if not spec:
        raise WeightsError(f"{path}: the header names no module class (written by converter "
                           f"{header.get('converter_version', '?')}); convert the checkpoint again")
    module, _, cls = str(spec).partition(":")
    if not module.startswith(__name__ + ".") or not cls:
        raise WeightsError(f"{path}: header names {spec!r}, not a class of {__name__}")
    try:
        found = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        raise WeightsError(f"{path}: header names {spec!r}, which this version of {__name__} lacks") from None
    import torch

    if not (isinstance(found, type) and issubclass(found, torch.nn.Module)
            and getattr(found, "kind", None) == header.get("kind")):
        raise WeightsError(f"{path}: header names {spec!r} for a {header.get('kind')}, not such a module")
    return found


def read_header(path: str | Path) -> dict:
    """The JSON header the converter wrote: kind, config, source sha256, converter version."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise WeightsError(f"{path}: not a readable safetensors file: {e}") from None
    if METADATA_KEY not in meta:
        raise WeightsError(f"{path}: safetensors file has no '{METADATA_KEY}' metadata; "
                           "was it written by `cli.py convert`?")
    return json.loads(meta[METADATA_KEY])


def load_file(path: str | Path, device="cpu"):
    """Rebuild one module from its safetensors file alone, weights loaded strictly, eval mode."""
    from safetensors.torch import load_file as st_load

    path = Path(path)
    header = read_header(path)
    module = model_class(header, path)(**header["config"])
    state = st_load(str(path), device="cpu")
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{path}: weights do not fit {header['kind']} {header['config']}: "
                           f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return module.to(device).eval()


def file_sha256(path: str | Path, into=None) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks: the one file hash of the project
    (manifests, downloads, workers' checks). With ``into`` (a ``hashlib`` object), the bytes are
    fed to it as well, for hashes over several files."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            if into is not None:
                into.update(block)
    return h.hexdigest()


def check_release_hashes(folder: str | Path, manifest: dict | None = None) -> None:
    """Each converted file of a release folder against the sha256 its ``manifest.json`` records;
    a mismatch is one line naming the file (a flipped byte inside a tensor loads silently
    otherwise)."""
    folder = Path(folder)
    manifest = read_manifest(folder) if manifest is None else manifest
    for name, entry in manifest["models"].items():
        want = entry.get("weights_sha256")
        if not want:
            continue
        path = folder / entry["weights"]
        if not path.exists():
            raise WeightsError(f"{path}: listed in {folder / 'manifest.json'} for {name!r}, but missing")
        got = file_sha256(path)
        if got != want:
            raise HashMismatchError(f"{path}: sha256 {got[:12]}... is not the {want[:12]}... manifest.json "
                               "records (corrupted or changed since conversion); convert again, or "
                               "load(..., check_hashes=False) to load it anyway")


def read_manifest(folder: str | Path) -> dict:
    """The ``manifest.json`` of a converted release folder (``cli.py convert`` on a release):
    ``{"models": {stem: {"kind", "weights", "weights_sha256", "source", ...}}, ...}``."""
    folder = Path(folder)
    manifest = folder / "manifest.json"
    if not manifest.exists():
        raise WeightsError(f"{folder}: folder has no manifest.json (convert a release folder "
                           "to get one, or pass a .safetensors file)")
    try:
        data = json.loads(manifest.read_text())
        if not isinstance(data.get("models"), dict):
            raise ValueError("no 'models' table")
    except ValueError as e:
        raise WeightsError(f"{manifest}: not a manifest written by `cli.py convert`: {e}") from None
    return data


def load(path: str | Path, device="cpu", *, check_hashes: bool = True, need=None):
    """A ``.safetensors`` file -> its module; a converted release folder -> ``{name: module}``
    (``need``: only these names, e.g. ``("generator", "mobilenet")``; one the manifest lacks is an
    error that names it).

    Every file is first checked against the sha256 of the folder's ``manifest.json`` (for a
    single file: the manifest beside it, when it lists the file); ``check_hashes=False`` skips
    that, for files you changed on purpose."""
    path = Path(path)
    if path.is_dir():
        manifest = read_manifest(path)
        models = manifest["models"]
        if need is not None:
            missing = [n for n in need if n not in models]
            if missing:
                raise WeightsError(f"{path / 'manifest.json'}: no {', '.join(missing)} (it lists "
                                   f"{', '.join(models) or 'nothing'})")
            models = {n: models[n] for n in need}
        if check_hashes:
            check_release_hashes(path, {**manifest, "models": models})
        return {name: load_file(path / e["weights"], device) for name, e in models.items()}
    if not path.exists():
        raise WeightsError(f"{path}: no such file")
    if check_hashes and (path.parent / "manifest.json").exists():
        try:
            manifest = read_manifest(path.parent)
        except WeightsError:           # another tool's manifest.json: nothing to check against
            manifest = {"models": {}}
        mine = {n: e for n, e in manifest["models"].items() if e.get("weights") == path.name}
        check_release_hashes(path.parent, {"models": mine})
    return load_file(path, device)
