"""``cli.py download``: fetch a StylEx release from the authors' bucket (or any base URL).

For each file of the release, as the authors' notebook names them: ask the server what it has
(size, ETag, Last-Modified, whether it serves byte ranges), skip the file if ``release.json``
records the same version and the file on disk still has the recorded sha256; else stream it
into ``<name>.part`` beside the final name, resuming a partial file with a ``Range`` request
when the server still has the same version and serves ranges, retrying broken or stalled
transfers with exponential backoff; then check it (the size the server announced; a zip that
opens and is not an HTML page; a pickle that starts like one; a tfrecord whose first record
length fits) and only then rename it onto the final name and record it in ``release.json``
(URL, size, sha256, validators, time). A refused file is deleted, a missing file (404) listed,
and the other files fetched regardless.

Transfers use ``requests`` (streaming, timeouts, ranges); see the README for why not pooch.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from models_pt import file_sha256
from porting.atomic import write_json
from porting.errors import PortError

from models_pt.release_facts import BUCKET, DEFAULT_RELEASE, RELEASE_FILES  # noqa: F401  (the notebook's bucket and files)
MANIFEST = "release.json"
CHUNK = 1 << 20
RETRY_STATUS = {408, 429}          # plus every 5xx: retried with backoff


def _retryable(status: int) -> bool:
    return status >= 500 or status in RETRY_STATUS


class DownloadError(PortError):
    """A file that could not be fetched, or is not what it claims to be."""


@dataclass
class DownloadReport:
    fetched: list[str] = field(default_factory=list)      # downloaded now (whole or resumed)
    unchanged: list[str] = field(default_factory=list)    # complete on disk and unchanged on the server
    missing: list[str] = field(default_factory=list)      # 404 on the server
    failed: dict[str, str] = field(default_factory=dict)  # name -> one line
    changed: dict[str, str] = field(default_factory=dict)  # name -> what changed
    resumed: dict[str, int] = field(default_factory=dict)  # name -> bytes that were already there

    @property
    def ok(self) -> bool:
        return not self.missing and not self.failed


class _Hasher:
    def __init__(self):
        self.h, self.bytes = hashlib.sha256(), 0

    def update(self, data: bytes):
        self.h.update(data)
        self.bytes += len(data)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def _hash_prefix(path: Path, length: int) -> _Hasher:
    """A running sha256 of the first ``length`` bytes of ``path`` (a partial file being resumed)."""
    h = _Hasher()
    if length:
        with open(path, "rb") as f:
            while h.bytes < length:
                block = f.read(min(CHUNK, length - h.bytes))
                if not block:
                    break
                h.update(block)
    return h


def check_content(path: Path, name: str) -> None:
    """Refuse a file that is not what its name says (an HTML error page saved as a zip, say)."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.lstrip()[:1] == b"<" and b"html" in head[:512].lower():
        raise DownloadError(f"{name}: the server sent an HTML page ({head.lstrip()[:40]!r}...), not the file")
    if name.endswith(".zip"):
        if head[:4] != b"PK\x03\x04":
            raise DownloadError(f"{name}: not a zip file (it starts with {head[:8]!r})")
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
        except Exception as e:  # noqa: BLE001 - BadZipFile, zlib.error, EOFError, NotImplementedError...
            raise DownloadError(f"{name}: the zip does not open: {type(e).__name__}: {e}") from None
        if bad is not None:
            raise DownloadError(f"{name}: the zip member {bad} is corrupted (CRC mismatch)")
    elif name.endswith(".pkl"):
        if head[:1] != b"\x80":
            raise DownloadError(f"{name}: not a pickle (it starts with {head[:8]!r})")
    elif name.endswith(".tfrecord"):
        size = path.stat().st_size
        if len(head) < 16 or int.from_bytes(head[:8], "little") + 16 > size:
            raise DownloadError(f"{name}: not a tfrecord (its first record's length does not fit the file)")


