"""The download command's overhead: ``stylex_port.download`` against plain ``curl`` on the same files
from the same loopback server (parity_tests/loopback.py, 127.0.0.1 only).

    .venv/bin/python bench/download.py [--release reference] [--size-mb 300] [--rounds 3]

Serves a folder holding the release's file names: the ``--release`` folder's files if given,
plus (or else) a stored zip of ``--size-mb`` MB of random bytes named like the released
generator (the real one is about 120 MB at 256 px), so the transfer, not the start-up, is timed.
Reports the median wall time of each over ``--rounds`` fresh downloads, the ratio, and how much
of the tool's time its checks take (sha256, opening every zip member).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--release", type=Path)
    ap.add_argument("--size-mb", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from parity_tests.loopback import LoopbackServer
    from models_pt import file_sha256
    from stylex_port.download import RELEASE_FILES, check_content, download

    if not shutil.which("curl"):
        sys.exit("curl is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="bench-download-"))
    root = tmp / "bucket"
    root.mkdir()
    names = []
    if args.release:
        for n in RELEASE_FILES:
            if (args.release / n).exists():
                shutil.copy(args.release / n, root / n)
                names.append(n)
    if args.size_mb:
        big = "generator.savedmodel.zip" if "generator.savedmodel.zip" not in names else "big.savedmodel.zip"
        with zipfile.ZipFile(root / big, "w", zipfile.ZIP_STORED) as z:
            z.writestr("big/variables/variables.data-00000-of-00001", os.urandom(args.size_mb * 2 ** 20))
        names.append(big)
    total = sum((root / n).stat().st_size for n in names)
    print(f"{len(names)} files, {total / 2 ** 20:,.1f} MiB, served on 127.0.0.1")

    tool, curl = [], []
    with LoopbackServer(root) as server:
        for _ in range(args.rounds):
            out = tmp / "tool"
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            _, outcome = download(out_dir=out, base_url=server.url, files=names, log=lambda m: None)
            tool.append(time.perf_counter() - t)
            assert outcome.ok and len(outcome.fetched) == len(names), outcome
            out = tmp / "curl"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            t = time.perf_counter()
            for n in names:
                subprocess.run(["curl", "-sf", "-o", str(out / n), server.url + n], check=True)
            curl.append(time.perf_counter() - t)
    t = time.perf_counter()
    for n in names:
        file_sha256(root / n)
    t_sha = time.perf_counter() - t
    t = time.perf_counter()
    for n in names:
        check_content(root / n, n)
    t_check = time.perf_counter() - t
    mt, mc = statistics.median(tool), statistics.median(curl)
    print(f"cli.py download (stylex_port.download): {mt:.2f} s median of {args.rounds} ({total / 2 ** 20 / mt:,.0f} MiB/s)")
    print(f"curl, file by file:                 {mc:.2f} s median ({total / 2 ** 20 / mc:,.0f} MiB/s)")
    print(f"ratio tool / curl: {mt / mc:.2f}x; of the tool's time, sha256 {t_sha:.2f} s and the content checks "
          f"(every zip member's CRC) {t_check:.2f} s, measured apart")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
