"""Release files are data: a SavedModel's graph and a Keras file's classes are checked before
anything runs them (``porting.graph_scan``, docs/security.md).

The reference releases pass the scan and are where its allowlists come from; a SavedModel whose
call writes a file is refused by ``verify`` and the file is never written (and with
``--trust-graph`` the same file *is* written: the attack is real, so the refusal is what stops
it); an op type the list lacks, a ``Lambda`` in the Keras metadata or in a whole-model ``.h5``,
and a corrupted ``saved_model.pb`` are each one line, exit 2.
"""
from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from porting import graph_scan
from porting.readers import open_checkpoint
from test_readers_and_bad_input import assert_bad_input as assert_one_line_refusal   # exit 2, one line

TARGET_NAME = "written_by_the_graph.txt"


def rezip(folder: Path, out_zip: Path) -> Path:
    from crosscheck.reference_release import zip_savedmodel

    return zip_savedmodel(folder, out_zip, "mobilenet.savedmodel")


@pytest.fixture(scope="module")
def leaky_release(small_classifier, tmp_path_factory):
    """A release folder holding one mobilenet.savedmodel.zip: the small reference classifier
    behind a layer whose call writes a file (``tf.io.write_file``), saved as Keras saves any
    model; converted (convert reads only variables, so it converts). ``(folder, weights, target)``."""
    import tensorflow as tf
    import tf_keras as keras

    from porting.release import convert_release

    model, config, _ = small_classifier
    base = tmp_path_factory.mktemp("leaky")
    target = base / TARGET_NAME

    class Leak(keras.layers.Layer):
        def call(self, x):
            tf.io.write_file(str(target), "a file the release's graph wrote")
            return x

    inputs = keras.Input((32, 32, 3))
    leaky = keras.Model(inputs, model(Leak()(inputs)))
    folder = base / "mobilenet.savedmodel"
    leaky.save(str(folder), save_format="tf", include_optimizer=False)
    target.unlink(missing_ok=True)            # tracing ran the call once
    rel = base / "release"
    rel.mkdir()
    rezip(folder, rel / "mobilenet.savedmodel.zip")
    shutil.rmtree(folder)
    weights = base / "weights"
    convert_release(rel, weights, progress=False)
    assert not target.exists()
    return rel, weights, target


def test_reference_release_passes_and_is_where_the_allowlists_come_from(release):
    """Every model of a reference release passes; together they use exactly the allowlisted op
    types (call functions, the save function and the restore function apart) and Keras classes:
    the lists hold nothing the release does not need, and the release nothing the lists lack."""
    _, ref, _ = release
    found = {"compute": set(), "save": set(), "restore": set(), "classes": set()}
    for zip_path in sorted(ref.glob("*.savedmodel.zip")):
        s = graph_scan.check(zip_path)
        assert s.compute and s.save and s.restore and s.classes, f"{zip_path.name}: the survey found nothing"
        for role in ("compute", "save", "restore"):
            found[role] |= s.ops(role)
        found["classes"] |= s.classes
    assert len(list(ref.glob("*.savedmodel.zip"))) == 4
    assert found["compute"] == graph_scan.COMPUTE_OPS
    assert found["save"] - found["compute"] == graph_scan.SAVE_OPS
    assert found["restore"] - found["compute"] == graph_scan.RESTORE_OPS
    assert found["classes"] == graph_scan.KERAS_CLASSES
    assert "SaveV2" in found["save"] and "SaveV2" not in found["restore"] | found["compute"]


def test_the_docs_table_lists_the_allowlists():
    text = (ROOT / "docs" / "security.md").read_text()

    def table(heading: str) -> set:
        part = text.split(heading, 1)[1].split("\n## ", 1)[0]
        return {m for row in part.splitlines() if row.startswith("| `") for m in re.findall(r"`([^`]+)`", row.split("|")[1])}

    assert table("## The op types of the release's models") == graph_scan.COMPUTE_OPS
    assert table("## The op types of the save function") == graph_scan.SAVE_OPS
    assert table("## The op types of the restore function") == graph_scan.RESTORE_OPS
    assert table("## The Keras classes") == graph_scan.KERAS_CLASSES


