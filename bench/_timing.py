"""Shared by the benchmark scripts: one way to time, the same for every framework."""
from __future__ import annotations

import os
import time


def images_per_second(fn, batch: int, min_seconds: float, warmup: int = 2, min_runs: int = 2) -> float:
    """Run ``fn`` (one batch) after ``warmup`` calls until ``min_seconds`` and ``min_runs`` are
    reached; images per second over that span."""
    for _ in range(warmup):
        fn()
    n, start = 0, time.perf_counter()
    while n < min_runs or time.perf_counter() - start < min_seconds:
        fn()
        n += 1
    return batch * n / (time.perf_counter() - start)


def use_all_cores() -> int:
    """Give both frameworks every core; returns the count."""
    import tensorflow as tf
    import torch

    cores = os.cpu_count()
    torch.set_num_threads(cores)
    tf.config.threading.set_intra_op_parallelism_threads(cores)
    return cores


def interleaved(fns: dict, batch: int, seconds: float, rounds: int) -> dict:
    """Median images per second of each of ``fns`` (name -> one batch, or None), measured in
    ``rounds`` rounds that take every function in turn, so that a shared machine's slow spell
    falls on all of them rather than on one."""
    import statistics

    live = {k: f for k, f in fns.items() if f is not None}
    for f in live.values():
        f(), f()
    got = {k: [] for k in live}
    for _ in range(rounds):
        for k, f in live.items():
            got[k].append(images_per_second(f, batch, seconds, warmup=0))
    return {k: (statistics.median(got[k]) if k in got else None) for k in fns}
