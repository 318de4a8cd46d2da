"""The studies' human evaluation and image quality: the user-study page driven in a real browser
(headless Chromium) and scored, and FID checked against closed forms and SciPy.

The browser test skips, with the reason, where Chromium, its driver or selenium is missing,
unless ``STYLEX_REQUIRE_BROWSER=1`` (``.ci/run`` sets it and installs Debian's ``chromium`` and
``chromium-driver``), where it fails instead.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli

# --------------------------------------------------------------------------- FID, by itself


def features_with(mu: np.ndarray, cov: np.ndarray, n: int, rng) -> np.ndarray:
    """``[n, d]`` features whose sample mean is ``mu`` and sample covariance (n - 1) is ``cov``, exactly."""
    z = rng.standard_normal((n, len(mu)))
    z -= z.mean(axis=0)
    whiten = np.linalg.cholesky(np.cov(z, rowvar=False))
    z = np.linalg.solve(whiten, z.T).T                    # sample covariance now the identity
    return mu + z @ np.linalg.cholesky(cov).T


def test_fid_equals_the_closed_form_and_scipy():
    from scipy import linalg

    from stylex_port.analyses.fid import fid_of_features, frechet_distance

    rng = np.random.default_rng(3)
    d, n = 24, 400
    rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
    a, b = rng.uniform(0.2, 3.0, d), rng.uniform(0.2, 3.0, d)
    mu_a, mu_b = rng.standard_normal(d), rng.standard_normal(d)
    cov_a, cov_b = (rotation * a) @ rotation.T, (rotation * b) @ rotation.T       # commuting: closed form
    closed = float(np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    got = fid_of_features(features_with(mu_a, cov_a, n, rng), features_with(mu_b, cov_b, n, rng))
    assert closed > 1.0 and abs(got - closed) <= 1e-6 * closed, (got, closed)

    # covariances that do not commute: SciPy's matrix square root, as pytorch-fid computes it
    m1, m2 = rng.standard_normal((d, d)), rng.standard_normal((d, d))
    s1, s2 = m1 @ m1.T / d + 0.1 * np.eye(d), m2 @ m2.T / d + 0.1 * np.eye(d)
    assert np.abs(s1 @ s2 - s2 @ s1).max() > 0.1                                  # really not commuting
    root = linalg.sqrtm(s1 @ s2).real
    scipy_fid = float(np.sum((mu_a - mu_b) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))
    ours = frechet_distance(mu_a, s1, mu_b, s2)
    assert abs(ours - scipy_fid) <= 1e-6 * scipy_fid, (ours, scipy_fid)
    # the control: a common slip, Tr((S1^1/2 - S2^1/2)^2), is the closed form only when they commute
    wrong = float(np.sum((mu_a - mu_b) ** 2) + np.trace((linalg.sqrtm(s1) - linalg.sqrtm(s2)).real @
                                                        (linalg.sqrtm(s1) - linalg.sqrtm(s2)).real))
    assert abs(wrong - scipy_fid) > 1e-3 * scipy_fid
    assert abs(frechet_distance(mu_a, s1, mu_a, s1)) < 1e-9                        # a set against itself


def test_fid_from_fewer_images_than_features_equals_the_covariance_form(monkeypatch):
    """With fewer images than features, ``fid_of_features`` takes the trace from the images' own
    n_a x n_b matrix (never the covariance form, which raises here): it equals the covariance form
    and SciPy's matrix square root, and the covariance's rank is read from the images. With as
    many images as features in either set it takes the covariance form."""
    from scipy import linalg

    from stylex_port.analyses import fid
    from stylex_port.analyses.fid import covariance_rank, fid_of_features, frechet_distance, statistics

    rng = np.random.default_rng(4)
    d = 300
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    a = rng.standard_normal((40, d)) @ mix + 0.3
    b = rng.standard_normal((25, d)) @ mix * rng.uniform(0.5, 1.5, d)
    (mu_a, s1), (mu_b, s2) = statistics(a), statistics(b)
    covariance = frechet_distance(mu_a, s1, mu_b, s2)
    scipy_fid = float(np.sum((mu_a - mu_b) ** 2) + np.trace(s1) + np.trace(s2)
                      - 2 * np.trace(linalg.sqrtm(s1 @ s2).real))
    covariance_form = []
    monkeypatch.setattr(fid, "frechet_distance", lambda *args: covariance_form.append(1) or frechet_distance(*args))
    images = fid_of_features(a, b)
    assert not covariance_form, "fewer images than features: the covariance form ran"
    # the covariance form sums the square roots of ~270 eigenvalues that are zero up to rounding
    # (4e-8 of FID here); the images' form has no null space (it matched 50-digit arithmetic to 1e-15)
    assert covariance > 1.0 and abs(images - covariance) <= 1e-6 * covariance, (images, covariance)
    assert abs(images - scipy_fid) <= 1e-6 * scipy_fid, (images, scipy_fid)
    assert abs(fid_of_features(a, a)) < 1e-9 * covariance and fid_of_features(b, a) == pytest.approx(images, rel=1e-9)
    assert covariance_rank(a) == np.linalg.matrix_rank(s1) == 39 and covariance_rank(b) == 24
    with pytest.raises(ValueError, match="300 against 299 dimensions"):
        fid_of_features(a, b[:, 1:])
    many = rng.standard_normal((d, d)) @ mix
    assert not covariance_form
    assert fid_of_features(many, b) == pytest.approx(frechet_distance(*statistics(many), mu_b, s2), rel=1e-12)
    assert covariance_form == [1], "as many images as features: the covariance form is the cheaper one"


def test_inception_has_fid_networks_parameters_and_refuses_a_wrong_file(tmp_path):
    import torch

    from stylex_port.analyses.inception import FEATURES, FIDInception, InceptionWeightsError, load_inception

    net = FIDInception()
    # torchvision's inception_v3 has 27,161,264 parameters with its auxiliary head (3,326,696) and
    # 1000 classes; the FID network drops the head and has 1008 classes (+8 x 2049).
    assert sum(p.numel() for p in net.parameters()) == 27_161_264 - 3_326_696 + 8 * 2049
    path = tmp_path / "inception.pth"
    torch.save(net.state_dict(), path)
    loaded = load_inception(path)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        feats = loaded(x)
    assert feats.shape == (2, FEATURES) and float(feats.std()) > 0

    state = net.state_dict()
    bad = dict(state)
    del bad["Mixed_6b.branch7x7_2.conv.weight"]
    torch.save(bad, tmp_path / "missing.pth")
    with pytest.raises(InceptionWeightsError, match=r"missing.pth: 1 of .* the first 'Mixed_6b.branch7x7_2.conv.weight'"):
        load_inception(tmp_path / "missing.pth")
    bad = dict(state, **{"fc.weight": torch.zeros(1000, 2048)})
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(InceptionWeightsError, match=r"fc.weight has shape \[1000, 2048\], expected \[1008, 2048\]"):
        load_inception(tmp_path / "shape.pth")
    torch.save(dict(state, **{"fc.bias": [0.0] * 1008}), tmp_path / "list.pth")
    with pytest.raises(InceptionWeightsError, match=r"fc.bias is a list, expected a tensor of shape \[1008\]"):
        load_inception(tmp_path / "list.pth")
    (tmp_path / "text.pth").write_text("not a network")
    with pytest.raises(InceptionWeightsError, match="not a PyTorch state dict"):
        load_inception(tmp_path / "text.pth")


def random_inception_file(path: Path, seed: int = 0) -> Path:
    """A randomly initialised FID network in pytorch-fid's file format (He-initialised convs, so
    the features neither vanish nor blow up through the 94 layers)."""
    import torch

    from stylex_port.analyses.inception import FIDInception

    torch.manual_seed(seed)
    net = FIDInception()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    torch.save(net.state_dict(), path)
    return path


def test_cli_fid_on_a_release(attfind_release, attfind_run, tmp_path):
    ref, weights = attfind_release
    incep = random_inception_file(tmp_path / "pt_inception.pth")
    args = ["fid", "--weights", weights, "--dlatents", ref / "dlatents.pkl", "--attfind-out", attfind_run,
            "--k", "1..3", "--max-images", 16, "--out", tmp_path / "fid"]
    r = run_cli(*args, "--inception-weights", incep)
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "fid" / "fid.json").read_text())
    assert [row["k"] for row in doc["rows"]] == [1, 2, 3] and doc["images"] == 16
    assert doc["reference_feature_std"] > 1e-3 and doc["covariance_rank"] == 15         # not degenerate
    fids = [row["fid"] for row in doc["rows"]]
    assert all(np.isfinite(fids)) and min(fids) > 0
    assert doc["note"] and "| 1 |" in (tmp_path / "fid" / "fid.md").read_text()
    from PIL import Image

    assert Image.open(tmp_path / "fid" / "fid.png").size[0] > 300

    r = run_cli(*args, "--inception-weights", tmp_path / "absent.pth")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert "absent.pth: no such file" in r.output and "pt_inception-2015-12-05-6726825d.pth" in r.output


# --------------------------------------------------------------------------- the user study in a browser


def browser_or_skip():
    """Selenium's Chrome driver on Debian's chromium, headless, downloads allowed; or a skip."""
    missing = [name for name in ("chromium", "chromedriver") if not shutil.which(name)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        reason = (f"the browser test needs {', '.join(missing)}: apt-get install chromium chromium-driver, "
                  "pip install selenium")
        if os.environ.get("STYLEX_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def open_browser(downloads: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1000,900"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return driver


def take_part(driver, page: Path, participant: str, choose, describe, downloads: Path,
              screenshot: Path | None = None) -> tuple[Path, dict]:
    """Open the page, answer every question (``choose(qid) -> 'left'|'right'``, ``describe(qid) -> text``),
    download the CSV; returns its path and the answers given."""
    from selenium.webdriver.common.by import By

    driver.get(page.as_uri())
    driver.find_element(By.ID, "participant").send_keys(participant)
    driver.find_element(By.ID, "start").click()
    given, shot_taken = {}, False
    while driver.find_element(By.ID, "done").get_attribute("class") == "hidden":
        box = driver.find_element(By.ID, "question")
        qid, kind = box.get_attribute("data-question"), box.get_attribute("data-kind")
        assert qid not in given, f"question {qid} shown twice"
        if kind == "classification":
            n_left = len(driver.find_elements(By.CSS_SELECTOR, "#left img"))
            assert n_left >= 1 and driver.find_element(By.ID, "query").get_attribute("src").endswith(".gif")
            if screenshot is not None and not shot_taken:
                deadline = time.monotonic() + 10
                while not images_loaded(driver) and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert images_loaded(driver), "an animation did not load from the study folder"
                driver.save_screenshot(str(screenshot))
                shot_taken = True
            given[qid] = choose(qid)
            driver.find_element(By.ID, f"choose-{given[qid]}").click()
        else:
            given[qid] = describe(qid)
            driver.find_element(By.ID, "words").send_keys(given[qid])
            driver.find_element(By.ID, "next").click()
    driver.find_element(By.ID, "download").click()
    target = downloads / f"answers_{participant}.csv"
    deadline = time.monotonic() + 20
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert target.exists(), f"no download of {target.name}: {sorted(p.name for p in downloads.iterdir())}"
    return target, given


def images_loaded(driver) -> bool:
    return driver.execute_script("return Array.from(document.images).filter(i => i.offsetParent)"
                                 ".every(i => i.complete && i.naturalWidth > 0)")


NAMES = {1: "alpha", 2: "beta", 3: "gamma"}      # the perfect participant's word for each attribute


@pytest.fixture(scope="module")
def study(attfind_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    r = run_cli("user-study", "--attfind-out", attfind_run, "--out", out, "--queries", 4, "--examples", 2,
                "--attributes", 3, "--seed", 1)
    assert r.exit_code == 0, r.output
    return out, json.loads((out / "key.json").read_text())


def test_user_study_in_headless_chromium(study, tmp_path):
    browser_or_skip()
    out, key = study
    page = out / "study" / "index.html"
    text = page.read_text()
    assert "key.json" not in text and '"correct"' not in text                             # no answers in the page
    sources = re.findall(r'"(media/[^"]+)"', text)
    assert len(sources) > 20 and all(re.fullmatch(r"media/[0-9a-f]{12}\.gif", f) for f in sources)   # names say nothing
    for a in key["attributes"]:                          # no file name shared between attributes
        assert not set(a["examples"] + a["queries"]) & {f for b in key["attributes"] if b is not a
                                                         for f in b["examples"] + b["queries"]}
    shown = {n for a in key["attributes"] for n in a["images"][:len(a["examples"])]}
    assert not shown & {n for a in key["attributes"] for n in a["images"][len(a["examples"]):]}   # queries: new images
    correct = {q["id"]: q["correct"] for q in key["questions"] if q["kind"] == "classification"}
    attribute = {q["id"]: q["attribute"] for q in key["questions"]}
    assert len(correct) == 12 and {q["correct"] for q in key["questions"] if "correct" in q} == {"left", "right"}

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    docs = os.environ.get("STYLEX_STUDY_DOCS")          # a folder: keep the screenshot and score for docs/
    shot = Path(docs) / "user_study_question.png" if docs else tmp_path / "question.png"
    driver = open_browser(downloads)
    try:
        files, answers = [], {}
        f, answers["perfect"] = take_part(driver, page, "perfect", correct.get,
                                          lambda q: f'{NAMES[attribute[q]]}, "the" glässer' , downloads, screenshot=shot)
        files.append(f)
        rng = np.random.default_rng(5)
        for i in range(8):
            who = f"random{i}"
            f, answers[who] = take_part(driver, page, who, lambda q: ("left", "right")[int(rng.integers(2))],
                                        lambda q: "smile", downloads)
            files.append(f)
    finally:
        driver.quit()
    assert shot.stat().st_size > 10_000

    rows = list(csv.reader(open(files[0], newline="", encoding="utf-8")))
    assert rows[0] == ["study_id", "participant", "question", "kind", "answer"] and len(rows) == 1 + len(key["questions"])
    assert {r[2]: r[4] for r in rows[1:]} == answers["perfect"]      # commas, quotes, umlauts come back as typed

    r = run_cli("user-study-score", "--study", out, "--out", tmp_path / "score", *sum((["--responses", f] for f in files), []))
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "score" / "score.json").read_text())
    # the score equals the answers given, participant by participant
    for who, given in answers.items():
        right = [given[q] == c for q, c in correct.items()]
        assert doc["participants"][who]["correct"] == sum(right), who
        assert doc["participants"][who]["accuracy"] == pytest.approx(np.mean(right), abs=1e-12)
    assert doc["participants"]["perfect"]["accuracy"] == 1.0
    randoms = [doc["participants"][f"random{i}"]["accuracy"] for i in range(8)]
    assert abs(np.mean(randoms) - 0.5) < 0.2 and np.std(randoms) > 0        # 96 coin flips: near chance
    for a in doc["attributes"]:
        words = [w for w, _ in a["top_words"]]
        assert a["top_words"][0] == ["smile", 8] and NAMES[a['rank']] in words and "the" not in words, a
        assert "glässer" in words, a
        assert a["ci"][0] <= a["accuracy"] <= a["ci"][1] and a["participants"] == 9
    assert "| all |" in r.output and (tmp_path / "score" / "score.png").stat().st_size > 5_000
    if docs:
        shutil.copy(tmp_path / "score" / "score.png", Path(docs) / "user_study_score.png")
        shutil.copy(tmp_path / "score" / "score.md", Path(docs) / "user_study_score.md")

    # refused, in one line naming the file and the row: a repeated file, a wrong answer, a question twice
    r = run_cli("user-study-score", "--study", out, "--responses", files[0], "--responses", files[0])
    assert r.exit_code == 2 and "the same file as" in r.output and len(r.output.strip().splitlines()) == 1
    bad = tmp_path / "bad.csv"
    rows = list(csv.reader(open(files[1], newline="")))
    first = next(i for i, row in enumerate(rows) if row[3] == "classification")
    rows[first][4] = "middle"
    with open(bad, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    r = run_cli("user-study-score", "--study", out, "--responses", bad)
    assert r.exit_code == 2 and f"{bad} row {first + 1}: answer 'middle'" in r.output
    nobody = tmp_path / "nobody.csv"
    rows = list(csv.reader(open(files[3], newline="")))
    for row in rows[1:]:
        row[1] = ""
    with open(nobody, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    r = run_cli("user-study-score", "--study", out, "--responses", nobody)
    assert r.exit_code == 2 and f"{nobody} row 2: no participant ID" in r.output
    twice = tmp_path / "twice.csv"
    lines = files[2].read_text().splitlines(keepends=True)
    twice.write_text("".join(lines + [lines[1]]))
    r = run_cli("user-study-score", "--study", out, "--responses", twice)
    assert r.exit_code == 2 and f"row {len(lines) + 1}: question" in r.output and "answered twice" in r.output
