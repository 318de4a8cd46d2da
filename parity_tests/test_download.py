"""``cli.py download`` against a reference release served on the loopback address: a full
download, a transfer cut off and resumed, a 404, an HTML page in place of a zip, a file changed
on the server between runs, a server that stops answering; then convert and verify the
downloaded folder. Nothing here reaches an address other than 127.0.0.1."""
from __future__ import annotations

import json
import shutil
import time

import pytest

from parity_tests.loopback import LoopbackServer
from models_pt import file_sha256
from stylex_port.download import RELEASE_FILES
from conftest import run_cli


@pytest.fixture()
def served(attfind_release, tmp_path):
    ref, _ = attfind_release
    root = tmp_path / "bucket" / "celeb_a_age"
    shutil.copytree(ref, root)
    with LoopbackServer(root, hang_seconds=20) as server:
        yield server, root, tmp_path / "downloaded"


def _download(server, out, *extra):
    r = run_cli(*["download", "--base-url", server.url, "--out", str(out),
                                      "--retries", "2", "--timeout", "5", *extra])
    return r, (json.loads((out / "release.json").read_text()) if (out / "release.json").exists() else None)


def _same(root, out, names=RELEASE_FILES):
    for n in names:
        assert (out / n).read_bytes() == (root / n).read_bytes(), n


def _no_leftovers(out):
    left = [p.name for p in out.iterdir() if p.name.endswith((".part", ".part.json", ".tmp"))]
    assert not left, left


def test_full_download_then_nothing_again_then_convert_and_verify(served):
    server, root, out = served
    r, manifest = _download(server, out)
    assert r.exit_code == 0, r.output
    _same(root, out)
    _no_leftovers(out)
    for n in RELEASE_FILES:
        e = manifest["files"][n]
        assert e["url"] == server.url + n and e["size"] == (root / n).stat().st_size
        assert e["sha256"] == file_sha256(root / n) and e["time"] and e["etag"]
    gets = len([q for q in server.requests if q[0] == "GET"])
    r, _ = _download(server, out)                                   # a second run fetches nothing
    summary = [x for x in r.output.splitlines() if x.endswith(" complete and unchanged")]
    assert r.exit_code == 0 and len(summary) == len(RELEASE_FILES), r.output
    assert len([q for q in server.requests if q[0] == "GET"]) == gets
    # the downloaded folder is a release: convert and verify it
    weights = out.parent / "weights"
    r = run_cli(*["convert", "--tf-ckpt", str(out), "--out", str(weights)])
    assert r.exit_code == 0, r.output
    r = run_cli(*["verify", "--tf-ckpt", str(out), "--weights", str(weights), "--num-images", "4"])
    assert r.exit_code == 0, r.output[-3000:]


def test_cut_transfer_is_resumed_with_a_range(served):
    server, root, out = served
    server.faults["generator.savedmodel.zip"] = "cut"
    r, manifest = _download(server, out)
    assert r.exit_code == 0, r.output
    _same(root, out)
    gets = server.gets("generator.savedmodel.zip")
    assert len(gets) == 2 and gets[0][2] is None and gets[1][2].startswith("bytes=")
    half = int(gets[1][2][6:-1])
    assert 0 < half < (root / "generator.savedmodel.zip").stat().st_size
    assert "resumed at byte" in r.output and "retrying" in r.output
    _no_leftovers(out)


def test_interrupted_run_resumes_on_the_next_run(served):
    server, root, out = served
    server.faults["encoder.savedmodel.zip"] = "hang"
    r, _ = _download(server, out, "--retries", "0", "--timeout", "1")
    assert r.exit_code == 1 and "encoder.savedmodel.zip" in r.output and "FAILED" in r.output
    assert not (out / "encoder.savedmodel.zip").exists()          # nothing under the final name
    server.faults["encoder.savedmodel.zip"] = "cut"                # the next try gets half, then fails
    r, _ = _download(server, out, "--retries", "0")
    assert r.exit_code == 1 and (out / "encoder.savedmodel.zip.part").exists()
    assert not (out / "encoder.savedmodel.zip").exists()
    r, _ = _download(server, out)                                  # a third run resumes the half
    assert r.exit_code == 0 and "resumed at byte" in r.output, r.output
    _same(root, out)
    _no_leftovers(out)


