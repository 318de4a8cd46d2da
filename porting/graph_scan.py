"""Release files are data: a SavedModel's graph is read, never run, before anything loads it.

A SavedModel is a program: loading it with ``tf_keras.models.load_model`` and calling it runs
whatever ops its graph holds, with the user's rights (TensorFlow's own security guidance says
so). ``convert`` reads only variables; ``verify``, the round trip, ``export-onnx --tf-ckpt`` and
the benches call the release's SavedModels as the notebook does. Before they do, ``check``
reads ``saved_model.pb`` as a protobuf (no TF execution) and ``keras_metadata.pb`` as JSON, and
refuses, in one line naming the file, the function and the op:

* any op type outside ``COMPUTE_OPS`` (the op types the reference release's models use, every
  kind, table in docs/security.md) in any function of the graph's library or in the graph
  itself, except the SavedModel's own save function (reached only from the saver's save node),
  which may also use ``SAVE_OPS`` (``SaveV2`` and the file names), and its restore function
  (reached only from the restore node), which may also use ``RESTORE_OPS`` (``RestoreV2``). TF
  writes both into every SavedModel; ``load_model`` calls neither (a TF1 SavedModel's restore
  function is run by the loader, hence no ``SaveV2`` there);
* any Keras class outside ``KERAS_CLASSES`` in the Keras metadata, ``keras_metadata.pb`` or the
  older copy in the object graph's nodes (a ``Lambda`` carries Python byte code, a
  ``TFOpLambda`` names any TF function; Keras builds its built-in classes from this config when
  it loads the model).

``check_h5_config`` does the same for a whole-model Keras ``.h5`` file's ``model_config``
(``porting.readers`` calls it; weights-only files hold no config). ``--trust-graph`` skips both,
with a warning (``stylex_port.cli``).

Both allowlists are facts of the reference release: the real release's op types and class names
are an assumption (docs/release-assumptions.md), kept here and nowhere else. ``survey`` lists
what a SavedModel uses, which is how the tables were made (``parity_tests/test_graph_scan.py``
holds every reference release to them).

Layer: ``porting``. TensorFlow's protobuf classes are imported (as the checkpoint reader does);
nothing is executed.
"""
from __future__ import annotations

import json
import posixpath
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from porting.errors import ReaderError

# The op types of every function the reference release's four models hold (generator, encoder,
# discriminator, classifier with either padding; docs/security.md lists what each is).
COMPUTE_OPS = frozenset({
    "AddV2", "AssignVariableOp", "BiasAdd", "ConcatV2", "Const", "Conv2D", "Conv2DBackpropInput",
    "DepthwiseConv2dNative", "FusedBatchNormV3", "GreaterEqual", "Identity", "MatMul", "Mean",
    "Minimum", "Mul", "NoOp", "Pack", "Pad", "PartitionedCall", "Placeholder", "RandomStandardNormal",
    "RandomUniform", "ReadVariableOp", "Relu6", "Reshape", "Rsqrt", "SelectV2", "Shape", "Sqrt",
    "Square", "StatefulPartitionedCall", "StridedSlice", "Sub", "Sum", "Tile", "Transpose",
    "VarHandleOp",
})
# Used only by the save function TF writes into every SavedModel, and by its restore function.
SAVE_OPS = frozenset({
    "DisableCopyOnRead", "MergeV2Checkpoints", "SaveV2", "Select", "ShardedFilename", "StaticRegexFullMatch",
    "StringJoin",
})
RESTORE_OPS = frozenset({"RestoreV2"})
# Every ``class_name`` in the reference release's Keras metadata: layers, models, nested configs
# (initializers), and the shapes and specs Keras records of each call.
KERAS_CLASSES = frozenset({
    "Activation", "BatchNormalization", "Bias", "Block", "ConstBlock", "Conv", "Conv2D",
    "DepthwiseConv2D", "Discriminator", "Dropout", "Encoder", "EqualizedDense", "Functional",
    "Generator", "GeneratorBlock", "GeneratorLayer", "GlobalAveragePooling2D", "GlorotUniform",
    "InputLayer", "InputSpec", "Mapping", "ModulatedConv2D", "Ones", "ReLU", "Reshape",
    "StyleDenseBlock", "StyleVectorCalculator", "Synthesis", "TensorShape", "ToRGB", "TypeSpec",
    "ZeroPadding2D", "Zeros", "__tuple__",
})

