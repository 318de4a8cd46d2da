"""The reproduction studies' analyses on the port (issue 13): Wu et al.'s selection, the
flip-rate experiment, GANSpace edits through TF and PyTorch, and the discriminator filter in
both AttFind backends. On the 32 px reference release with a planted attribute."""
from __future__ import annotations

import json

import numpy as np
import pytest

from stylex_port.analyses.wu import WuSelection, wu_ranking
from attfind import selection as sel
from attfind import sufficiency
from attfind.discriminator_filter import DISCRIMINATOR_THRESHOLD, DiscriminatorFilter
from conftest import needs_real_dlatents, run_cli


def render_tf(generator, w_layers: np.ndarray, batch: int = 16) -> np.ndarray:
    """Images (unclamped, NCHW) from per-layer w ``[N, L, D]`` through the notebook's API
    (``effects_tf.style_vectors``, then ``g_synthesis``), in the dtype of ``w_layers``. Works for
    any object with that API."""
    from attfind.effects_tf import style_vectors

    w_layers = np.asarray(w_layers)
    return np.concatenate([np.asarray(generator.g_synthesis(style_vectors(generator, w_layers[i:i + batch]),
                                                             training=False))
                           for i in range(0, len(w_layers), batch)])


# --------------------------------------------------------------------------- Wu et al.

def test_wu_finds_the_coordinate_the_class_depends_on():
    rng = np.random.default_rng(0)
    styles = rng.normal(size=(200, 6))
    p1 = 1 / (1 + np.exp(-4 * styles[:, 3]))          # class 1 where coordinate 3 is high
    probs = np.stack([1 - p1, p1], axis=1)
    r1, rec1 = wu_ranking(styles, probs, 1)
    r0, rec0 = wu_ranking(styles, probs, 0)
    assert r1[0][:2] == (1, 3) and r0[0][:2] == (0, 3)     # up for class 1, down for class 0
    assert abs(r1[0][2]) > 3 * abs(r1[1][2])
    # auto: the top 2% of 200 is 4 images, fewer than 5: the threshold rule takes over
    assert rec1["rule"].startswith("p > 0.9") and rec1["num_images"] == int((p1 > 0.9).sum())
    _, top = wu_ranking(styles, probs, 1, WuSelection("top", fraction=0.05))
    assert top["rule"] == "top 0.05" and top["num_images"] == 10
    with pytest.raises(ValueError, match="no image has a probability above 1 "):
        wu_ranking(styles, probs, 1, WuSelection("threshold", threshold=1.0))
    flat = styles.copy()
    flat[:, 2] = 1.0                                       # a coordinate that does not vary scores 0
    assert dict(((j, z) for _, j, z in wu_ranking(flat, probs, 1)[0]))[2] == 0.0


# --------------------------------------------------------------------------- flip rate


@pytest.fixture(scope="module")
def flip(attfind_release, attfind_run, tmp_path_factory):
    """``cli.py flip-rate`` reading the effect cache of ``cli.py attfind`` (``attfind_run``)."""
    ref, weights = attfind_release
    out = tmp_path_factory.mktemp("flip")
    r = run_cli(*["flip-rate", "--weights", str(weights), "--dlatents", str(ref / "dlatents.pkl"),
                                      "--methods", "attfind,wu,random,attfind-own", "--out", str(out / "flip"),
                                      "--attfind-out", str(attfind_run), "--bootstrap", "500"])
    assert r.exit_code == 0, r.output
    return out, json.loads((out / "flip" / "flip_rate.json").read_text()), r.output


@needs_real_dlatents
def test_flip_rate_methods_clear_the_random_floor(flip):
    out, doc, text = flip
    res = doc["result"]
    labels = np.asarray(doc["labels"])
    assert 0.2 < labels.mean() < 0.8                                   # both classes present
    rnd = res["random"]["all"]
    assert 0.0 < rnd["rate"] < 1.0 and rnd["ci"][0] < rnd["rate"] < rnd["ci"][1]   # not degenerate
    for m in ("attfind", "wu"):
        assert res[m]["all"]["rate"] > rnd["ci"][1], (m, res[m]["all"], rnd)
    # the control: the same attributes turned towards the image's own class flip (almost) nothing
    own = res["attfind-own"]["all"]
    assert own["rate"] < rnd["ci"][0] and own["rate"] < res["attfind"]["all"]["rate"] - 0.5
    # the flip rate grows, on the whole, with k for AttFind (k = 1 .. 10 in the JSON)
    per_k = [r["all"]["rate"] for r in doc["per_k"]["attfind"]]
    assert len(per_k) == 10 and per_k[-1] >= per_k[0]
    assert "| flip rate, top 10 (95% CI) | AttFind | Wu et al. | random |" in text
    assert (out / "flip" / "flip_rate.md").read_text().count("\n") == 5
    from PIL import Image

    assert Image.open(out / "flip" / "flip_rate.png").size[0] > 300


