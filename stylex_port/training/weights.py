"""Trained models written in the converted format: what ``models_pt.load`` and every command read.

Each model is a ``<stem>.safetensors`` file (the release's stems: ``generator``, ``encoder``,
``discriminator``, ``mobilenet``) whose header names its kind, class and config as the converter
writes it, with ``"source_format": "trained"`` and what trained it; the folder's
``manifest.json`` records each file's sha256. Float tensors are stored in float32 (the
release's dtype), whatever precision trained them. Every file is written atomically.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import models_pt
import porting
from porting import kinds
from porting.atomic import write_json
from porting.convert import write_safetensors
from models_pt.release_facts import RELEASE_STEMS


def module_state(module) -> dict[str, np.ndarray]:
    """A module's state as NumPy arrays, floats in float32; BatchNorm's batch counters 0, as a
    converted file holds them (TF keeps no such counter, and the momentum never reads it)."""
    out = {}
    for k, v in module.state_dict().items():
        a = v.detach().cpu().numpy()
        if k.endswith("num_batches_tracked"):
            a = np.zeros_like(a)
        out[k] = a.astype(np.float32) if a.dtype.kind == "f" else a
    return out


def header_for(module, trained: dict) -> dict:
    kind = kinds.get(module.kind)
    return {"kind": kind.name, "module": kind.pt_class, "config": module.config, "source": "trained",
            "source_format": "trained", "source_sha256": None, "converter_version": porting.__version__,
            "tf_variables": 0, "unused_tf_variables": [], "trained": trained}


def write_models(out_dir: str | Path, modules: dict, trained: dict, copy_from: dict | None = None) -> Path:
    """Write ``{kind: module}`` into ``out_dir`` under the release's stems, and its manifest.
    ``copy_from``: ``{kind: path}`` of converted files to copy unchanged (the fixed classifier).
    Returns the manifest's path; each module is loaded back strictly before the manifest is
    written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = {}
    for kind, module in modules.items():
        stem = RELEASE_STEMS[kind]
        path = out_dir / f"{stem}.safetensors"
        write_safetensors(path, module_state(module), header_for(module, trained))
        entries[stem] = {"kind": kind, "source": "trained", "source_sha256": None, "weights": path.name,
                         "weights_sha256": models_pt.file_sha256(path), "unused_tf_variables": []}
    for kind, src in (copy_from or {}).items():
        from porting.atomic import atomic_path

        stem = RELEASE_STEMS[kind]
        path = out_dir / f"{stem}.safetensors"
        with atomic_path(path) as tmp:
            tmp.write_bytes(Path(src).read_bytes())
        header = models_pt.read_header(path)
        entries[stem] = {"kind": kind, "source": header.get("source"), "source_sha256": header.get("source_sha256"),
                         "weights": path.name, "weights_sha256": models_pt.file_sha256(path),
                         "unused_tf_variables": []}
    order = [s for s in RELEASE_STEMS.values() if s in entries]
    manifest = {"release": None, "converter_version": porting.__version__,
                "models": {s: entries[s] for s in order}, "missing": [], "failed": {}, "reference": False,
                "trained": trained}
    for stem, e in manifest["models"].items():    # strict load: the files must rebuild their modules
        models_pt.load_file(out_dir / e["weights"])
    path = out_dir / "manifest.json"
    write_json(path, manifest)
    return path


def find_classifier(path: str | Path) -> Path:
    """A converted classifier: a ``.safetensors`` file, or a folder whose manifest lists one."""
    path = Path(path)
    if path.is_dir():
        manifest = models_pt.read_manifest(path)
        stem = RELEASE_STEMS["classifier"]
        if stem not in manifest["models"]:
            raise models_pt.WeightsError(f"{path / 'manifest.json'}: lists no classifier ({stem}); pass the "
                                         "folder `cli.py train-classifier` wrote, or a converted release")
        models_pt.check_release_hashes(path, {"models": {stem: manifest["models"][stem]}})
        return path / manifest["models"][stem]["weights"]
    if not path.exists():
        raise models_pt.WeightsError(f"{path}: no such file or folder")
    header = models_pt.read_header(path)
    if header.get("kind") != "classifier":
        raise models_pt.WeightsError(f"{path}: holds a {header.get('kind')}, not a classifier")
    return path