# The attributes of the reference release's library functions (``api_implements`` and the like
# let TF's optimiser swap a function for another).
FUNCTION_ATTRS = frozenset({"_input_shapes", "_construction_context"})
# Keys of the newer Keras serialisation that name code (a module to import, a registered name that
# wins over ``class_name``, a lambda's byte code); the release's metadata has none.
CODE_KEYS = frozenset({"module", "registered_name", "function_type", "__lambda__"})

# Why an op is refused, where it is one of the well-known dangerous kinds.
_WHY = {
    **dict.fromkeys(("ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst", "LoadAndRemapMatrix",
                     "Save", "SaveSlices", "SaveV2", "Restore", "RestoreSlice", "RestoreV2",
                     "MergeV2Checkpoints", "ShardedFilename", "FixedLengthRecordReaderV2",
                     "TFRecordReaderV2", "TextLineReaderV2", "WholeFileReaderV2", "DatasetToTFRecord"),
                    "reads or writes files"),
    **dict.fromkeys(("PyFunc", "PyFuncStateless", "EagerPyFunc"), "runs Python code"),
    **dict.fromkeys(("PrintV2", "Print", "WriteSummary", "WriteScalarSummary", "WriteImageSummary",
                     "WriteHistogramSummary", "CreateSummaryFileWriter", "CreateSummaryDbWriter",
                     "FlushSummaryWriter"), "prints or writes summaries"),
}
_CLASS_WHY = {"Lambda": "a Lambda layer carries Python code", "TFOpLambda": "it calls any TF function by name",
              "SlicingOpLambda": "it calls any TF function by name"}
MAX_PB = 1 << 31   # protobuf's own limit on one message


class GraphRefused(ReaderError):
    """A SavedModel graph or Keras config that holds something the release's models do not."""


@dataclass
class Survey:
    """What one SavedModel holds: op types by role, and the Keras classes of its metadata."""
    source: str
    compute: dict[str, set] = field(default_factory=dict)   # function (or "the graph") -> op types
    save: dict[str, set] = field(default_factory=dict)      # the save function(s) -> op types
    restore: dict[str, set] = field(default_factory=dict)   # the restore function(s) -> op types
    classes: set = field(default_factory=set)
    problems: list = field(default_factory=list)   # structure the scan refuses to reason about

    def ops(self, role: str = "compute") -> set:
        return set().union(*getattr(self, role).values()) if getattr(self, role) else set()


def zip_name_problem(name: str, seen: set) -> str | None:
    """What is wrong with a zip entry's name, if anything: one that unpacks to another path than
    it reads (an empty or '.' part, a backslash) or to the same path as an earlier entry would let
    a file be scanned under one name and loaded under another. ``seen``: the normalised names so
    far (updated)."""
    if "\\" in name:
        return "holds a backslash"
    parts = name.split("/")
    if any(p in ("", ".") for p in (parts[:-1] if name.endswith("/") else parts)):
        return "has an empty or '.' part"
    key = posixpath.normpath(name)
    if key in seen:
        return "names a path an earlier entry already names"
    seen.add(key)
    return None


def _read_members(path: Path, shown: str | None = None) -> tuple[str, bytes, bytes | None, str]:
    """(where, saved_model bytes, keras_metadata bytes or None, format) of a SavedModel folder or
    a zip of one, read without unpacking anything to disk. ``shown``: the name the user gave
    (the zip a folder was unpacked from), for messages."""
    path = Path(path)
    if path.is_dir():
        for name, fmt in (("saved_model.pb", "pb"), ("saved_model.pbtxt", "pbtxt")):
            if (path / name).is_file():
                meta = path / "keras_metadata.pb"
                return (f"{shown}:{name}" if shown else str(path / name), (path / name).read_bytes(),
                        meta.read_bytes() if meta.is_file() else None, fmt)
        raise ReaderError(f"{shown or path}: folder is not a SavedModel (no saved_model.pb inside)")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ReaderError(f"{path}: not a valid zip file: {e}") from None
    with zf:
        seen: set = set()
        for info in zf.infolist():
            problem = zip_name_problem(info.filename, seen)
            if problem:
                raise GraphRefused(f"{path}: refused: zip entry {info.filename!r} {problem}")
        pbs = [i for i in zf.infolist() if i.filename.rsplit("/", 1)[-1] in ("saved_model.pb", "saved_model.pbtxt")]
        if len(pbs) != 1:
            raise ReaderError(f"{path}: zip holds {len(pbs)} SavedModel graphs (saved_model.pb); expected one")
        info = pbs[0]
        if info.file_size > MAX_PB:
            raise GraphRefused(f"{path}: {info.filename} is {info.file_size} bytes, over protobuf's 2 GiB limit")
        prefix = info.filename[: -len(info.filename.rsplit("/", 1)[-1])]
        try:
            data = zf.read(info)
            meta = zf.read(prefix + "keras_metadata.pb") if prefix + "keras_metadata.pb" in zf.namelist() else None
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise ReaderError(f"{path}: corrupted zip: {e}") from None
        return f"{path}:{info.filename}", data, meta, "pbtxt" if info.filename.endswith("pbtxt") else "pb"