def _validators(headers) -> dict:
    return {"etag": headers.get("ETag"), "last_modified": headers.get("Last-Modified"),
            "size": int(headers["Content-Length"]) if headers.get("Content-Length", "").isdigit() else None}


def _same_version(a: dict, b: dict) -> bool:
    """Two sets of validators name the same version of a file (what both have must agree, and
    they must share at least one of ETag and Last-Modified)."""
    keys = [k for k in ("etag", "last_modified") if a.get(k) and b.get(k)]
    if not keys:
        return False
    return all(a[k] == b[k] for k in keys) and (a.get("size") in (None, b.get("size")) or b.get("size") is None)


class Downloader:
    def __init__(self, base_url: str, out_dir: Path, retries: int = 4, backoff: float = 1.0, timeout: float = 30.0,
                 bar: Callable | None = None, log: Callable[[str], None] = print, session=None):
        import requests

        self.base_url = base_url.rstrip("/") + "/"
        self.out_dir = Path(out_dir)
        self.retries, self.backoff, self.timeout = int(retries), float(backoff), float(timeout)
        self.bar, self.log = bar, log
        self.session = session or requests.Session()
        # byte offsets must count the file's bytes: no transfer compression
        self.session.headers["Accept-Encoding"] = "identity"
        self.manifest_path = self.out_dir / MANIFEST
        self.manifest = self._read_manifest()

    def _read_manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {"format": "stylex-release/1", "files": {}}
        try:
            doc = json.loads(self.manifest_path.read_text())
            doc.setdefault("files", {})
            return doc
        except (json.JSONDecodeError, OSError) as e:
            raise DownloadError(f"{self.manifest_path}: not readable JSON ({e}); move it away to start afresh") \
                from None

    def _save_manifest(self):
        self.manifest["base_url"] = self.base_url
        write_json(self.manifest_path, self.manifest)

    # ------------------------------------------------------------------ one file
    def _head(self, url: str) -> dict | None:
        """The server's validators of ``url``; None for 404. Falls back to a GET when HEAD fails."""
        import requests

        for attempt in range(self.retries + 1):
            try:
                r = self.session.head(url, timeout=self.timeout, allow_redirects=True)
                if r.status_code == 404:
                    return None
                if r.status_code in (405, 501):       # no HEAD: ask with a GET and close at once
                    r = self.session.get(url, timeout=self.timeout, stream=True)
                    r.close()
                    if r.status_code == 404:
                        return None
                if _retryable(r.status_code):
                    raise requests.HTTPError(f"HTTP {r.status_code}")
                if r.status_code >= 400:
                    raise DownloadError(f"{url}: HTTP {r.status_code} {r.reason}")
                v = _validators(r.headers)
                v["ranges"] = r.headers.get("Accept-Ranges", "").lower() == "bytes"
                return v
            except (requests.ConnectionError, requests.Timeout, requests.HTTPError) as e:
                if attempt == self.retries:
                    raise DownloadError(f"{url}: no answer after {attempt + 1} tries "
                                        f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
                time.sleep(self.backoff * 2 ** attempt)
            except requests.RequestException as e:   # a URL requests cannot use, too many redirects...
                raise DownloadError(f"{url}: {type(e).__name__}: {str(e).splitlines()[0][:160]}") from None
        return None

    def fetch(self, name: str, outcome: DownloadReport) -> None:
        """One file: asked for its version, skipped when complete and unchanged, else streamed
        into ``<name>.part`` (resumed where the server's version allows), checked, renamed."""
        url = self.base_url + name
        final, part = self.out_dir / name, self.out_dir / (name + ".part")
        part_meta = self.out_dir / (name + ".part.json")
        server = self._head(url)
        if server is None:
            outcome.missing.append(name)
            self.log(f"{name}: not on the server (404 at {url})")
            return
        recorded = self.manifest["files"].get(name)
        if recorded and final.exists() and self._up_to_date(name, final, recorded, server, outcome):
            return
        start = self._resume_point(part, part_meta, server)
        if start:
            outcome.resumed[name] = start
            self.log(f"{name}: resuming at byte {start:,}")
        write_json(part_meta, {k: server.get(k) for k in ("etag", "last_modified", "size")})
        ctx = self.bar(server.get("size"), name, start) if self.bar else None
        try:
            hasher = self._transfer(url, name, part, server.get("size"), outcome, ctx)
        finally:
            if ctx is not None:
                ctx.close()
        if hasher is False:            # gone from the server mid-way
            part.unlink(missing_ok=True)
            part_meta.unlink(missing_ok=True)
            return
        self._finish(name, url, part, part_meta, final, recorded, server, hasher, outcome)

    def _up_to_date(self, name: str, final: Path, recorded: dict, server: dict, outcome: DownloadReport) -> bool:
        """True when ``final`` is the version the server has and ``release.json`` records (its
        size and sha256 checked); else says why it is fetched again."""
        if _same_version(recorded, server) and final.stat().st_size == recorded["size"] \
                and file_sha256(final) == recorded["sha256"]:
            outcome.unchanged.append(name)
            self.log(f"{name}: complete and unchanged ({recorded['size']:,} bytes), not downloaded again")
            return True
        if _same_version(recorded, server):
            self.log(f"{name}: the file on disk is not the one release.json records; fetching it again")
        else:
            outcome.changed[name] = (f"the server's version changed (ETag {recorded.get('etag')} -> "
                                     f"{server.get('etag')}, Last-Modified {recorded.get('last_modified')} -> "
                                     f"{server.get('last_modified')})")
            self.log(f"{name}: changed on the server since {recorded['time']}; fetching the new version "
                     f"(the old file stays until the new one is complete)")
        return False

    @staticmethod
    def _resume_point(part: Path, part_meta: Path, server: dict) -> int:
        """Bytes of ``part`` to keep: all of it when it is of the server's current version (a
        Range is then asked for; a 200 reply restarts it), else none (it is deleted)."""
        if not part.exists():
            return 0
        try:
            meta = json.loads(part_meta.read_text())
        except (OSError, json.JSONDecodeError):
            meta = {}
        if _same_version(meta, server):
            return part.stat().st_size
        part.unlink()
        return 0

    def _transfer(self, url: str, name: str, part: Path, total: int | None, outcome: DownloadReport, ctx):
        """Stream ``url`` onto ``part`` with retries, each try resuming at its end: the running
        sha256 (None when nothing needed fetching), or False when the server lost the file."""
        import requests

        hasher = None
        for attempt in range(self.retries + 1):
            try:
                got = self._transfer_once(url, name, part, total, outcome, ctx)
                if got is False:
                    return False
                hasher = got if got is not None else hasher
                size = part.stat().st_size
                if total is not None and size < total:
                    raise requests.ConnectionError(f"the transfer ended at {size:,} of {total:,} bytes")
                return hasher
            except (requests.ConnectionError, requests.Timeout, requests.HTTPError,
                    requests.exceptions.ChunkedEncodingError) as e:
                have = part.stat().st_size if part.exists() else 0
                if attempt == self.retries:
                    raise DownloadError(f"{name}: failed after {attempt + 1} tries ({type(e).__name__}: "
                                        f"{str(e).splitlines()[0][:160]}); the {have:,} bytes so far stay in "
                                        f"{part.name}, and the next run resumes there") from None
                wait = self.backoff * 2 ** attempt
                self.log(f"{name}: {type(e).__name__} ({str(e).splitlines()[0][:100]}); retrying in {wait:g} s "
                         f"from byte {have:,}")
                time.sleep(wait)
            except requests.RequestException as e:
                raise DownloadError(f"{name}: {type(e).__name__}: {str(e).splitlines()[0][:160]}") from None
            except OSError as e:                        # our side: the disk, not the server
                raise DownloadError(f"{name}: cannot write {part}: {e}") from None
        return hasher

    def _transfer_once(self, url: str, name: str, part: Path, total: int | None, outcome: DownloadReport, ctx):
        """One GET from the end of ``part``: the sha256 of the whole part (taken as the bytes
        arrive), None when ``part`` was already complete, False on a 404."""
        import requests

        have = part.stat().st_size if part.exists() else 0
        if total is not None and have >= total:
            return None
        headers = {"Range": f"bytes={have}-"} if have else {}
        with self.session.get(url, headers=headers, stream=True, timeout=self.timeout) as r:
            if r.status_code == 404:
                outcome.missing.append(name)
                self.log(f"{name}: gone from the server (404) during the download")
                return False
            if _retryable(r.status_code):
                raise requests.HTTPError(f"HTTP {r.status_code}")
            if r.status_code >= 400:
                raise DownloadError(f"{name}: HTTP {r.status_code} {r.reason} from {url}")
            if have and r.status_code != 206:      # the server ignored the range: start over
                have = 0
                outcome.resumed.pop(name, None)
                if ctx is not None:
                    ctx.reset(total=total)
            elif have:
                outcome.resumed.setdefault(name, have)
            hasher = _hash_prefix(part, have)
            with open(part, "ab" if have else "wb") as f:
                for chunk in r.iter_content(CHUNK):
                    f.write(chunk)
                    hasher.update(chunk)
                    if ctx is not None:
                        ctx.update(len(chunk))
        return hasher

    def _finish(self, name: str, url: str, part: Path, part_meta: Path, final: Path, recorded: dict | None,
                server: dict, hasher, outcome: DownloadReport) -> None:
        """Check the complete ``part`` (size, content), rename it onto ``final``, record it."""
        size, total = part.stat().st_size, server.get("size")
        try:
            if total is not None and size != total:
                raise DownloadError(f"{name}: {size:,} bytes received, the server announced {total:,}")
            check_content(part, name)
        except DownloadError:
            part.unlink(missing_ok=True)
            part_meta.unlink(missing_ok=True)
            raise
        sha = hasher.hexdigest() if hasher is not None and hasher.bytes == size else file_sha256(part)
        if recorded and recorded.get("sha256") not in (None, sha):
            outcome.changed[name] = f"sha256 {recorded['sha256'][:12]}... -> {sha[:12]}..."
            self.log(f"{name}: the new version differs (sha256 {recorded['sha256'][:12]}... -> {sha[:12]}...)")
        os.replace(part, final)
        part_meta.unlink(missing_ok=True)
        self.manifest["files"][name] = {"url": url, "size": size, "sha256": sha, "etag": server.get("etag"),
                                        "last_modified": server.get("last_modified"),
                                        "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._save_manifest()
        outcome.fetched.append(name)


def download(name: str = DEFAULT_RELEASE, out_dir: Path | None = None, base_url: str | None = None,
             files=RELEASE_FILES, retries: int = 4, backoff: float = 1.0, timeout: float = 30.0,
             bar: Callable | None = None, log: Callable[[str], None] = print) -> tuple[Path, DownloadReport]:
    """Fetch the release ``name`` into ``out_dir`` (default: ./<name>). Returns the folder and
    what happened to each file; raises only for a bad ``release.json``."""
    out = Path(out_dir or name)
    out.mkdir(parents=True, exist_ok=True)
    base = base_url or f"{BUCKET}/{name}/"
    d = Downloader(base, out, retries=retries, backoff=backoff, timeout=timeout, bar=bar, log=log)
    outcome = DownloadReport()
    for f in files:
        try:
            d.fetch(f, outcome)
        except DownloadError as e:
            outcome.failed[f] = str(e)
            log(f"error: {e}")
    return out, outcome
