"""Runs pinned to recorded branches of piecewise-linear ops, for the float32 verdict of a
training check (``Branches``): a gradient through a leaky ReLU or ReLU6 jumps where a float32
rounding moves an input across the kink, so a training check holds the port's float32 run to its
float64 run on the same branches, and runs the rounding model (``porting.rounding``) on the clean
run's branches. ``porting.verdict.port_runs(..., branches=True)`` is the one user.

Layer: ``porting`` (PyTorch only).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from porting.rounding import SAMPLES, simulate

aten = torch.ops.aten


PIECEWISE = (aten.leaky_relu.default, aten.leaky_relu_backward.default, aten.hardtanh.default,
             aten.hardtanh_backward.default)


def _region(func, args) -> torch.Tensor:
    """Which piece of a piecewise-linear op each element takes: leaky ReLU (and its backward):
    ``x > 0``; hardtanh (ReLU6): 0 at or below its minimum, 1 inside, 2 at or above its maximum."""
    x = args[1] if func in (aten.leaky_relu_backward.default, aten.hardtanh_backward.default) else args[0]
    if func in (aten.leaky_relu.default, aten.leaky_relu_backward.default):
        return x > 0
    lo, hi = (args[1], args[2]) if func is aten.hardtanh.default else (args[2], args[3])
    return (x > lo).to(torch.int8) + (x >= hi).to(torch.int8)


class Branches(TorchDispatchMode):
    """Record which piece every leaky ReLU and ReLU6 (and their backward ops) took, or replay a
    recording: the op then computes its result on the recorded pieces.

    Why: a gradient through a piecewise-linear activation jumps where a float32 rounding moves
    an input across the kink (by the slope: 1 against 0.2, or 1 against 0), so a correct float32
    run's gradient can differ from the float64 truth by a jump no rounding model bounds (seen: a
    discriminator's R1 gradient, PyTorch's oneDNN against Eigen on one image of four). The float32
    verdict of a training check therefore holds the float32 run to the port's float64 run *on
    the float32 run's branches*, and the rounding model runs on the clean run's branches: what is
    judged is the rounding, not the choice of branch (that choice is the forward check's, which
    judges every activation). ``flips`` counts the elements a replay changed."""

    def __init__(self, replay: list | None = None):
        super().__init__()
        self.record: list[tuple] = []          # (op, region) per call, in call order
        self.replay, self.index, self.flips = replay, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in PIECEWISE:
            return func(*args, **kwargs)
        if self.replay is None:
            self.record.append((func, _region(func, args)))
            return func(*args, **kwargs)
        if self.index >= len(self.replay):
            raise RuntimeError("branch replay: more piecewise ops than were recorded (another graph?)")
        recorded_func, region = self.replay[self.index]
        self.index += 1
        own = _region(func, args)
        if recorded_func is not func or own.shape != region.shape:
            raise RuntimeError(f"branch replay: op {self.index - 1} is {func} of shape {tuple(own.shape)}, "
                               f"the recording's {recorded_func} of shape {tuple(region.shape)} (another graph?)")
        self.flips += int((own != region).sum())
        if func is aten.leaky_relu.default:
            x, slope = args[0], (args[1] if len(args) > 1 else 0.01)
            return torch.where(region, x, x * slope)
        if func is aten.leaky_relu_backward.default:
            g, slope = args[0], args[2]
            return torch.where(region, g, g * slope)
        if func is aten.hardtanh.default:
            x, lo, hi = args[0], args[1], args[2]
            return torch.where(region == 0, torch.full_like(x, lo), torch.where(region == 2, torch.full_like(x, hi), x))
        g = args[0]                                   # hardtanh_backward: the gradient inside only
        return torch.where(region == 1, g, torch.zeros_like(g))


# ----------------------------------------------------------------- runs pinned to recorded branches

def recorded(run: Callable[[], dict]) -> tuple[dict, list]:
    """``run()`` and the ``Branches`` recording of it."""
    with Branches() as rec:
        out = run()
    return out, rec.record


def replayed(run: Callable[[], dict], branches: list) -> tuple[dict, int]:
    """``run()`` on recorded ``branches``, and how many elements took another piece than their own."""
    with Branches(replay=branches) as rep:
        out = run()
    if rep.index != len(branches):
        raise RuntimeError(f"branch replay: {rep.index} piecewise ops ran, {len(branches)} were recorded "
                           "(another graph?)")
    return out, rep.flips


def model_errors_on_branches(run64: Callable[[], dict], samples: int | None = None, clean: dict | None = None,
                             branches: list | None = None) -> tuple[dict, dict]:
    """The rounding model's float32 error of every quantity a float64 ``run64`` returns
    (``simulate``), each noisy run on the clean run's ``branches``; without them the clean
    run is made (and recorded) here, and ``clean`` must not be given."""
    if branches is None:
        if clean is not None:
            raise ValueError("give the clean run's branches with it (recorded(run64)), or neither")
        clean, branches = recorded(run64)
    return simulate(lambda: replayed(run64, branches)[0], SAMPLES if samples is None else samples, clean=clean)


def float32_against_float64(run32: Callable[[], dict], run64: Callable[[], dict]) -> tuple[dict, dict, int]:
    """``(float32 run, the float64 run on the float32 run's branches, flips)``: what the float32
    verdict of a training quantity compares (see ``Branches``). Off NNPACK, as verify's passes."""
    from porting import kernels

    with kernels.summing_kernels():
        got32, branches = recorded(run32)
    ref32, flips = replayed(run64, branches)
    return got32, ref32, flips
