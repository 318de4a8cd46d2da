"""Read TensorFlow variables without running any model.

``open_checkpoint(path)`` accepts, and tells apart by looking at the path:

* a SavedModel folder (holds ``saved_model.pb`` and ``variables/``);
* a zip holding one SavedModel folder, as the StylEx release ships them;
* a TF checkpoint, given as its prefix (``ckpt``) or its ``.index`` file;
* a Keras ``.h5`` weights (or whole-model) file, names kept (``save_format="h5"``), or the
  nameless ``.weights.h5`` layout, which needs ``build_keras`` (below).

It returns a ``Checkpoint``: variable names as TensorFlow reports them (``conv1/kernel:0``),
shapes and dtypes up front, values read on demand. TF2 object-based checkpoints (every
SavedModel and every ``save_weights`` checkpoint) store values under object-graph keys such as
``layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE``; the object graph stored beside them
gives each key's variable name, which is what the mapping rules use.

Layer: ``porting``. TensorFlow's checkpoint reader is used; nothing of ``models_tf``. A nameless
``.weights.h5`` carries only each layer's class and order, so it is read by loading it with
Keras into the reference model its structure names: ``open_checkpoint(path, build_keras=f)``
with ``f(kind, config) -> Keras model``, which the cross-checks supply
(``crosscheck.tf_side.build_keras``; ``cli.py`` passes it).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from models_pt import file_sha256
from porting.errors import ReaderError
from porting.graph_scan import check_h5_config, zip_name_problem
from porting.mapping import normalize_name
from models_pt.release_facts import CLASSIFIER_ASSUMED, GENERATOR_TRAIN_NOISE, MAPPING_LR_MUL, MBSTD_GROUP

# Bookkeeping a checkpoint may carry beside the model's variables.
_BOOKKEEPING = {"save_counter:0", "_CHECKPOINTABLE_OBJECT_GRAPH:0"}


@dataclass
class Checkpoint:
    source: Path                      # what the user named
    fmt: str                          # "savedmodel-zip" | "savedmodel" | "checkpoint" | "h5"
    shapes: dict[str, tuple]          # variable name -> shape
    dtypes: dict[str, str]            # variable name -> numpy dtype name
    _read: Callable[[str], np.ndarray] = field(repr=False)
    root: Path | None = None          # the (unpacked) SavedModel folder, when there is one
    trust_graph: bool = False         # the user said --trust-graph: its graph loads unscanned

    def read(self, name: str) -> np.ndarray:
        try:
            return self._read(name)
        except ReaderError:
            raise
        except Exception as e:  # the TF / h5py error says little about which file
            raise ReaderError(f"{self.source}: cannot read variable {name!r} "
                              f"(expected shape {list(self.shapes[name])}): {_first_line(e)}") from None

    def read_all(self) -> dict[str, np.ndarray]:
        return {n: self.read(n) for n in self.shapes}

    @property
    def names(self) -> list[str]:
        return list(self.shapes)

    def sha256(self) -> str:
        return sha256_path(self.source)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def sha256_path(path: Path) -> str:
    """sha256 of a file; of a folder, over its sorted relative paths and contents."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(str(p.relative_to(path)).encode() + b"\0")
            _hash_file(p, h)
    else:
        if not path.exists() and Path(str(path) + ".index").exists():  # a checkpoint prefix
            for p in sorted(path.parent.glob(path.name + ".*")):
                h.update(p.name.encode() + b"\0")
                _hash_file(p, h)
        else:
            _hash_file(path, h)
    return h.hexdigest()


def _hash_file(p: Path, h) -> None:
    file_sha256(p, into=h)


# --------------------------------------------------------------------------- dispatch

@contextlib.contextmanager
def open_checkpoint(path: str | os.PathLike, build_keras: Callable[[str, dict], object] | None = None,
                    trust_graph: bool = False) -> Iterator[Checkpoint]:
    """Open any supported checkpoint; temporary files (an unpacked zip) go when the block ends.
    ``build_keras(kind, config)``: the Keras reference model a nameless ``.weights.h5`` loads into.
    ``trust_graph``: the user's ``--trust-graph``: a whole-model ``.h5`` whose config names a class
    the release's models do not use is read anyway, and the checkpoint's SavedModel loads without
    its graph scan (``porting.graph_scan``; the load itself is ``crosscheck.tf_side``'s)."""
    with _open(Path(path), build_keras, trust_graph) as ck:
        ck.trust_graph = trust_graph
        yield ck


