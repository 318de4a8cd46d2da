"""``verify --train``: is the port ready for training, not only for inference?

The forward check (``porting.verdict``) runs both models in inference mode. Training adds what
inference never touches: BatchNorm's batch statistics and its running-statistics update
(momentum, biased or unbiased variance), dropout, the generator's per-image noise, the
minibatch standard deviation at the batch size trained with, every gradient, and the
second-order terms of StyleGAN2's regularisers (R1 differentiates the discriminator's input
gradient, path length the generator's). This module is the PyTorch half of that check and its
verdict; ``crosscheck.train_check`` computes the TF half.

**What is compared** (per model kind, in training mode, on the same batch, dropout at rate 0 on
both sides since its masks are random; its rate, like the BatchNorm momentum and the training
noise, comes from the weights' header on both sides: what the release cannot show is an
assumption of ``release_facts``, which no check against the rebuild can test):

* ``output``: the model's output in training mode; the loss is ``L = sum(output * upstream)``
  with a fixed random ``upstream`` (every output element weighted differently);
* ``dL/d<input>``: the gradient with respect to the input (images, or z for the generator);
* ``dL/d<parameter>``: each parameter's gradient. TF's gradient of each variable is mapped into
  the PyTorch layout through the *same mapping rules* as the weights (their permutations; a
  shift such as ``plus_one`` has the identity as derivative), so a gradient in the wrong layout,
  or a parametrisation that differs (an equalized-learning-rate scale folded into the stored
  weight changes every gradient by that scale, and what Adam does with it) is caught;
* the classifier: every BatchNorm's running mean and variance after that training step;
* the discriminator: R1 per image (``models_pt.training.r1_penalty``) and the gradient of its sum
  with respect to every parameter; the generator: the path length per image
  (``path_length_penalty``, ``w`` from the mapping network) and its gradients, both second order.

**The verdict** is the forward check's rule (``porting.verdict.VerdictRule``), row by row: exact in
float64 against TF's float64 run, and the port's float32 run within 4x the rounding model's
float32 error (``porting.rounding``, whose rules cover the backward ops too). One exception is
TF's own: Keras' float64 BatchNorm (no fused kernel for float64) updates the moving variance
with the *biased* batch variance, its float32 fused kernel (what TF trains the classifier with)
with the *unbiased* one; the truth of the moving variance is the fused kernel's rule on TF's
float64 batch statistics, and TF's own float32 run is judged against it as a row of its own.
"""
from __future__ import annotations

import copy
import time
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from models_pt import training as pt_training
from porting import kinds, mapping
from porting.branches import model_errors_on_branches
from porting.verdict import RULE, Report, VerdictRule, judged, port_runs

TRAIN_IMAGES = 4          # images per check: one minibatch-stddev group; R1 and path length are costly
TRAIN_KINDS = ("classifier", "encoder", "discriminator", "generator")


# ----------------------------------------------------------------- inputs (shared by both sides)

def train_inputs(kind: str, config: dict, n: int = TRAIN_IMAGES, size: int | None = None,
                 seed: int = 0) -> dict[str, np.ndarray | list]:
    """The batch of a training check, NumPy, in TF's layouts: the kind's verify inputs (checked
    not to be degenerate) or, for the generator, z and labels; the noise the generator's convs
    add (one [n, 1, r, r] array per conv); ``upstream``, the weights of the loss; ``pl_y``, the
    image-space direction of the path length."""
    spec = kinds.get(kind).verify
    rng = np.random.default_rng(seed + 7000)
    if kind == "generator":
        res = [4 * 2 ** i for i in range(len(config["channels"]))]
        sizes = [4] + [r for r in res[1:] for _ in range(2)]
        out = {"z": rng.normal(0, 1, (n, config["z_dim"])),
               "labels": rng.dirichlet(np.ones(config["label_size"]), n),
               "noise": [rng.normal(0, 1, (n, 1, r, r)) for r in sizes]}
        image = (n, 3, config["resolution"], config["resolution"])
        out["upstream"] = rng.normal(0, 1, image)
        out["pl_y"] = rng.normal(0, 1, image) / config["resolution"]   # StyleGAN2: 1 / sqrt(pixels)
        return {k: [a.astype(np.float32) for a in v] if isinstance(v, list) else v.astype(np.float32)
                for k, v in out.items()}
    size = size or spec.default_size(config)
    x = spec.inputs(config, n, size, seed)
    spec.check_inputs(x)
    if kind == "discriminator":
        images, labels = x
        out = {"images": images, "labels": labels}
    else:
        out = {"images": x}
    units = {"classifier": "num_classes", "encoder": "latent_size", "discriminator": None}[kind]
    out["upstream"] = rng.normal(0, 1, (n, config[units] if units else 1)).astype(np.float32)
    return out


def _input_name(kind: str) -> str:
    return "z" if kind == "generator" else "images"


# ----------------------------------------------------------------- the PyTorch side