def test_a_graph_that_writes_a_file_is_refused_and_the_file_never_written(leaky_release):
    rel, weights, target = leaky_release
    folder = run_cli("verify", "--tf-ckpt", rel, "--weights", weights)
    assert_one_line_refusal(folder, "mobilenet.savedmodel.zip", "'WriteFile'", "reads or writes files",
                            "function '__inference", "--trust-graph")
    one = run_cli("verify", "--tf-ckpt", rel / "mobilenet.savedmodel.zip", "--weights", weights / "mobilenet.safetensors")
    assert_one_line_refusal(one, "mobilenet.savedmodel.zip", "'WriteFile'")
    export = run_cli("export-onnx", "--weights", weights, "--out", rel.parent / "onnx", "--tf-ckpt", rel)
    assert_one_line_refusal(export, "'WriteFile'")
    assert not target.exists()


def test_trusting_the_same_graph_runs_it(leaky_release):
    """The control: opened with trust_graph (what --trust-graph does), the same SavedModel loads,
    and calling it writes the file. So the scan is what kept the file from being written."""
    import numpy as np

    from crosscheck.tf_side import load_savedmodel

    rel, _, target = leaky_release
    with open_checkpoint(rel / "mobilenet.savedmodel.zip", trust_graph=True) as ck:
        saved = load_savedmodel(ck)
        saved(np.zeros((1, 32, 32, 3), np.float32), training=False)
    try:
        assert target.exists(), "the leaky graph did not write its file: the refusal test proves nothing"
    finally:
        target.unlink(missing_ok=True)


def _edited(small_classifier, tmp_path, edit) -> Path:
    """The small classifier's SavedModel with ``edit(folder)`` applied, zipped."""
    _, _, paths = small_classifier
    folder = tmp_path / "mobilenet.savedmodel"
    shutil.copytree(paths["savedmodel"], folder)
    edit(folder)
    return rezip(folder, tmp_path / "mobilenet.savedmodel.zip")


def test_an_op_the_list_lacks_is_refused(small_classifier, tmp_path):
    """One ReLU6 of the classifier's call function renamed to Erfinv, a pure math op that the
    release's models do not use: refused, naming it."""
    from tensorflow.core.protobuf import saved_model_pb2

    def edit(folder):
        sm = saved_model_pb2.SavedModel()
        sm.ParseFromString((folder / "saved_model.pb").read_bytes())
        node = next(n for f in sm.meta_graphs[0].graph_def.library.function for n in f.node_def if n.op == "Relu6")
        node.op = "Erfinv"
        (folder / "saved_model.pb").write_bytes(sm.SerializeToString())

    path = _edited(small_classifier, tmp_path, edit)
    with pytest.raises(graph_scan.GraphRefused, match=r"holds op 'Erfinv' \(not one of the release's op types\)"):
        graph_scan.check(path)
    assert graph_scan.check(small_classifier[2]["zip"]).classes, "control: the unedited file passes"


@pytest.mark.parametrize("where", ["keras_metadata.pb", "object graph"])
def test_a_lambda_in_the_keras_metadata_is_refused(small_classifier, tmp_path, where):
    """In keras_metadata.pb, or, where that file is absent, in the object graph's nodes, where
    Keras' loader reads the older SavedModels' metadata."""
    import json

    from tensorflow.core.protobuf import saved_model_pb2
    try:
        from tf_keras.protobuf import saved_metadata_pb2
    except ImportError:
        from tf_keras.src.protobuf import saved_metadata_pb2

    def edit(folder):
        meta = saved_metadata_pb2.SavedMetadata()
        meta.ParseFromString((folder / "keras_metadata.pb").read_bytes())
        node = next(n for n in meta.nodes if json.loads(n.metadata).get("class_name") == "Activation")
        lam = node.metadata.replace('"class_name": "Activation"', '"class_name": "Lambda"')
        assert "Lambda" in lam
        if where == "keras_metadata.pb":
            node.metadata = lam
            (folder / "keras_metadata.pb").write_bytes(meta.SerializeToString())
            return
        (folder / "keras_metadata.pb").unlink()
        sm = saved_model_pb2.SavedModel()
        sm.ParseFromString((folder / "saved_model.pb").read_bytes())
        sm.meta_graphs[0].object_graph_def.nodes[node.node_id].user_object.metadata = lam
        (folder / "saved_model.pb").write_bytes(sm.SerializeToString())

    path = _edited(small_classifier, tmp_path, edit)
    with pytest.raises(graph_scan.GraphRefused, match="Keras class 'Lambda' .a Lambda layer carries Python code"):
        graph_scan.check(path)


