"""AttFind's heavy step spread over Ray workers (``cli.py attfind --workers N``).

The driver (the process that runs ``attfind.run.run``) keeps everything that decides the
result: the style ranges, the cache and the selection. The workers only compute effects, each
with its own copy of the PyTorch models (loaded once per worker from the converted folder) and
the same code and batches as the single-process path (``TorchEffects.image``), so on the same
device type their effects are the single-process run's, bit for bit.

A unit of work is one image: at the release's size one image is 5,760 x 2 evaluations (a
minute on a GPU, hours on a CPU core), 250 of them balance well over up to ~60 workers, and a
unit maps onto exactly one entry of the per-image effect cache. The driver writes each entry
as its result arrives (``attfind.cache.compute_effects``, write-then-rename), so a worker never
needs the driver's disk, a killed worker leaves nothing behind, and a resumed run, distributed
or not, reads the same entries.

Faults: a worker that dies (killed, out of memory, its node lost) fails its unit; the driver
starts a replacement, puts the unit back at the head of the queue, and says so. A worker that
cannot load the weights fails the run with one line. Ctrl-C (or any error) stops the workers,
and the local cluster if this run started it.

Threads: a worker runs ``torch.set_num_threads(threads_per_worker)``; on a machine of C cores
the default is C // N per worker, so N workers never fight over cores (PyTorch's CPU threads
collapse when another process holds one of theirs).
"""
from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from models_pt import file_sha256
from porting.errors import PortError
from models_pt.release_facts import RELEASE_STEMS

SETUP, UNIT = "setup", "unit"
DEPTH = 2   # units queued per worker: the next image waits in the worker's queue while one runs,
            # so a worker never idles for the round trip to the driver (about 9% of a 64 px sweep)


class DistributedError(PortError):
    """The distributed sweep cannot go on (a worker cannot load the weights, workers keep dying)."""


@dataclass
class ClusterOptions:
    workers: int = 2
    address: str | None = None          # join an existing cluster (ray.init(address=...)); else start one
    device: str = "cpu"                 # "cuda": one GPU per worker (Ray's GPU resource)
    threads_per_worker: int | None = None   # default: cores // workers on a local cluster, else 1
    worker_weights: Path | None = None  # the converted folder as the workers see it (default: the driver's)
    max_deaths: int | None = None       # worker deaths tolerated before the run fails (default 2N + 2)
    worker_class: type | None = None    # default EffectsWorker; a stand-in measures Ray's own overhead


@dataclass
class SweepReport:
    """What the cluster did, for attfind.json and the log."""
    workers: int = 0
    address: str = ""
    started_cluster: bool = False
    threads_per_worker: int = 1
    device: str = "cpu"
    retried: list[dict] = field(default_factory=list)      # {"image", "worker_pid", "why"}
    units: dict[int, int] = field(default_factory=dict)    # image -> pid of the worker that computed it
    startup_seconds: float = 0.0
    compute_seconds: float = 0.0        # summed over the units, as the workers timed them
    stop_seconds: float = 0.0           # stopping the workers (and the cluster this run started)

    def to_json(self) -> dict:
        return {"workers": self.workers, "address": self.address, "started_cluster": self.started_cluster,
                "threads_per_worker": self.threads_per_worker, "device": self.device,
                "retried": self.retried, "startup_seconds": round(self.startup_seconds, 2),
                "worker_compute_seconds": round(self.compute_seconds, 2),
                "stop_seconds": round(self.stop_seconds, 2),
                "images_per_worker": _count_by_pid(self.units),
                "worker_of_image": {str(i): pid for i, pid in sorted(self.units.items())}}