def test_missing_file_is_listed_and_the_rest_fetched(served):
    server, root, out = served
    server.faults["dlatents.pkl"] = "404"
    r, manifest = _download(server, out)
    assert r.exit_code == 1
    assert "dlatents.pkl" in r.output and "MISSING on the server" in r.output
    _same(root, out, [n for n in RELEASE_FILES if n != "dlatents.pkl"])
    assert "dlatents.pkl" not in manifest["files"] and not (out / "dlatents.pkl").exists()


def test_html_page_in_place_of_a_zip_is_refused(served):
    server, root, out = served
    server.faults["mobilenet.savedmodel.zip"] = "html"
    r, manifest = _download(server, out)
    assert r.exit_code == 1
    line = [x for x in r.output.splitlines() if x.startswith("mobilenet.savedmodel.zip") and "FAILED" in x]
    assert line and "HTML page" in line[0], r.output
    assert not (out / "mobilenet.savedmodel.zip").exists() and "mobilenet.savedmodel.zip" not in manifest["files"]
    _no_leftovers(out)


def test_file_changed_on_the_server(served):
    server, root, out = served
    r, first = _download(server, out)
    assert r.exit_code == 0
    old = (out / "dlatents.pkl").read_bytes()
    data = bytearray(old)
    data[-3] ^= 0xFF                                    # same size, other bytes, a new mtime
    time.sleep(1.1)                                     # Last-Modified has one-second resolution
    (root / "dlatents.pkl").write_bytes(bytes(data))
    server.faults["dlatents.pkl"] = "cut"               # the new version arrives in two parts
    r, _ = _download(server, out, "--retries", "0")
    assert r.exit_code == 1 and "changed on the server" in r.output, r.output
    assert (out / "dlatents.pkl").read_bytes() == old   # the old file stays until the new one is whole
    r, second = _download(server, out)
    assert r.exit_code == 0 and "dlatents.pkl" in r.output
    assert (out / "dlatents.pkl").read_bytes() == bytes(data)
    assert second["files"]["dlatents.pkl"]["sha256"] != first["files"]["dlatents.pkl"]["sha256"]
    assert "sha256" in r.output and "->" in r.output
    _no_leftovers(out)


def test_server_that_stops_answering_times_out(served):
    server, root, out = served
    server.faults["examples_1.tfrecord"] = "hang"
    t = time.perf_counter()
    r, _ = _download(server, out, "--retries", "1", "--timeout", "1")
    assert time.perf_counter() - t < 15, "a stalled server must end in a timeout, not a hang"
    assert r.exit_code == 1
    line = [x for x in r.output.splitlines() if x.startswith("examples_1.tfrecord")][0]
    assert "FAILED" in line and "failed after 2 tries" in line and "timed out" in line.lower(), line
    _same(root, out, [n for n in RELEASE_FILES if n != "examples_1.tfrecord"])


def test_corrupted_zip_is_refused(tmp_path):
    from stylex_port.download import DownloadError, check_content

    good = tmp_path / "x.savedmodel.zip"
    import zipfile

    with zipfile.ZipFile(good, "w") as z:
        z.writestr("x/saved_model.pb", b"0" * 5000)
    check_content(good, good.name)
    data = bytearray(good.read_bytes())
    data[100] ^= 0xFF                                    # inside the member: its CRC no longer fits
    bad = tmp_path / "y.savedmodel.zip"
    bad.write_bytes(bytes(data))
    with pytest.raises(DownloadError, match="corrupted|does not open"):
        check_content(bad, bad.name)
    # a compressed member whose deflate stream is damaged (zlib's error, not zipfile's)
    deflated = tmp_path / "d.savedmodel.zip"
    with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x/variables/variables.data-00000-of-00001", bytes(range(256)) * 400)
    caught = 0
    for offset in range(60, 110, 7):
        data = bytearray(deflated.read_bytes())
        data[offset] ^= 0xFF
        broken = tmp_path / f"b{offset}.savedmodel.zip"
        broken.write_bytes(bytes(data))
        with pytest.raises(DownloadError):
            check_content(broken, broken.name)
        caught += 1
    assert caught == 8
    (tmp_path / "z.pkl").write_bytes(b"PK\x03\x04 not a pickle")
    with pytest.raises(DownloadError, match="not a pickle"):
        check_content(tmp_path / "z.pkl", "z.pkl")
