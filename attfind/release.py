"""One way into a converted release, for AttFind and every analysis built on it.

``open_release(weights, dlatents)`` loads what AttFind needs of a converted release folder (the
generator and the classifier, through ``models_pt.load(folder, need=...)``, hashes checked), the
release's dlatents (the restricted unpickler, their width checked against the generator) and the
PyTorch effects backend; ``Release.setting(shift)`` is AttFind's ``Setting`` of them.
``attfind.run`` (``cli.py attfind``), the flip rates, FID, the user study and GANSpace all come
in here. ``effects_cache`` and ``default_out`` say where a run keeps its effects.

Layer: ``attfind``; imports ``models_pt`` only (and the effects backend, lazily).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attfind.errors import AttFindInputError
from attfind.setting import Setting
from models_pt.release_facts import RELEASE_STEMS

GENERATOR, CLASSIFIER, DISCRIMINATOR = (RELEASE_STEMS[k] for k in ("generator", "classifier", "discriminator"))


def default_out(weights: Path) -> Path:
    """Where ``cli.py attfind`` writes by default: ``runs/attfind/<weights folder name>``."""
    return Path("runs") / "attfind" / Path(weights).name


def effects_cache(out_dir: Path) -> Path:
    """An AttFind run's effect cache, inside its output folder."""
    return Path(out_dir) / "effects_cache"


def load_models(weights: Path, need: tuple = (GENERATOR, CLASSIFIER)) -> dict:
    """``{stem: module}`` of ``need`` from a converted release folder (``cli.py convert``), and
    ``"entries"``: the manifest's entries of every model there."""
    import models_pt

    weights = Path(weights)
    if not weights.is_dir():
        raise AttFindInputError(f"{weights}: expected a converted release folder (with manifest.json), "
                                "as `cli.py convert --tf-ckpt <release folder>` writes")
    if not (weights / "manifest.json").exists():
        raise AttFindInputError(f"{weights}: no manifest.json; convert the whole release folder")
    entries = models_pt.read_manifest(weights)["models"]
    missing = [stem for stem in need if stem not in entries]
    if missing:
        raise AttFindInputError(f"{weights / 'manifest.json'}: AttFind needs the generator and the classifier "
                                f"({CLASSIFIER}); missing: {', '.join(missing)}")
    return {**models_pt.load(weights, need=need), "entries": entries}


def read_dlatents(path: Path, max_images: int | None, w_dim: int, weights: Path):
    """The release's dlatents (restricted unpickler) and their names, checked against the generator."""
    from models_pt.dlatents import dlatent_matrix, load_dlatents

    items = load_dlatents(path)
    names, dlatents = [n for n, _ in items], dlatent_matrix(items)
    if max_images:
        dlatents, names = dlatents[:max_images], names[:max_images]
    if dlatents.shape[1] != w_dim:
        raise AttFindInputError(f"{path}: dlatents have {dlatents.shape[1]} values, the generator "
                                f"in {weights} takes {w_dim}")
    return dlatents, names


@dataclass
class Release:
    """What AttFind and the analyses work on: the ported generator and classifier, the manifest's
    entries, the dlatents and their names (when a dlatents file was given) and the float32 PyTorch
    effects backend (``attfind.effects_pt.TorchEffects``)."""
    weights: Path
    entries: dict
    generator: object
    classifier: object
    backend: object
    dlatents: np.ndarray | None = None
    names: list | None = None

    def setting(self, shift_size: float = 1.0) -> Setting:
        """AttFind's ``Setting``: the style vectors of the dlatents and their ranges."""
        return Setting.of(self.backend, self.dlatents, shift_size)


def open_release(weights: Path, dlatents_path: Path | None = None, *, max_images: int | None = None,
                 batch_size: int = 128, device: str = "cpu") -> Release:
    """The one way into a converted release (see the module's text)."""
    from attfind.effects_pt import TorchEffects

    models = load_models(weights)
    gen, clf = models[GENERATOR], models[CLASSIFIER]
    dlatents = names = None
    if dlatents_path is not None:
        dlatents, names = read_dlatents(Path(dlatents_path), max_images, gen.config["w_dim"], weights)
    backend = TorchEffects(gen, clf, batch_size=batch_size, device=device)
    return Release(Path(weights), models["entries"], gen, clf, backend, dlatents, names)
