"""Conversion of a whole release: wall time and peak memory, against reading the same bytes.

    .venv/bin/python bench/conversion.py --release reference256 [--out /tmp/weights256]

Peak memory is the process's resident set size (VmRSS, sampled every 5 ms by a thread) above
its baseline, the RSS just before the conversion starts with every library it needs already
imported (TF, torch, safetensors). It is set against the checkpoint size (the bytes of every
variable in the release's four models) and the zips' size on disk; the time against reading
the zips' bytes from disk (warm page cache: the conversion reads them right after) and to
read and inflate every member of the zips, which any reader of these files has to do.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRSS:
    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def __enter__(self):
        self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--release", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import numpy as np
    import safetensors.torch  # noqa: F401
    import tensorflow as tf  # noqa: F401
    import torch  # noqa: F401

    from porting.readers import open_checkpoint
    from porting.release import convert_release
    from models_pt.release_facts import RELEASE_STEMS

    zips = [args.release / f"{s}.savedmodel.zip" for s in RELEASE_STEMS.values() if (args.release / f"{s}.savedmodel.zip").exists()]
    ckpt_bytes = 0
    for z in zips:
        with open_checkpoint(z) as ck:
            ckpt_bytes += sum(int(np.prod(s)) * np.dtype(ck.dtypes[n]).itemsize for n, s in ck.shapes.items())
    zip_bytes = sum(z.stat().st_size for z in zips)
    t = time.perf_counter()
    for z in zips:
        with open(z, "rb") as f:
            while f.read(1 << 24):
                pass
    read_s = time.perf_counter() - t
    t = time.perf_counter()  # the floor for any reader of these files: inflate every member once
    for z in zips:
        with zipfile.ZipFile(z) as zf:
            for info in zf.infolist():
                with zf.open(info) as f:
                    while f.read(1 << 24):
                        pass
    inflate_s = time.perf_counter() - t

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-convert-")) / "weights"
    base = rss_bytes()
    with PeakRSS() as peak:
        t = time.perf_counter()
        convert_release(args.release, out, progress=False)
        convert_s = time.perf_counter() - t
    above = peak.peak - base
    mib = 1 / 2**20
    print(f"release {args.release}: {len(zips)} models, checkpoint {ckpt_bytes * mib:.0f} MiB of variables, "
          f"zips {zip_bytes * mib:.0f} MiB on disk")
    print(f"{'':<34} {'value':>10}  ratio")
    print(f"{'conversion wall time':<34} {convert_s:>9.1f}s  {convert_s / read_s:.1f}x the time to read the zips "
          f"({read_s:.2f} s)")
    print(f"{'':<34} {'':>10}  {convert_s / inflate_s:.1f}x the time to read and inflate every member "
          f"({inflate_s:.2f} s)")
    print(f"{'peak RSS above baseline':<34} {above * mib:>7.0f}MiB  {above / ckpt_bytes:.2f}x the checkpoint size "
          f"(bar: under 2x; baseline {base * mib:.0f} MiB)")


if __name__ == "__main__":
    main()