def test_a_corrupted_saved_model_pb_is_one_line(leaky_release, small_classifier, tmp_path):
    _, weights, _ = leaky_release
    rel = tmp_path / "release"
    rel.mkdir()
    with zipfile.ZipFile(small_classifier[2]["zip"]) as src, zipfile.ZipFile(rel / "mobilenet.savedmodel.zip", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data[: len(data) // 3] if info.filename.endswith("saved_model.pb") else data)
    result = run_cli("verify", "--tf-ckpt", rel, "--weights", weights)
    assert_one_line_refusal(result, "mobilenet.savedmodel.zip", "saved_model.pb", "not a SavedModel protobuf")


def test_a_lambda_in_a_whole_model_h5_is_refused_unless_trusted(tmp_path):
    import tf_keras as keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: 2 * x), keras.layers.Dense(2)])
    path = tmp_path / "whole.h5"
    model.save(str(path), save_format="h5")
    out = tmp_path / "out" / "w.safetensors"
    for command in ("convert", "inspect"):
        args = ["--tf-ckpt", path] + (["--out", out] if command == "convert" else [])
        assert_one_line_refusal(run_cli(command, *args), "whole.h5", "'Lambda'", "--trust-graph")
    assert not out.parent.exists()
    trusted = run_cli("convert", "--tf-ckpt", path, "--out", out, "--trust-graph")
    assert_one_line_refusal(trusted, "whole.h5", "cannot tell which model")   # read, then not the release's


@pytest.mark.parametrize("hidden", ["mobilenet.savedmodel/saved_model.pb/.", "mobilenet.savedmodel/./keras_metadata.pb",
                                    "mobilenet.savedmodel//saved_model.pb", "mobilenet.savedmodel/saved_model.pb"])
def test_a_zip_entry_that_unpacks_under_another_name_is_refused(leaky_release, small_classifier, tmp_path, hidden):
    """A second graph stored under a name that Python's unzip writes over the scanned file's
    ('x/saved_model.pb/.', 'x/./keras_metadata.pb', an empty part, the same name twice: found by a
    review, where verify then passed and the hidden graph wrote its file): refused by the scan
    and by the unzip, before anything is loaded; the load scans the unpacked folder in any case."""
    import warnings

    rel, weights, target = leaky_release
    with zipfile.ZipFile(rel / "mobilenet.savedmodel.zip") as leaky:
        payload = leaky.read("mobilenet.savedmodel/" + ("keras_metadata.pb" if "keras" in hidden else "saved_model.pb"))
    path = tmp_path / "mobilenet.savedmodel.zip"
    shutil.copy(small_classifier[2]["zip"], path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # zipfile warns of the duplicate name
        with zipfile.ZipFile(path, "a") as z:
            z.writestr(zipfile.ZipInfo(hidden), payload)
    with pytest.raises(graph_scan.GraphRefused, match="zip entry"):
        graph_scan.check(path)
    with pytest.raises(Exception, match="refusing to extract"):
        with open_checkpoint(path):
            pass
    assert not target.exists()


def _edit_pb(small_classifier, tmp_path, change) -> Path:
    from tensorflow.core.protobuf import saved_model_pb2

    def edit(folder):
        sm = saved_model_pb2.SavedModel()
        sm.ParseFromString((folder / "saved_model.pb").read_bytes())
        change(sm.meta_graphs[0].graph_def.library)
        (folder / "saved_model.pb").write_bytes(sm.SerializeToString())
    return _edited(small_classifier, tmp_path, edit)


def test_structure_the_scan_cannot_follow_is_refused(small_classifier, tmp_path):
    """A function attribute that lets TF swap a function for another (``api_implements``), and a
    gradient function (TF may call it in place of a scanned one): the release has neither."""
    def swap(library):
        library.function[0].attr["api_implements"].s = b"elsewhere"

    def gradient(library):
        g = library.gradient.add()
        g.function_name, g.gradient_func = library.function[0].signature.name, library.function[1].signature.name

    with pytest.raises(graph_scan.GraphRefused, match="has attribute 'api_implements'"):
        graph_scan.check(_edit_pb(small_classifier, tmp_path / "a", swap))
    with pytest.raises(graph_scan.GraphRefused, match="defines gradient functions"):
        graph_scan.check(_edit_pb(small_classifier, tmp_path / "b", gradient))


def test_keras_keys_that_name_code_are_refused():
    assert graph_scan.config_classes({"class_name": "ReLU", "config": {"activation": {
        "module": "os", "class_name": "function", "config": "system"}}}) >= {"<module=os>", "function"}
    assert {c for c in graph_scan.config_classes({"class_name": 3})} == {"<class_name=3>"}