def _parse_savedmodel(where: str, data: bytes, fmt: str):
    from google.protobuf import text_format
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    try:
        if fmt == "pbtxt":
            text_format.Parse(data.decode("utf-8"), sm)
        else:
            sm.ParseFromString(data)
    except (DecodeError, text_format.ParseError, UnicodeDecodeError, ValueError) as e:
        raise ReaderError(f"{where}: not a SavedModel protobuf (truncated or corrupted?): "
                          f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
    if not sm.meta_graphs:
        raise ReaderError(f"{where}: not a SavedModel protobuf (truncated or corrupted?): it holds no graph")
    return sm


def _calls(node, functions: dict) -> set:
    """Library functions a node calls: by its op (a function called directly) or by its
    attributes, however nested (a function attribute's own attributes)."""
    out = {node.op} & functions.keys()
    todo = list(node.attr.values())
    while todo:
        attr = todo.pop()
        for f in ([attr.func] if attr.HasField("func") else []) + list(attr.list.func):
            out.add(f.name)
            todo.extend(f.attr.values())
    return out


def _closure(roots: set, functions: dict) -> set:
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        for node in functions[name].node_def:
            todo.extend(_calls(node, functions) - seen)
    return seen


def _node_name(tensor: str) -> str:
    return tensor.lstrip("^").split(":")[0]


def survey(path: Path, shown: str | None = None) -> Survey:
    """Every op type of a SavedModel (folder or zip), by role, its Keras classes, and what in its
    structure the scan cannot follow (``problems``)."""
    where, data, meta, fmt = _read_members(Path(path), shown)
    sm = _parse_savedmodel(where, data, fmt)
    out = Survey(where)
    for mg in sm.meta_graphs:
        library = mg.graph_def.library
        functions = {f.signature.name: f for f in library.function}
        if len(library.gradient) or len(library.registered_gradients):
            out.problems.append("its graph defines gradient functions (the release's models define none, and "
                                "TF may call one in place of a scanned function)")
        for f in library.function:
            odd = sorted(set(f.attr) - FUNCTION_ATTRS)
            if odd:
                out.problems.append(f"function {f.signature.name!r} has attribute {odd[0]!r} (the release's "
                                    f"functions have only {', '.join(sorted(FUNCTION_ATTRS))}; some attributes "
                                    "let TF swap the function for another)")
        role_of_node = {_node_name(mg.saver_def.save_tensor_name): "save",
                        _node_name(mg.saver_def.restore_op_name): "restore"}
        roots = {"save": set(), "restore": set(), "compute": set()}
        for node in mg.graph_def.node:
            roots[role_of_node.get(node.name, "compute")].update(_calls(node, functions))
        og = mg.object_graph_def
        roots["compute"].update(og.concrete_functions.keys())
        for node in og.nodes:
            roots["compute"].update(node.function.concrete_functions)
            if node.bare_concrete_function.concrete_function_name:
                roots["compute"].add(node.bare_concrete_function.concrete_function_name)
            if node.WhichOneof("kind") == "user_object" and node.user_object.metadata:
                out.classes |= _json_classes(where, node.user_object.metadata)   # Keras' older metadata
        reach = {role: _closure(r, functions) for role, r in roots.items()}
        out.compute.setdefault("the graph", set()).update(
            n.op for n in mg.graph_def.node if n.op not in functions)
        for name, f in functions.items():
            ops = {n.op for n in f.node_def if n.op not in functions}
            # a function any other root reaches is held to the compute list; one both saver nodes
            # reach, to the restore list (the loader may run the restore function)
            role = ("compute" if name in reach["compute"] or name not in reach["save"] | reach["restore"]
                    else "restore" if name in reach["restore"] else "save")
            getattr(out, role).setdefault(name, set()).update(ops)
    if meta is not None:
        out.classes |= keras_metadata_classes(where.replace("saved_model.pb", "keras_metadata.pb"), meta)
    return out


def keras_metadata_classes(where: str, data: bytes) -> set:
    """Every ``class_name`` in a SavedModel's ``keras_metadata.pb`` (each node's JSON, nested
    configs included), read as data."""
    try:
        from tf_keras.protobuf import saved_metadata_pb2
    except ImportError:    # tf_keras moved its protobufs once
        from tf_keras.src.protobuf import saved_metadata_pb2
    from google.protobuf.message import DecodeError

    meta = saved_metadata_pb2.SavedMetadata()
    try:
        meta.ParseFromString(data)
    except DecodeError as e:
        raise ReaderError(f"{where}: not Keras metadata (truncated or corrupted?): {type(e).__name__}") from None
    return set().union(set(), *(_json_classes(where, n.metadata) for n in meta.nodes))


def _json_classes(where: str, text: str) -> set:
    try:
        return config_classes(json.loads(text))
    except (ValueError, TypeError) as e:
        raise ReaderError(f"{where}: Keras metadata that is not JSON (corrupted?): {type(e).__name__}") from None


def config_classes(config) -> set:
    """Every ``class_name`` of a Keras config (a JSON value), however deep; a key that names code
    another way (``CODE_KEYS``) or a ``class_name`` that is not a string is returned as a class
    name no list holds (``<module=os>``), so that it is refused like one."""
    out, todo = set(), [config]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            if "class_name" in item:
                out.add(item["class_name"] if isinstance(item["class_name"], str) else f"<class_name={item['class_name']!r:.40}>")
            out.update(f"<{k}={str(item[k])[:40]}>" for k in CODE_KEYS & item.keys())
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return out


TRUST_HINT = "--trust-graph runs it anyway"


def _refuse_class(where: str, name: str) -> GraphRefused:
    why = _CLASS_WHY.get(name, "not one of the release's classes")
    return GraphRefused(f"{where}: refused before anything runs: Keras class {name!r} ({why}); "
                        f"the release's models use only the classes of docs/security.md; {TRUST_HINT}")


def check(path: Path, shown: str | None = None) -> Survey:
    """Refuse a SavedModel (folder or zip) whose graph holds an op or whose Keras metadata holds
    a class the release's models do not use (``GraphRefused``, one line); its ``Survey`` if none.
    ``shown``: the name to give in messages (the zip a folder was unpacked from)."""
    s = survey(path, shown)
    if s.problems:
        raise GraphRefused(f"{s.source}: refused before anything runs: {s.problems[0]}; {TRUST_HINT}")
    for role, allowed in (("compute", COMPUTE_OPS), ("save", COMPUTE_OPS | SAVE_OPS),
                          ("restore", COMPUTE_OPS | RESTORE_OPS)):
        for function, ops in sorted(getattr(s, role).items()):
            bad = sorted(ops - allowed, key=lambda op: (op not in _WHY, op))   # the dangerous first
            if bad:
                why = _WHY.get(bad[0], "not one of the release's op types")
                more = f" (and {len(bad) - 1} more: {', '.join(bad[1:4])}{'...' if len(bad) > 4 else ''})" if len(bad) > 1 else ""
                raise GraphRefused(f"{s.source}: refused before anything runs: function {function!r} holds op "
                                   f"{bad[0]!r} ({why}){more}; the release's models use only the ops of "
                                   f"docs/security.md; {TRUST_HINT}")
    bad = sorted(s.classes - KERAS_CLASSES, key=lambda c: (c not in _CLASS_WHY, c))
    if bad:
        raise _refuse_class(s.source.replace("saved_model.pb", "keras_metadata.pb"), bad[0])
    return s


def check_h5_config(path: Path, f) -> None:
    """Refuse a Keras ``.h5`` (an open ``h5py.File``) whose ``model_config`` names a class the
    release's models do not use; weights-only files have no config and pass."""
    raw = f.attrs.get("model_config")
    if raw is None:
        return
    try:
        config = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
    except (ValueError, UnicodeDecodeError) as e:
        raise ReaderError(f"{path}: model_config is not JSON (corrupted?): {type(e).__name__}") from None
    bad = sorted(config_classes(config) - KERAS_CLASSES, key=lambda c: (c not in _CLASS_WHY, c))
    if bad:
        raise _refuse_class(f"{path}: model_config", bad[0])