@contextlib.contextmanager
def _open(path: Path, build_keras, trust_graph: bool) -> Iterator[Checkpoint]:
    p = path
    if p.suffix == ".index":
        p = p.with_suffix("")
    if p.is_dir():
        if (p / "saved_model.pb").exists() or (p / "saved_model.pbtxt").exists():
            yield _read_savedmodel_dir(p, Path(path), "savedmodel")
            return
        raise ReaderError(f"{path}: folder is not a SavedModel (no saved_model.pb inside)")
    if p.is_file() and zipfile.is_zipfile(p):
        with tempfile.TemporaryDirectory(prefix="stylex-unzip-") as tmp:
            root = safe_extract(p, Path(tmp))
            yield _read_savedmodel_dir(root, p, "savedmodel-zip")
        return
    if p.is_file() and p.suffix in (".h5", ".hdf5", ".keras"):
        import h5py

        try:
            f = h5py.File(p, "r")
        except OSError as e:
            raise ReaderError(f"{path}: not a readable HDF5 file (truncated or corrupted?): "
                              f"{_first_line(e)}") from None
        with f:
            if not trust_graph:
                check_h5_config(p, f)
            yield _read_h5(p, f, build_keras)
        return
    if Path(str(p) + ".index").is_file():
        yield _read_tf_checkpoint(str(p), Path(path), "checkpoint")
        return
    if not p.exists():
        raise ReaderError(f"{path}: no such file or folder")
    if p.suffix == ".zip":
        raise ReaderError(f"{path}: not a valid zip file (truncated or corrupted?)")
    raise ReaderError(f"{path}: not a SavedModel folder, SavedModel zip, TF checkpoint "
                      "(prefix or .index) or Keras .h5 file")


# --------------------------------------------------------------------------- zip

def safe_extract(zip_path: Path, dest: Path) -> Path:
    """Extract a zip holding a SavedModel into ``dest``; return the SavedModel folder.

    Every entry is checked before anything is written: no absolute paths, no ``..``, no
    symbolic links, no names that resolve outside ``dest``, and no name that unpacks to another
    path than it reads or to an earlier entry's path (``graph_scan.zip_name_problem``: what is
    scanned is what is loaded).
    """
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ReaderError(f"{zip_path}: not a valid zip file: {e}") from None
    with zf:
        infos = zf.infolist()
        dest_real = os.path.realpath(dest)
        seen: set = set()
        for info in infos:
            name = info.filename
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ReaderError(f"{zip_path}: refusing to extract: entry {name!r} is a symbolic link")
            if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
                raise ReaderError(f"{zip_path}: refusing to extract: entry {name!r} is an absolute path")
            if ".." in Path(name.replace("\\", "/")).parts:
                raise ReaderError(f"{zip_path}: refusing to extract: entry {name!r} escapes the "
                                  "target folder ('..')")
            problem = zip_name_problem(name, seen)
            if problem:
                raise ReaderError(f"{zip_path}: refusing to extract: entry {name!r} {problem}")
            target = os.path.realpath(os.path.join(dest_real, name))
            if os.path.commonpath([dest_real, target]) != dest_real:
                raise ReaderError(f"{zip_path}: refusing to extract: entry {name!r} resolves "
                                  "outside the target folder")
        try:
            zf.extractall(dest)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise ReaderError(f"{zip_path}: corrupted zip: {e}") from None
    roots = sorted({p.parent for p in dest.rglob("saved_model.pb")}, key=lambda q: len(q.parts))
    if not roots:
        raise ReaderError(f"{zip_path}: zip holds no SavedModel (no saved_model.pb inside)")
    if len(roots) > 1:
        raise ReaderError(f"{zip_path}: zip holds several SavedModels: "
                          + ", ".join(str(r.relative_to(dest)) for r in roots))
    return roots[0]


# --------------------------------------------------------------------------- TF formats

def _read_savedmodel_dir(root: Path, source: Path, fmt: str) -> Checkpoint:
    prefix = root / "variables" / "variables"
    if not Path(str(prefix) + ".index").exists():
        raise ReaderError(f"{source}: SavedModel has no variables/variables.index")
    ck = _read_tf_checkpoint(str(prefix), source, fmt)
    ck.root = root
    return ck