def prepare_module(module: nn.Module) -> nn.Module:
    """A copy in training mode, dropout at rate 0 (TF's rebuild gets rate 0 too)."""
    m = copy.deepcopy(module).train()
    for d in m.modules():
        if isinstance(d, nn.Dropout):
            d.p = 0.0
    return m


def _t(a, dtype, requires_grad=False):
    t = torch.from_numpy(np.ascontiguousarray(a).astype(dtype))
    return t.requires_grad_(True) if requires_grad else t


def _grads(module, loss, prefix: str) -> dict[str, torch.Tensor]:
    params = [(k, p) for k, p in module.named_parameters() if p.requires_grad]
    found = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
    return {f"{prefix}{k}": (torch.zeros_like(p) if g is None else g) for (k, p), g in zip(params, found)}


# The penalties are looked up in models_pt.training at each call (``pt_training.r1_penalty``), so
# a negative control can swap one (porting.controls).

def pt_loss(kind: str, module: nn.Module, inputs: dict, dtype: str) -> torch.Tensor:
    """The first-order loss of a training check, ``sum(output * upstream)``, on the PyTorch side
    (what ``adam_steps`` minimises)."""
    upstream = _t(inputs["upstream"], dtype)
    if kind == "generator":
        w = module.mapping(_t(inputs["z"], dtype), _t(inputs["labels"], dtype))
        y = module(w, noise=[_t(a, dtype) for a in inputs["noise"]])
    else:
        images = _t(inputs["images"].transpose(0, 3, 1, 2) if kind == "classifier" else inputs["images"], dtype)
        y = module(images, _t(inputs["labels"], dtype)) if kind == "discriminator" else module(images)
    return (y * upstream).sum()


ADAM_STEPS = 3


def adam_steps(kind: str, module: nn.Module, inputs: dict, dtype: str, optimizer: str = "keras",
               steps: int = ADAM_STEPS, settings: dict | None = None) -> dict[str, np.ndarray]:
    """Train a copy of ``module`` (``prepare_module``) for ``steps`` steps of Adam on
    ``pt_loss``, the same batch each step. ``optimizer``: ``"keras"`` (``models_pt.training.KerasAdam``, Keras' rule) or
    ``"torch"`` (``torch.optim.Adam`` with the same settings, PyTorch's rule). ``settings``:
    lr, betas, eps (StyleGAN2's by default). Returns the parameters after the steps."""
    settings = dict(settings or pt_training.STYLEGAN2_ADAM)
    m = copy.deepcopy(prepare_module(module)).to(getattr(torch, dtype))
    params = [p for p in m.parameters() if p.requires_grad]
    if optimizer == "keras":
        opt = pt_training.KerasAdam(params, **settings)
    elif optimizer == "torch":
        opt = torch.optim.Adam(params, foreach=False, **settings)
    else:
        raise ValueError(f"optimizer must be 'keras' or 'torch', got {optimizer!r}")
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            pt_loss(kind, m, inputs, dtype).backward()
            opt.step()
    return {k: p.detach().cpu().numpy() for k, p in m.named_parameters()}


def pt_quantities(kind: str, module: nn.Module, inputs: dict, dtype: str) -> dict[str, np.ndarray]:
    """Everything a training check compares, from the PyTorch ``module`` (a ``prepare_module``
    copy, its running statistics restored by the caller), in TF's layouts for activations and
    PyTorch's for parameters (``grad <key>``, ``r1 grad <key>``, ...)."""
    out: dict[str, torch.Tensor] = {}
    with torch.enable_grad():
        upstream = _t(inputs["upstream"], dtype)
        if kind == "generator":
            z = _t(inputs["z"], dtype, True)
            labels = _t(inputs["labels"], dtype)
            noise = [_t(a, dtype) for a in inputs["noise"]]
            w = module.mapping(z, labels)
            y = module(w, noise=noise)
            loss = (y * upstream).sum()
            out["output"] = y
            out["dL/dz"] = torch.autograd.grad(loss, z, retain_graph=True)[0]
            out.update(_grads(module, loss, "grad "))
            w = module.mapping(z, labels)   # a fresh graph: the loss's was freed by its gradients
            pl = pt_training.path_length_penalty(module, w, _t(inputs["pl_y"], dtype), noise)
            out["path length"] = pl
            out.update(_grads(module, pl.sum(), "path length grad "))
        else:
            images = _t(inputs["images"].transpose(0, 3, 1, 2) if kind == "classifier" else inputs["images"],
                        dtype, True)
            args = (images, _t(inputs["labels"], dtype)) if kind == "discriminator" else (images,)
            y = module(*args)
            loss = (y * upstream).sum()
            out["output"] = y
            g = torch.autograd.grad(loss, images, retain_graph=True)[0]
            out["dL/dimages"] = g.permute(0, 2, 3, 1) if kind == "classifier" else g
            out.update(_grads(module, loss, "grad "))
            if kind == "classifier":
                out.update({k: b.clone() for k, b in module.named_buffers() if k.endswith(("running_mean", "running_var"))})
            if kind == "discriminator":
                r1 = pt_training.r1_penalty(module, images.detach(), args[1])
                out["r1"] = r1
                out.update(_grads(module, r1.sum(), "r1 grad "))
    return {k: v.detach().cpu().numpy() for k, v in out.items()}