def _count_by_pid(units: dict[int, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for pid in units.values():
        out[str(pid)] = out.get(str(pid), 0) + 1
    return out


# --------------------------------------------------------------------------- the worker side


class EffectsWorker:
    """One Ray worker: the models, loaded once, and ``TorchEffects.image`` per unit."""

    def setup(self, weights: str, expected: dict, device: str, batch_size: int, threads: int):
        """Load and check the models. Returns the worker's identity, or one line saying why not
        (never raises: a worker that cannot load the weights must fail the run clearly)."""
        try:
            import torch

            import models_pt
            from attfind.effects_pt import TorchEffects

            torch.set_num_threads(int(threads))
            folder = Path(weights)
            for stem, (name, sha) in expected.items():
                f = folder / name
                if not f.exists():
                    return f"{f}: no such file on this worker (pass the folder's path on the workers " \
                           "with --worker-weights, or copy it there)"
                got = file_sha256(f)
                if sha and got != sha:
                    return f"{f}: sha256 {got[:12]}... on this worker, {sha[:12]}... on the driver " \
                           "(another conversion?)"
            stems = (RELEASE_STEMS["generator"], RELEASE_STEMS["classifier"])
            models = models_pt.load(folder, need=stems)       # the one way in: models_pt.load
            self.backend = TorchEffects(*(models[s] for s in stems), batch_size=batch_size, device=device)
            import ray

            return {"pid": os.getpid(), "node": ray.util.get_node_ip_address(), "device": str(self.backend.device),
                    "threads": torch.get_num_threads()}
        except Exception as e:  # noqa: BLE001 - reported to the driver as one line
            return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"

    def pid(self) -> int:
        return os.getpid()

    def image(self, unit: int, dlatent, style_min, style_max, shift_size: float, progress):
        def on_progress(k):
            progress.add.remote(unit, k)
        t = time.perf_counter()
        base, effects = self.backend.image(dlatent, style_min, style_max, shift_size, on_progress=on_progress)
        return unit, base, effects, time.perf_counter() - t


class Progress:
    """Coordinates done per unit, summed by the driver for one progress bar over the cluster."""

    def __init__(self):
        self.done: dict[int, float] = {}

    def add(self, unit: int, k: float):
        self.done[unit] = self.done.get(unit, 0.0) + k

    def reset(self, unit: int):
        self.done.pop(unit, None)

    def total(self) -> float:
        return float(sum(self.done.values()))


# --------------------------------------------------------------------------- the driver side


def worker_threads(opts: ClusterOptions, local: bool) -> int:
    """torch threads per worker: as asked, else cores // workers on a cluster this run starts on
    this machine, else 1 (another cluster's machines are not this one)."""
    if opts.threads_per_worker:
        return int(opts.threads_per_worker)
    return max(1, (os.cpu_count() or 1) // opts.workers) if local else 1


def _init_cluster(opts: ClusterOptions, report: SweepReport, log) -> bool:
    """Join ``opts.address`` or start a local cluster; True if this call started it."""
    import ray

    if ray.is_initialized():
        report.address = "already initialised in this process"
        return False
    common = dict(include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                  configure_logging=True)
    if opts.address:
        try:
            ray.init(address=opts.address, **common)
        except (ConnectionError, ValueError, RuntimeError, TimeoutError) as e:
            raise DistributedError(f"--ray-address {opts.address}: cannot join that Ray cluster: "
                                   f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        report.address = opts.address
        return False
    cores = os.cpu_count() or 1
    threads = worker_threads(opts, local=True)
    num_gpus = None
    if opts.device.startswith("cuda"):
        import torch

        num_gpus = torch.cuda.device_count()
        if num_gpus < opts.workers:
            raise DistributedError(f"--device {opts.device} --workers {opts.workers}: each worker needs a GPU, "
                                   f"this machine has {num_gpus}")
    # the object store holds a few small arrays per unit; keep it off most of /dev/shm
    ray.init(address="local", num_cpus=max(cores, opts.workers * threads), num_gpus=num_gpus,
             object_store_memory=256 * 2 ** 20, **common)
    report.address = "local"
    log(f"started a local Ray cluster for {opts.workers} workers")
    return True


def sweep(weights: Path, expected: dict, dlatents: np.ndarray, todo: list[int], style_min, style_max,
          shift_size: float, batch_size: int, opts: ClusterOptions, report: SweepReport,
          progress: Callable[[float], None] | None = None, log: Callable[[str], None] = print,
          on_dispatch: Callable[[dict], None] | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(image, base [C], effects [2, S, C])`` for every image of ``todo``, in the order
    they finish. ``expected``: {stem: (file name, sha256)} of the generator's and the
    classifier's weights in the converted folder, which every worker checks before it loads them.
    ``progress(total)``: coordinates done so far over the cluster. ``on_dispatch(state)``: called
    after each round of submissions with ``{"in_flight": {pid: [images]}, "done": n}`` (for
    tests and monitors)."""
    import ray

    if opts.workers < 1:
        raise DistributedError(f"--workers {opts.workers}: need at least one worker")
    t0 = time.perf_counter()
    started = _init_cluster(opts, report, log)
    report.started_cluster = started
    actors: dict = {"workers": {}, "lost": [], "tracker": None}   # what the finally below must stop
    try:
        job = SweepJob(weights, expected, dlatents, todo, style_min, style_max, shift_size, batch_size)
        yield from Scheduler(job, opts, report, log, t0, started, actors).run(progress, on_dispatch)
    finally:
        t_stop = time.perf_counter()
        handles = list(actors["workers"].values()) + actors["lost"] + [actors["tracker"]]
        for w in (h for h in handles if h is not None):
            try:
                ray.kill(w)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if started:
            ray.shutdown()
        report.stop_seconds = time.perf_counter() - t_stop


@dataclass
class SweepJob:
    """What the workers compute: the effects of the ``todo`` images of ``dlatents`` with the given
    style ranges and shift, from the converted weights ``expected`` names ({stem: (file, sha256)})."""
    weights: Path
    expected: dict
    dlatents: np.ndarray
    todo: list
    style_min: np.ndarray
    style_max: np.ndarray
    shift_size: float
    batch_size: int


@dataclass
class InFlight:
    """One submitted call: a worker's setup (``image`` None) or one image's effects."""
    kind: str          # SETUP or UNIT
    slot: int
    image: int | None = None


class Scheduler:
    """The driver's loop (``sweep``'s body), as a small state machine: workers by slot, what each
    has in flight, the free places in their queues, the images still to run. The actors it starts
    go into ``actors``, which ``sweep`` stops however the loop ends."""

    def __init__(self, job: SweepJob, opts: ClusterOptions, report: SweepReport, log, t0: float, started: bool,
                 actors: dict):
        import ray

        self.job, self.opts, self.report, self.log, self.t0, self.actors = job, opts, report, log, t0, actors
        report.workers, report.device = opts.workers, opts.device
        self.threads = report.threads_per_worker = worker_threads(opts, local=started)
        self.gpus = 1 if opts.device.startswith("cuda") else 0
        self.worker_cls = ray.remote(num_cpus=self.threads, num_gpus=self.gpus,
                                     max_restarts=0)(opts.worker_class or EffectsWorker)
        self.tracker = actors["tracker"] = ray.remote(num_cpus=0)(Progress).remote()
        self.workers = actors["workers"]          # slot -> actor handle
        self.worker_weights = str(opts.worker_weights or job.weights)
        self.device = "cuda" if self.gpus else opts.device   # Ray sets CUDA_VISIBLE_DEVICES per worker
        self.max_deaths = opts.max_deaths if opts.max_deaths is not None else 2 * opts.workers + 2
        self.lo_ref, self.hi_ref = ray.put(np.asarray(job.style_min)), ray.put(np.asarray(job.style_max))
        self.pids: dict[int, int] = {}            # slot -> pid, once set up
        self.inflight: dict[object, InFlight] = {}   # ObjectRef -> what it is
        self.idle: deque[int] = deque()           # a slot appears once per free place in its queue
        self.dead_pids: dict[int, int | None] = {}
        self.queue = deque(job.todo)
        self.deaths = self.next_slot = self.done = 0

    # ------------------------------------------------------------------ workers
    def start_worker(self) -> None:
        slot, self.next_slot = self.next_slot, self.next_slot + 1
        self.workers[slot] = self.worker_cls.remote()
        ref = self.workers[slot].setup.remote(self.worker_weights, self.job.expected, self.device,
                                              self.job.batch_size, self.threads)
        self.inflight[ref] = InFlight(SETUP, slot)

    def units_in_flight(self) -> bool:
        return any(v.kind == UNIT for v in self.inflight.values())

    def lose(self, slot: int, why: str, image: int | None) -> None:
        """A worker is gone: replace it (once per worker) and put its image back in the queue."""
        if slot in self.workers:
            self.deaths += 1
            self.dead_pids[slot] = self.pids.pop(slot, None)
            self.actors["lost"].append(self.workers.pop(slot))   # killed at the end, in case it lives on
            while slot in self.idle:
                self.idle.remove(slot)
            if self.deaths > self.max_deaths:
                raise DistributedError(f"{self.deaths} workers lost (last: {why}); giving up. The effects computed "
                                       "so far are in the cache: the run resumes from there")
            if self.queue or image is not None or self.units_in_flight():
                self.start_worker()
        pid = self.dead_pids.get(slot)
        if image is None:
            self.log(f"worker {pid} lost while loading the models ({why}); a new one is started")
            return
        self.queue.appendleft(image)
        self.tracker.reset.remote(image)
        self.report.retried.append({"image": int(image), "worker_pid": pid, "why": why})
        self.log(f"worker {pid} lost ({why}) with image {image} in its hands; the image is retried on another worker")

    # ------------------------------------------------------------------ the loop
    def dispatch(self) -> None:
        """Every free place in a worker's queue gets the next image."""
        while self.idle and self.queue:
            slot, image = self.idle.popleft(), self.queue.popleft()
            ref = self.workers[slot].image.remote(image, self.job.dlatents[image], self.lo_ref, self.hi_ref,
                                                  self.job.shift_size, self.tracker)
            self.inflight[ref] = InFlight(UNIT, slot, image)

    def state(self) -> dict:
        """``{"in_flight": {pid: [images]}, "done": n}`` (for ``on_dispatch``)."""
        held: dict = {}
        for v in self.inflight.values():
            if v.kind == UNIT:
                held.setdefault(self.pids.get(v.slot), []).append(v.image)
        return {"in_flight": held, "done": self.done}

    def collect(self, ref):
        """The finished call ``ref``: ``(image, base, effects)`` for a unit, None for a setup or a
        lost worker (handled here); raises for a computation that failed."""
        import ray

        what = self.inflight.pop(ref)
        try:
            value = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError) as e:
            self.lose(what.slot, type(e).__name__, what.image)
            return None
        except ray.exceptions.RayTaskError as e:   # the computation itself raised: not a fault
            cause = e.cause if getattr(e, "cause", None) is not None else e
            where = f"image {what.image}" if what.kind == UNIT else "setup"
            raise DistributedError(f"worker {self.pids.get(what.slot)} failed on {where}: {type(cause).__name__}: "
                                   f"{str(cause).splitlines()[0] if str(cause) else ''}") from None
        except ray.exceptions.RayError as e:       # killed by Ray's memory monitor, unschedulable...
            self.lose(what.slot, type(e).__name__, what.image)
            return None
        if what.kind == SETUP:
            self.set_up(what.slot, value)
            return None
        image, base, effects, seconds = value
        self.report.units[int(image)] = self.pids.get(what.slot)
        self.report.compute_seconds += seconds
        self.done += 1
        if what.slot in self.workers:
            self.idle.append(what.slot)
        return int(image), base, effects

    def set_up(self, slot: int, value) -> None:
        if isinstance(value, str):
            raise DistributedError(f"a Ray worker could not load the weights: {value}")
        self.pids[slot] = value["pid"]
        if not self.report.startup_seconds and len(self.pids) == len(self.workers):
            self.report.startup_seconds = time.perf_counter() - self.t0
            self.log(f"{len(self.pids)} workers ready in {self.report.startup_seconds:.1f} s (pids "
                     f"{', '.join(str(p) for p in self.pids.values())}; {self.threads} torch "
                     f"thread{'s' if self.threads > 1 else ''} each{', one GPU each' if self.gpus else ''})")
        self.idle.extend([slot] * DEPTH)

    def run(self, progress=None, on_dispatch=None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        import ray

        for _ in range(min(self.opts.workers, max(1, len(self.job.todo)))):
            self.start_worker()
        last_poll = 0.0
        while self.queue or self.units_in_flight():   # a replacement still loading at the end is not waited for
            self.dispatch()
            if on_dispatch is not None:
                on_dispatch(self.state())
            if not self.inflight:
                raise DistributedError("no worker left to run the remaining images")
            ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=0.5)
            if progress is not None and time.perf_counter() - last_poll > 0.5:
                last_poll = time.perf_counter()
                progress(ray.get(self.tracker.total.remote()))
            for ref in ready:
                got = self.collect(ref)
                if got is not None:
                    yield got
        if progress is not None:
            progress(ray.get(self.tracker.total.remote()))