def _read_tf_checkpoint(prefix: str, source: Path, fmt: str) -> Checkpoint:
    import tensorflow as tf  # only here: reading TF files needs TF, PyTorch users do not
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    try:
        reader = tf.train.load_checkpoint(prefix)
        key_shapes = reader.get_variable_to_shape_map()
        key_dtypes = reader.get_variable_to_dtype_map()
    except Exception as e:
        raise ReaderError(f"{source}: cannot read TF checkpoint (truncated or corrupted?): "
                          f"{_first_line(e)}") from None

    key_of: dict[str, str] = {}
    if "_CHECKPOINTABLE_OBJECT_GRAPH" in key_shapes:
        graph = trackable_object_graph_pb2.TrackableObjectGraph()
        try:
            graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
        except Exception as e:
            raise ReaderError(f"{source}: corrupted object graph: {_first_line(e)}") from None
        for node in graph.nodes:
            for attr in node.attributes:
                if attr.name != "VARIABLE_VALUE" or attr.checkpoint_key not in key_shapes:
                    continue
                name = normalize_name(attr.full_name or attr.checkpoint_key)
                if name in key_of and key_of[name] != attr.checkpoint_key:
                    raise ReaderError(f"{source}: two variables are named {name!r}; cannot tell "
                                      "them apart")
                key_of[name] = attr.checkpoint_key
    else:  # TF1 name-based checkpoint: the keys are the names
        key_of = {normalize_name(k): k for k in key_shapes}
    key_of = {n: k for n, k in key_of.items() if n not in _BOOKKEEPING}
    if not key_of:
        raise ReaderError(f"{source}: checkpoint holds no variables")

    shapes = {n: tuple(int(d) for d in key_shapes[k]) for n, k in key_of.items()}
    dtypes = {n: key_dtypes[k].as_numpy_dtype.__name__ for n, k in key_of.items()}

    def read(name: str) -> np.ndarray:
        try:
            value = reader.get_tensor(key_of[name])
        except Exception as e:
            raise ReaderError(f"{source}: cannot read variable {name!r} (truncated or corrupted "
                              f"checkpoint?): {_first_line(e)}") from None
        return np.asarray(value)

    return Checkpoint(source, fmt, shapes, dtypes, read)


KERAS3_LAYOUT = ("the `.weights.h5` layout that tf_keras and Keras 3 write by default (groups "
                 "layers/<class name>/vars/<i>), which does not carry the variables' names")


def _read_h5(path: Path, f, build_keras=None) -> Checkpoint:
    group = f["model_weights"] if "model_weights" in f else f
    if "layer_names" not in group.attrs:
        if "layers" in f and hasattr(f["layers"], "keys"):
            return _read_keras3_h5(path, f, build_keras)
        raise ReaderError(f"{path}: HDF5 file is not a Keras weights file (no 'layer_names', and not "
                          f"{KERAS3_LAYOUT})")
    datasets: dict[str, object] = {}
    for layer in group.attrs["layer_names"]:
        layer = layer.decode() if isinstance(layer, bytes) else str(layer)
        g = group[layer]
        for wn in g.attrs.get("weight_names", []):
            wn = wn.decode() if isinstance(wn, bytes) else str(wn)
            name = normalize_name(wn)
            if name in datasets:
                raise ReaderError(f"{path}: two weights are named {name!r}")
            datasets[name] = g[wn]
    if not datasets:
        raise ReaderError(f"{path}: Keras weights file holds no weights")
    shapes = {n: tuple(d.shape) for n, d in datasets.items()}
    dtypes = {n: np.dtype(d.dtype).name for n, d in datasets.items()}
    return Checkpoint(path, "h5", shapes, dtypes, lambda n: np.asarray(datasets[n][()]))


def _h5_shapes(f) -> dict[str, tuple]:
    out: dict[str, tuple] = {}

    def visit(name, obj):
        if hasattr(obj, "shape") and hasattr(obj, "dtype"):
            out[name] = tuple(obj.shape)
    f.visititems(visit)
    return out


def _numbered(shapes: dict, pattern: str) -> list[tuple]:
    """Shapes of ``pattern`` with ``{}`` replaced by '', '_1', '_2', ... (Keras' names for the
    n-th layer of one class), in creation order, as long as they exist."""
    out, k = [], 0
    while (shape := shapes.get(pattern.format("" if k == 0 else f"_{k}"))) is not None:
        out.append(shape)
        k += 1
    return out