def test_flip_rate_takes_attfind_from_its_cache(flip, attfind_run):
    _, doc, _ = flip
    att = json.loads((attfind_run / "attfind.json").read_text())
    assert doc["selection"]["attfind"]["computed_images"] == 0          # every image from the cache
    assert doc["selection"]["attfind"]["ranking"] == [[a["direction"], a["coordinate"]] for a in att["attributes"]]
    wu = doc["selection"]["wu"]
    assert wu["mode"] == "auto" and all(c["num_images"] >= 5 for c in wu["classes"])


def test_flip_rate_rejects_an_unknown_method(attfind_release, tmp_path):
    ref, weights = attfind_release
    r = run_cli(*["flip-rate", "--weights", str(weights), "--dlatents", str(ref / "dlatents.pkl"),
                                      "--methods", "attfind,pca", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "unknown pca" in r.output


# --------------------------------------------------------------------------- GANSpace


def test_ganspace_edit_is_the_same_in_tf_and_pytorch(attfind_release, attfind_savedmodels):
    import torch

    import models_pt
    from stylex_port.analyses import ganspace as gs
    from models_pt.dlatents import dlatent_matrix, load_dlatents

    ref, weights = attfind_release
    g_pt = models_pt.load(weights / "generator.safetensors")
    g_tf = attfind_savedmodels["generator"]
    release = dlatent_matrix(load_dlatents(ref / "dlatents.pkl"))
    cfg = g_pt.config
    basis = gs.basis_for(g_pt, 400, 4, seed=3, dlatents=release)      # once, in NumPy, shared
    assert basis.explained[0] > basis.explained[-1] > 0
    z = gs.sample_z(6, cfg["z_dim"], seed=11)
    labels = gs.sample_labels(6, cfg["label_size"], release)
    layers, L = (2, 5), g_pt.num_layers
    moves = [[(0, 2.0), (2, -1.5)]] * 6

    w_tf = np.asarray(g_tf.generator_mapping((z, labels), training=False))
    w_pt = gs.map_pt(g_pt, z, labels)
    img_tf = render_tf(g_tf, gs.edit(w_tf, basis, moves, layers, L).astype(np.float32))

    def pt_images(w, lay=layers, mv=moves, dtype=torch.float32, model=g_pt):
        wl = torch.as_tensor(gs.edit(w, basis, mv, lay, L), dtype=dtype)
        with torch.no_grad():
            return model.synthesis(*model.style_vectors(wl)).numpy()

    img_pt = pt_images(w_pt)
    unedited = pt_images(w_pt, mv=gs.same([], 6))
    assert np.abs(img_pt - unedited).max() > 0.05                      # the edit does something
    assert (np.abs(img_pt) >= 1).mean() < 0.01 and img_pt.std() > 0.05  # images not clamped, not flat
    assert np.abs(img_tf - img_pt).max() <= 1e-4
    # negative controls: the edit on the next layers, or with a component's sign flipped
    assert np.abs(img_tf - pt_images(w_pt, lay=(3, 6))).max() > 1e-3
    assert np.abs(img_tf - pt_images(w_pt, mv=[[(0, -2.0), (2, -1.5)]] * 6)).max() > 1e-3

    # float64: the TF rebuild and the port, both in float64, from the same z and basis
    from porting import kinds
    from porting.readers import open_checkpoint
    from crosscheck.tf_side import rebuild

    with open_checkpoint(ref / "generator.savedmodel.zip") as ck:
        config = kinds.detect(ck.names, str(ck.source)).infer_config(ck.shapes)
        g64 = rebuild("generator", config, "float64", ck.read_all())
    w64_tf = np.asarray(g64.generator_mapping((z.astype(np.float64), labels.astype(np.float64))))
    img64_tf = render_tf(g64, gs.edit(w64_tf, basis, moves, layers, L))
    g_pt64 = models_pt.load(weights / "generator.safetensors").double()
    with torch.no_grad():
        w64_pt = g_pt64.mapping(torch.from_numpy(z.astype(np.float64)), torch.from_numpy(labels.astype(np.float64)))
    img64_pt = pt_images(w64_pt.numpy(), dtype=torch.float64, model=g_pt64)
    assert np.abs(img64_tf - img64_pt).max() <= 1e-9 * max(1.0, np.abs(img64_tf).max())


def test_cli_ganspace_writes_grids(attfind_release, tmp_path):
    ref, weights = attfind_release
    r = run_cli(*["ganspace", "--weights", str(weights), "--dlatents", str(ref / "dlatents.pkl"),
                                      "--samples", "200", "--components", "3", "--layers", "0-3", "--rows", "2",
                                      "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "ganspace.json").read_text())
    assert doc["layers"] == [0, 3] and len(doc["classifier"]) == 3
    assert sorted(p.name for p in tmp_path.glob("component_*.png")) == [f"component_0{i}.png" for i in range(3)]
    assert any(abs(c["prob1_change_at_plus_sigma"]) > 1e-3 for c in doc["classifier"])
    r = run_cli(*["ganspace", "--weights", str(weights), "--layers", "0-99",
                                      "--out", str(tmp_path / "bad")])
    assert r.exit_code == 2 and "style layers 0-" in r.output


def test_ganspace_joins_the_flip_rate_table(attfind_release, tmp_path):
    from stylex_port.analyses.fliprate import FlipOptions, run_flip_rate

    ref, weights = attfind_release
    doc = run_flip_rate(weights, ref / "dlatents.pkl", tmp_path,
                        FlipOptions(k=3, methods=("ganspace", "random"), ganspace_samples=300, bootstrap=200),
                        log=lambda m: None)
    assert set(doc["result"]) == {"ganspace", "random"}
    g = doc["selection"]["ganspace"]
    assert len(g["basis"]["std"]) == 10 and len(g["ranked"]["0"]) == 10
    assert 0.0 <= doc["result"]["ganspace"]["all"]["rate"] <= 1.0
    assert "GANSpace" in (tmp_path / "flip_rate.md").read_text()


# --------------------------------------------------------------------------- the discriminator filter


@pytest.fixture(scope="module")
def disc_setup(attfind_release, attfind_savedmodels):
    import models_pt
    from attfind.effects_pt import TorchEffects
    from attfind.effects_tf import TFEffects
    from attfind.tfrecord import read_examples
    from models_pt.dlatents import dlatent_matrix, load_dlatents

    ref, weights = attfind_release
    m = models_pt.load(weights)
    be = TorchEffects(m["generator"], m["mobilenet"])
    dl = dlatent_matrix(load_dlatents(ref / "dlatents.pkl"))
    st = be.styles(dl)
    lo, hi = sel.style_ranges(st)
    out = [be.image(w, lo, hi) for w in dl]
    pt = {"base": np.stack([b for b, _ in out]), "effects": np.stack([e for _, e in out]),
          "changes": be.discriminator_changes(m["discriminator"], dl, st, lo, hi)}
    tfm = attfind_savedmodels
    tb, _, te = read_examples(ref / "examples_1.tfrecord")
    nb = TFEffects(tfm["generator"], tfm["mobilenet"], compiled=True)   # the notebook's calls, in tf.function
    tst = nb.styles(dl)
    tlo, thi = sel.style_ranges(tst)
    tf = {"base": tb, "effects": te, "changes": nb.discriminator_changes(tfm["discriminator"], dl, tst, tlo, thi),
          "eager changes": TFEffects(tfm["generator"], tfm["mobilenet"]).discriminator_changes(
              tfm["discriminator"], dl, tst, tlo, thi)}
    planted = json.loads((ref / "reference.json").read_text())["planted"]
    return pt, tf, planted


def control_threshold(decisions, planted) -> float:
    """Just under the planted coordinate's largest change, above every smaller one: the planted
    coordinate is filtered out and as few others as can be (each rejection costs more asks)."""
    changes = sorted({d["max_change"] for d in decisions})
    top = min(d["max_change"] for d in decisions if d["coordinate"] == planted["coordinate"])
    below = [c for c in changes if c < top]
    return (top + below[-1]) / 2 if below else top / 2


def _filtered(side, threshold):
    f = DiscriminatorFilter(side["changes"], threshold)
    return sel.attfind(side["effects"], side["base"], pick_filter=f), f


def test_pytorch_filter_batch_equals_one_image_at_a_time(attfind_release):
    """PyTorch's filter asks about the images of one question as one batch, the discriminator's
    minibatch standard deviation over groups of one: the scores of batch-1 calls. The control:
    the discriminator's own groups (4 images) over the same batch score them otherwise."""
    import copy

    import torch

    import models_pt
    from attfind.effects_pt import TorchEffects
    from models_pt.dlatents import dlatent_matrix, load_dlatents

    ref, weights = attfind_release
    m = models_pt.load(weights)
    disc, be = m["discriminator"], TorchEffects(m["generator"], m["mobilenet"])
    group = disc.mbstd_group
    assert group > 1, "a discriminator without minibatch groups: nothing to check"
    dl = dlatent_matrix(load_dlatents(ref / "dlatents.pkl"))[:8]
    with torch.no_grad():
        w = torch.as_tensor(dl, dtype=torch.float32)
        images, labels = m["generator"](w).clamp(-1, 1), w[:, -m["generator"].config["label_size"]:]
        one = torch.cat([disc(images[i:i + 1], labels[i:i + 1]) for i in range(8)])
        alone = copy.deepcopy(disc)
        alone.mbstd_group = 1
        torch.testing.assert_close(alone(images, labels), one, rtol=0, atol=1e-5)
        assert (disc(images, labels) - one).abs().max() > 1e-3, "the module's groups score the batch as one image would"
    st = be.styles(dl)
    lo, hi = sel.style_ranges(st)
    j, k = int(np.argmax(np.abs(st[0]))), int(np.argsort(np.abs(st[1]))[-2])   # coordinates the images use
    single = {(n, d, c): be.discriminator_changes(disc, dl, st, lo, hi)([n], d, c)[0]
              for n in range(8) for d, c in ((1, j), (0, k))}
    changes = be.discriminator_changes(disc, dl, st, lo, hi)
    # out of order, an image asked twice, then questions that overlap the first (the caches)
    for images, d, c in [([5, 2, 5, 7, 0], 1, j), ([7, 1, 2, 6], 1, j), ([3, 4, 0, 1], 0, k), (list(range(8)), 1, j)]:
        got = changes(images, d, c)
        np.testing.assert_allclose(got, [single[(n, d, c)] for n in images], rtol=0, atol=1e-5)
    assert max(single.values()) > 1e-3, "the discriminator does not react to the edits: the check proves nothing"
    assert disc.mbstd_group == group, "the filter changed the module it was given"


@needs_real_dlatents
def test_discriminator_filter_same_in_tf_and_pytorch(disc_setup):
    pt, tf, planted = disc_setup
    plain = sel.attfind(pt["effects"], pt["base"])
    assert plain.ranking[0] == (planted["direction"], planted["coordinate"])
    # the notebook's threshold: TF and PyTorch reject the same candidates and rank alike
    r_pt, f_pt = _filtered(pt, DISCRIMINATOR_THRESHOLD)
    r_tf, f_tf = _filtered(tf, DISCRIMINATOR_THRESHOLD)
    assert f_pt.to_dict()["rejected"] == f_tf.to_dict()["rejected"]
    assert r_pt.ranking == r_tf.ranking and r_pt.ranking
    # on these weights (128-channel discriminator) the planted edit moves D by more than 0.2
    assert [planted["direction"], planted["coordinate"]] in f_pt.to_dict()["rejected"]
    asked = [d for d in f_pt.decisions if any(d["images"])]
    assert len(asked) >= 2 and min(d["max_change"] for d in asked) > 1e-3, \
        "the discriminator does not react to the edits: the filter proves nothing"
    # the eager calls, as the notebook makes them, give the compiled ones' changes
    for d, j in [(planted["direction"], planted["coordinate"]), (1 - planted["direction"], 0)]:
        compiled, eager = tf["changes"]([0, 1, 2], d, j), tf["eager changes"]([0, 1, 2], d, j)
        np.testing.assert_allclose(eager, compiled, rtol=0, atol=1e-5)
        assert j != planted["coordinate"] or compiled.max() > 1e-3, "D does not react to the planted edit"
    assert len(f_pt.decisions) == len(f_tf.decisions)
    for a, b in zip(f_pt.decisions, f_tf.decisions):                  # the same candidates, the same images
        assert (a["direction"], a["coordinate"], a["images"]) == (b["direction"], b["coordinate"], b["images"])
        np.testing.assert_allclose(np.concatenate(a["changes"]), np.concatenate(b["changes"]), rtol=0, atol=1e-4)
    # a threshold below the planted coordinate's change filters it out, in both backends alike
    threshold = control_threshold(f_pt.decisions, planted)
    r_pt, f_pt = _filtered(pt, threshold)
    r_tf, f_tf = _filtered(tf, threshold)
    assert f_pt.to_dict()["rejected"] == f_tf.to_dict()["rejected"] and f_pt.to_dict()["rejected"]
    assert r_pt.ranking == r_tf.ranking
    assert r_pt.ranking != plain.ranking                             # the negative control bites
    assert planted["coordinate"] not in [j for _, j in r_pt.ranking]


def test_attfind_records_the_filter(attfind_release, attfind_run, disc_setup, tmp_path):
    """``attfind --discriminator-filter`` on the effects ``attfind_run`` cached (the filter runs
    after the sweep and its record is what is checked here)."""
    import shutil

    from attfind.run import Options, run

    ref, weights = attfind_release
    pt, _, planted = disc_setup
    _, probe = _filtered(pt, np.inf)
    threshold = control_threshold(probe.decisions, planted)
    shutil.copytree(attfind_run / "effects_cache", tmp_path / "effects_cache")
    outcome = run(weights, ref / "dlatents.pkl", tmp_path,
                  Options(pictures=False, truth_images=0, discriminator_filter=True,
                          discriminator_threshold=threshold), log=lambda m: None)
    assert outcome.document["effects"]["cached_images"] == len(pt["base"])
    rec = outcome.document["discriminator_filter"]
    assert rec["threshold"] == threshold and [planted["direction"], planted["coordinate"]] in rec["rejected"]
    assert outcome.result.ranking == _filtered(pt, threshold)[0].ranking
    assert outcome.document["params"]["pick_filter"] is True
    assert outcome.document["tfrecord"]["same_ranking"] is True       # the tfrecord ranked with the same filter


# --------------------------------------------------------------------------- one backend interface


def test_both_backends_give_the_same_edited_outputs(attfind_release, attfind_savedmodels):
    """``edited_outputs`` of the TF backend (the notebook's API on the SavedModels) and of the
    PyTorch one, on the same StyleSpace edits (a sufficiency plan's) and on per-layer dlatents:
    the same images and logits within float32 rounding; a wrong edit is far off."""
    import models_pt
    from attfind.effects_pt import TorchEffects
    from attfind.effects_tf import TFEffects
    from models_pt.dlatents import dlatent_matrix, load_dlatents

    ref, weights = attfind_release
    m = models_pt.load(weights)
    tfm = attfind_savedmodels
    backends = {"tf": TFEffects(tfm["generator"], tfm["mobilenet"]), "pt": TorchEffects(m["generator"], m["mobilenet"])}
    dl = dlatent_matrix(load_dlatents(ref / "dlatents.pkl"))[:6]
    styles = backends["pt"].styles(dl)
    np.testing.assert_allclose(backends["tf"].styles(dl), styles, atol=1e-5)
    lo, hi = sel.style_ranges(styles)
    plan = sufficiency.sufficiency_plan(np.array([0, 1] * 3), [(1, 3), (0, 40), (1, 100)], 3)
    deltas = plan.deltas(backends["pt"].space, styles, lo, hi)
    layered = np.repeat(dl[:, None, :], m["generator"].num_layers, axis=1)
    layered[:, 4:] = dl[::-1][:, None, :]                  # the finer layers from other images
    out = {name: (b.edited_outputs(dl, deltas), b.edited_outputs(layered), b.logits(dl))
           for name, b in backends.items()}
    for (tf_img, tf_logit), (pt_img, pt_logit) in zip(out["tf"][:2], out["pt"][:2]):
        assert np.abs(tf_img - pt_img).max() <= 1e-4 and np.abs(tf_logit - pt_logit).max() <= 1e-4
    np.testing.assert_allclose(out["tf"][2], out["pt"][2], atol=1e-4)      # the base logits
    assert np.abs(out["tf"][0][1] - out["pt"][1][1]).max() > 1e-3          # edits vs per-layer: other outputs
    unedited = backends["pt"].edited_outputs(dl)[1]
    assert np.abs(unedited - out["pt"][0][1]).max() > 1e-2                 # the edits do something
