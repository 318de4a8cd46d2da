"""A whole release folder: find its models, convert each, write a manifest.

A release folder holds ``<stem>.savedmodel.zip`` for stem in ``STEM_TO_KIND`` (plus
``dlatents.pkl`` and ``examples_1.tfrecord``, which are data, not models). Each zip's model kind
is detected from its variables, never trusted from its file name: a zip of the wrong model under
a released name is reported, not converted into the wrong slot. (Verifying a converted folder
against its release needs TF's models too: ``crosscheck.verify.verify_release``.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from porting.atomic import write_json
from porting.kinds import STEM_TO_KIND   # file stem -> model kind, in conversion order
from porting.readers import sha256_path


def is_release_folder(path: Path) -> bool:
    path = Path(path)
    return path.is_dir() and not (path / "saved_model.pb").exists() and any(path.glob("*.savedmodel.zip"))


@dataclass
class ReleaseConversion:
    out_dir: Path
    models: dict[str, dict] = field(default_factory=dict)     # stem -> manifest entry
    missing: list[str] = field(default_factory=list)          # released stems not found
    failed: dict[str, str] = field(default_factory=dict)      # stem -> error message


def convert_release(src: Path, out_dir: Path | None = None, allow_nonfinite: bool = False,
                    progress: bool = True, allow_unused: bool = False, build_keras=None) -> ReleaseConversion:
    """Convert every model zip of a release folder into ``out_dir`` (default ``weights/<folder>``)."""
    from tqdm import tqdm

    from porting.convert import convert_path

    src = Path(src)
    out_dir = Path(out_dir) if out_dir else Path("weights") / src.resolve().name
    zips = {p.name[: -len(".savedmodel.zip")]: p for p in sorted(src.glob("*.savedmodel.zip"))}
    result = ReleaseConversion(out_dir)
    result.missing = [s for s in STEM_TO_KIND if s not in zips]
    order = [s for s in STEM_TO_KIND if s in zips] + [s for s in zips if s not in STEM_TO_KIND]
    bar = tqdm(order, desc="converting", unit="model", disable=not progress)
    for stem in bar:
        bar.set_postfix_str(stem)
        expected = STEM_TO_KIND.get(stem)
        try:
            out, conv = convert_path(zips[stem], out_dir / f"{stem}.safetensors", model=None,
                                     allow_nonfinite=allow_nonfinite, allow_unused=allow_unused,
                                     build_keras=build_keras)
        except Exception as e:  # one bad model must not stop the others
            from porting.errors import USER_ERRORS
            if not isinstance(e, USER_ERRORS):
                raise
            result.failed[stem] = str(e)
            continue
        if expected and conv.kind != expected:
            out.unlink()
            result.failed[stem] = (f"{zips[stem]}: released name says {expected}, but its variables are "
                                   f"those of a {conv.kind}; not converted")
            continue
        result.models[stem] = {
            "kind": conv.kind,
            "source": zips[stem].name,
            "source_sha256": conv.header["source_sha256"],
            "weights": out.name,
            "weights_sha256": sha256_path(out),
            "unused_tf_variables": conv.plan.unused,
        }
    if result.models:
        write_manifest(out_dir, src, result)
    return result


def write_manifest(out_dir: Path, src: Path, result: ReleaseConversion) -> Path:
    import porting

    data = {"release": str(src), "converter_version": porting.__version__, "models": result.models,
            "missing": result.missing, "failed": result.failed,
            # a reference release (``make-reference``): seeded weights, no real face reconstructs
            "reference": (src / "reference.json").exists() if src.is_dir() else False}
    path = out_dir / "manifest.json"
    write_json(path, data)
    return path