def _keras3_config(path: Path, f) -> tuple[str, dict]:
    """The model kind and config of a nameless ``.weights.h5``, told from its layer structure and
    shapes (each kind's reference model in models_tf creates its layers in the release's order):

    - MobileNetV1: 15 'conv2d' groups, a 3x3x3 stem, a 1x1 head; widths and head from those;
    - the generator: 'layers/synthesis/torgbs/to_rgb*' (one per resolution, its width),
      'layers/mapping/dense/equalized_dense*' (depth, z size), the style dense layers (w size);
    - encoder and discriminator: 'layers/conv' (FromRGB: the top resolution's width),
      'layers/block*' (one per resolution r above 4, top first, each ending in r/2's width),
      'layers/conv_1' (Conv4x4: one more input channel with minibatch stddev, i.e. the
      discriminator), 'out' (latent or label size)."""
    groups = set(f["layers"].keys())
    shapes = _h5_shapes(f)
    convs = sorted(0 if n == "conv2d" else int(n[len("conv2d_"):])
                   for n in groups if n == "conv2d" or (n.startswith("conv2d_") and n[len("conv2d_"):].isdigit()))
    stem, dw = shapes.get("layers/conv2d/vars/0"), shapes.get("layers/depthwise_conv2d/vars/0")
    head = shapes.get(f"layers/conv2d_{convs[-1]}/vars/0" if convs and convs[-1] else "layers/conv2d/vars/0")
    if len(convs) == 15 and dw and stem and head and stem[:3] == (3, 3, 3) and head[:2] == (1, 1):
        return "classifier", {"alpha": stem[3] / 32, "depth_multiplier": int(dw[3]), "num_classes": int(head[3]),
                              **CLASSIFIER_ASSUMED, "input_size": 0,
                              "strided_padding": "explicit" if "zero_padding2d" in groups else "same"}
    rgbs = _numbered(shapes, "layers/synthesis/torgbs/to_rgb{}/conv/vars/0")
    mapping = _numbered(shapes, "layers/mapping/dense/equalized_dense{}/vars/0")
    style = shapes.get("style_vector_calculator/style_dense_blocks/style_dense_block/dense/vars/0")
    if rgbs and mapping and style:
        return "generator", {"resolution": 4 * 2 ** (len(rgbs) - 1), "channels": [int(s[2]) for s in rgbs],
                             "z_dim": int(mapping[0][0]), "w_dim": int(style[0]),
                             "label_size": int(style[0]) - int(mapping[-1][1]), "mapping_layers": len(mapping),
                             "mapping_lr_mul": MAPPING_LR_MUL, "train_noise": GENERATOR_TRAIN_NOISE}
    blocks = _numbered(shapes, "layers/block{}/conv1/vars/0")
    from_rgb, conv4, out = shapes.get("layers/conv/vars/0"), shapes.get("layers/conv_1/vars/0"), shapes.get("out/vars/0")
    if blocks and from_rgb and conv4 and out and from_rgb[:3] == (1, 1, 3):
        widths = [int(conv4[3])] + [int(b[3]) for b in reversed(blocks[:-1])] + [int(from_rgb[3])]
        config = {"resolution": 4 * 2 ** len(blocks), "channels": widths}
        if conv4[2] == widths[0] + 1:
            return "discriminator", {**config, "label_size": int(out[1]), "mbstd_group": MBSTD_GROUP}
        return "encoder", {**config, "latent_size": int(out[1])}
    raise ReaderError(
        f"{path}: {KERAS3_LAYOUT}; its structure is none of the release's models (MobileNetV1, the StylEx "
        f"generator, encoder or discriminator as models_tf builds them: this file has {len(groups)} layer groups "
        f"under 'layers/'). To convert this model, save it with model.save_weights('x.h5', save_format='h5') "
        "(names kept) or as a SavedModel")


def _read_keras3_h5(path: Path, f, build_keras=None) -> Checkpoint:
    """The names are not in the file, only each layer's class and creation order: tell the model
    and its config from the structure (``_keras3_config``), build that reference model
    (``build_keras``), load the file into it with Keras' own loader, then read the model's named
    variables."""
    kind, config = _keras3_config(path, f)
    if build_keras is None:
        raise ReaderError(f"{path}: {KERAS3_LAYOUT}; reading it needs the TF reference model of the {kind}: "
                          "convert it with `cli.py convert`, or pass build_keras=crosscheck.tf_side.build_keras")
    model = build_keras(kind, config)
    try:
        model.load_weights(str(path))
    except Exception as e:
        raise ReaderError(f"{path}: {KERAS3_LAYOUT}; it looks like the {kind} ({config}) but Keras cannot load it "
                          f"into one: {_first_line(e)}. Save it with save_format='h5' or as a SavedModel") from None
    values = {normalize_name(v.name): v.numpy() for v in model.variables}
    return Checkpoint(path, "keras3-h5", {n: tuple(a.shape) for n, a in values.items()},
                      {n: a.dtype.name for n, a in values.items()}, values.__getitem__)