@contextmanager
def restored_buffers(module: nn.Module):
    """Run a training step, then put the running statistics back (each run starts from the
    converted statistics)."""
    saved = {k: b.clone() for k, b in module.named_buffers()}
    try:
        yield module
    finally:
        with torch.no_grad():
            for k, b in module.named_buffers():
                b.copy_(saved[k])


def run_pt(kind: str, module: nn.Module, inputs: dict, dtype: str) -> dict[str, np.ndarray]:
    """``pt_quantities`` on a copy of ``module`` in ``dtype``, starting from its own statistics."""
    m = module if next(module.parameters()).dtype == getattr(torch, dtype) else copy.deepcopy(module).to(getattr(torch, dtype))
    with restored_buffers(m):
        return pt_quantities(kind, m, inputs, dtype)


# ----------------------------------------------------------------- TF's gradients in PyTorch's layout

def tf_to_pt(kind: str, tf_values: dict[str, np.ndarray], tf_shapes: dict[str, tuple], module: nn.Module,
             gradients: bool, where: str = "TF rebuild") -> dict[str, np.ndarray]:
    """TF variables (or their gradients) -> PyTorch state-dict keys, through the kind's mapping
    rules (the plan made from the TF model's own names and shapes)."""
    from porting.convert import prepare

    prep = prepare(list(tf_shapes), tf_shapes, where, model=kind)
    pt_shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    return mapping.apply(prep.plan, tf_values, pt_shapes, where=where, gradients=gradients, allow_nonfinite=True)


# ----------------------------------------------------------------- the verdict

def model_errors(kind: str, module64: nn.Module, inputs: dict, samples: int | None = None,
                 clean: dict | None = None, branches: list | None = None) -> tuple[dict, dict]:
    """``model_errors_on_branches`` of a training check's quantities (``run_pt`` in float64)."""
    return model_errors_on_branches(lambda: run_pt(kind, module64, inputs, "float64"), samples, clean, branches)


def judge_training(kind: str, truth: dict, tf32: dict | None, module: nn.Module, inputs: dict,
                   rule: VerdictRule = RULE, source: str = "", weights: str = "", dtype: str = "float32",
                   model_error: dict | None = None, tf_seconds: float = 0.0,
                   kernels_info: dict | None = None) -> Report:
    """Judge the PyTorch ``module`` (converted, inference or training mode) against TF's truth
    (float64) of a training check, through the verdict's pipeline (``porting.verdict.port_runs``
    with branches, ``judged``). Each row: exact (the port's float64 run against the truth), and
    fit for float32 (the port's float32 run against its float64 run on the same branches, within
    ``rule.factor`` times the rounding model's error); ``tf32``: TF's float32 run, whose error
    against the truth (on TF's own branches, so with every jump of TF's branch flips) is reported
    for information, without a score (docs/training.md)."""
    t0 = time.perf_counter()
    runs = port_runs({"port": prepare_module(module)}, lambda m, d: run_pt(kind, m["port"], inputs, d), dtype,
                     model_error=model_error, branches=True,
                     errors=lambda m64, clean, branches: model_errors(kind, m64["port"], inputs, clean=clean,
                                                                      branches=branches)[1])
    n = len(inputs[_input_name(kind)])
    described = f"{n} inputs, training mode" + ("" if runs.flips is None else f"; float32 flipped {runs.flips} branch(es)")
    report = judged(f"{kind} (train)", truth, runs, tf32=tf32, rule=rule, source=source, weights=weights,
                    described=described, tf_kernels=kernels_info, strict=True)
    report.seconds = round(tf_seconds + time.perf_counter() - t0, 2)
    report.phases = {"tf": round(tf_seconds, 2), **runs.phases}
    return report


def judge_training_controls(kind: str, truth: dict, tf32: dict | None, module: nn.Module, inputs: dict,
                            rule: VerdictRule = RULE) -> dict[str, Report]:
    """``{"correct": Report, <control>: Report, ...}``: the port and every training control of
    its kind (``porting.controls.for_training``) judged on one TF truth, with the rounding
    model run once, on the correct port."""
    from porting import controls

    m64 = copy.deepcopy(prepare_module(module)).double()
    errors = model_errors(kind, m64, inputs)[1] if tf32 is not None else None
    dtype = "float32" if tf32 is not None else "float64"
    reports = {"correct": judge_training(kind, truth, tf32, module, inputs, rule, dtype=dtype, model_error=errors)}
    for control in controls.for_training(kind):
        with controls.broken(control, module) as twin:
            reports[control.name] = judge_training(kind, truth, tf32, twin, inputs, rule, dtype=dtype,
                                                   model_error=errors)
    return reports
