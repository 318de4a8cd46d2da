"""What one AttFind evaluation costs at 256 px, and what fraction of the machine's peak a sweep reaches.

    python bench/attfind_flops.py [--resolution 256] [--batch 4] [--threads N] [--device cpu|cuda]
                                  [--no-time]

AttFind's PyTorch backend (``attfind.effects_pt.TorchEffects.image``) sweeps one image as follows:
the style vector and the base logits once; then per conv style layer L, the synthesis up to L
once (the *prefix*, ``synthesis_state``), and for each of that layer's ``2 x size_L`` edits the
synthesis from L on plus the classifier (the *suffix*). One evaluation therefore costs

    suffix_L + prefix_L / (2 size_L)        for an edit of layer L,

and a sweep's mean per evaluation weighs each layer by its share ``size_L / S`` of the S
coordinates. This script counts those FLOPs per layer with ``torch.utils.flop_counter`` on the
release's configuration (generator widths up to 512, MobileNetV1 1.0 at 256 px; random weights,
which do not change the work), times the same calls on a batch of ``--batch`` edits per layer,
and prints evaluations/s, achieved FLOP/s and the fraction of the device's peak.

The count covers what ``FlopCounterMode`` counts: convolutions and matrix products, 2 FLOPs per
multiply-add. Elementwise work (modulation, demodulation, bias, leaky ReLU, noise, FIR filters
run as convolutions are counted) is left out; it moves memory rather than FLOPs.

The peak (``device_peak``): on a CPU, cores x FMA units x SIMD lanes x 2 x clock, with the lanes
from the CPU's flags (AVX-512: 16 float32 lanes, AVX2: 8, else 4), 2 FMA units per core (every
AVX2 server core of AMD since Zen 2 and of Intel since Haswell), and the clock the kernel
measured at boot (``tsc: Detected ... MHz`` in ``dmesg``, else ``cpu MHz``, else ``bogomips /
2``); the cores are ``--threads`` (on a CPU with two threads per core, give the physical
cores: the peak counts each thread as a core). On a GPU, the
datasheet figures of ``GPU_PEAKS`` (dense, no sparsity).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# NVIDIA datasheets, dense TFLOP/s: (FP32, TF32 tensor cores, BF16 tensor cores), with how
# torch.cuda.get_device_name spells the card (an H100 SXM reports "H100 80GB HBM3")
GPU_PEAKS = {"H200": (67.0, 494.7, 989.4), "H100 SXM": (67.0, 494.7, 989.4), "H100 PCIe": (51.0, 378.0, 756.0),
             "A100": (19.5, 156.0, 312.0), "L4": (30.3, 60.0, 121.0)}


def gpu_model(name: str) -> str | None:
    """The ``GPU_PEAKS`` key of a CUDA device name, or None."""
    words = name.replace("-", " ").split()
    if "H200" in words:
        return "H200"
    if "H100" in words:
        return "H100 PCIe" if "PCIe" in words else "H100 SXM" if {"SXM", "SXM5", "HBM3"} & set(words) else None
    return next((key for key in ("A100", "L4") if key in words), None)

@dataclass
class LayerCost:
    layer: int
    resolution: int
    size: int             # StyleSpace coordinates of this layer
    prefix: float         # FLOPs of the synthesis up to this layer, once per image and layer
    suffix: float         # FLOPs of one edited image from this layer on, classifier included
    seconds: float | None = None   # measured seconds per evaluation (prefix share included)

    @property
    def per_evaluation(self) -> float:
        return self.suffix + self.prefix / (2 * self.size)


def cpu_clock_hz() -> tuple[float, str]:
    """The clock the kernel measured at boot, and where it was read."""
    try:
        log = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10).stdout
        found = re.search(r"tsc: Detected ([0-9.]+) MHz", log)
        if found:
            return float(found.group(1)) * 1e6, "dmesg 'tsc: Detected'"
    except (OSError, subprocess.SubprocessError):
        pass
    text = Path("/proc/cpuinfo").read_text()
    found = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", text, re.M)
    if found:
        return float(found.group(1)) * 1e6, "/proc/cpuinfo 'cpu MHz'"
    return float(re.search(r"^bogomips\s*:\s*([0-9.]+)", text, re.M).group(1)) / 2 * 1e6, "/proc/cpuinfo bogomips / 2"


def cpu_peak(cores: int) -> tuple[float, str]:
    """float32 FLOP/s of ``cores`` cores, and how it was derived."""
    found = re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M) if Path("/proc/cpuinfo").exists() else None
    if found is None:
        return float("nan"), "unknown (no x86 flags in /proc/cpuinfo)"
    flags = set(found.group(1).split())
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    per_lane = 2 if "fma" in flags else 1
    clock, source = cpu_clock_hz()
    peak = cores * 2 * lanes * per_lane * clock
    return peak, (f"{cores} cores x 2 FMA units x {lanes} float32 lanes x {per_lane} FLOPs x "
                  f"{clock / 1e9:.3f} GHz ({source}) = {peak / 1e9:.1f} GFLOP/s")


def device_peaks(device, threads: int) -> dict:
    """name -> (FLOP/s, how it was derived) of the device the sweep runs on."""
    import torch

    if device.type != "cuda":
        return {"float32": cpu_peak(threads)}
    key = gpu_model(torch.cuda.get_device_name(device))
    if key is None:
        return {}
    return {k: (v * 1e12, f"{key} datasheet, dense") for k, v in zip(("float32", "TF32", "BF16"), GPU_PEAKS[key])}


def peak_memory_gib(device) -> float:
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20   # Linux: KiB


def release_widths(resolution: int) -> list[int]:
    """The release generator's widths at resolutions 4, 8, ..., ``resolution``: 512 up to 64 px,
    then halving (256 px: 512, 512, 512, 512, 512, 256, 128)."""
    return [min(512, 32768 // r) for r in [2 ** i for i in range(2, resolution.bit_length())]]


def release_models(resolution: int):
    """The release's generator and classifier configurations with random weights (the work does
    not depend on the weights), made to behave like trained ones by ``calibrate`` on 16 images."""
    import torch

    from models_pt.classifier import MobileNetV1
    from models_pt.generator import Generator

    from models_pt.release_facts import CLASSIFIER_ASSUMED, MAPPING_LR_MUL

    torch.manual_seed(0)
    g = Generator(resolution=resolution, channels=release_widths(resolution), z_dim=512, w_dim=514, label_size=2,
                  mapping_layers=8, mapping_lr_mul=MAPPING_LR_MUL).eval()
    c = MobileNetV1(alpha=1.0, depth_multiplier=1, num_classes=2, **CLASSIFIER_ASSUMED).eval()
    calibrate(g, c, torch.randn(16, g.config["w_dim"]))
    return g, c


def calibrate(g, c, dlatents) -> None:
    """Random models made to behave like trained ones, in place, for inference only: the style
    biases 0 and the noise strengths 0.1, so the styles lie near 1 as trained ones do; the
    classifier's BatchNorm statistics those of the images of ``dlatents`` (with PyTorch's
    initial ones, every image gets the same logits to 1e-3, and AttFind's effects would be
    rounding noise), and its class-1 bias putting their median on the boundary (AttFind needs
    images of both classes)."""
    import torch

    for name, p in [*g.named_parameters(), *c.named_parameters()]:
        p.requires_grad_(False)     # inference only (and FlopCounterMode's module tracker needs no grad hooks then)
        if name.endswith("bias") and "styles" in name:
            p.zero_()
        elif "noise_strength" in name:
            p.fill_(0.1)
    with torch.no_grad():
        images = g.synthesis(*g.style_vectors(torch.as_tensor(dlatents))).clamp(-1, 1)
        for m in c.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None          # a cumulative average: exactly this batch's statistics
        c.train()(images)
        c.eval()
        logits = c(images)                 # the classes' bias, so that half of the images fall in each
        c.head.conv.bias[1] -= (logits[:, 1] - logits[:, 0]).median()


def flops_of(fn) -> float:
    return counted(fn)[0]


def counted(fn):
    """``(FLOPs, result)`` of calling ``fn``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = fn()
    return float(counter.get_total_flops()), out


def layer_costs(g, classifier, w, batch: int) -> list[LayerCost]:
    """Per conv style layer: the prefix's FLOPs and one edit's (suffix and classifier)."""
    import torch

    with torch.no_grad():
        conv, rgb = g.style_vectors(w)
        costs = []
        for layer, size in enumerate(g.space.sizes):
            prefix, state = counted(lambda: g.synthesis_state(conv, rgb, layer))
            styles = [s.expand(batch, -1) for s in conv]
            rgbs = [s.expand(batch, -1) for s in rgb]
            suffix = flops_of(lambda: classifier(g.synthesis(styles, rgbs, start=layer, state=state))) / batch
            costs.append(LayerCost(layer, style_layer_resolution(g, layer), size, prefix, suffix))
    return costs


def style_layer_resolution(g, layer: int) -> int:
    """The resolution of the block conv style layer ``layer`` belongs to (``b4_conv``: 4;
    ``b8_conv0``, ``b8_conv1``: 8; ...), from the generator's own names."""
    name = list(g.conv_styles.keys())[layer]
    return int(name[1:name.index("_")])


def sweep_flops(costs: list[LayerCost], counts: list[int], base: float) -> float:
    """FLOPs of one image's sweep of ``counts[L]`` coordinates of each layer L (both directions):
    each layer's prefix once where it has any, ``2 counts[L]`` suffixes, and the unedited
    image once (``base``: the whole synthesis and classifier)."""
    return base + sum(c.prefix + 2 * n * c.suffix for c, n in zip(costs, counts) if n)


def time_layers(g, classifier, w, costs: list[LayerCost], batch: int, device) -> None:
    """Seconds per evaluation of each layer, from one timed batch of edits (after a warm-up)."""
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        conv, rgb = g.style_vectors(w)
        styles = [s.expand(batch, -1) for s in conv]
        rgbs = [s.expand(batch, -1) for s in rgb]
        for cost in costs:
            def prefix():
                return g.synthesis_state(conv, rgb, cost.layer)

            def suffix(state):
                return classifier(g.synthesis(styles, rgbs, start=cost.layer, state=state).clamp(-1, 1))

            suffix(prefix())
            sync()
            t0 = time.perf_counter()
            state = prefix()
            sync()
            t1 = time.perf_counter()
            suffix(state)
            sync()
            t2 = time.perf_counter()
            cost.seconds = (t2 - t1) / batch + (t1 - t0) / (2 * cost.size)
            print(f"  timed layer {cost.layer:2d}: {cost.seconds * 1e3:8.1f} ms per evaluation", flush=True)


def own_layer(costs: list[LayerCost], classifier: float) -> list[float]:
    """FLOPs of each edited layer's own step in its suffix (its conv, and the ToRGB it feeds):
    what sharing one pass among all edits of a layer could save at most (a modulated conv is
    linear in its style before demodulation: one pass plus a rank-one term per edit)."""
    return [a.suffix - b.suffix for a, b in zip(costs, costs[1:])] + [costs[-1].suffix - classifier]


def summary(costs: list[LayerCost], classifier: float) -> dict:
    total = sum(c.size for c in costs)
    mean = sum(c.size * c.per_evaluation for c in costs) / total
    out = {"coordinates": total, "flops": mean,
           "shared_pass_saving": sum(c.size * own for c, own in zip(costs, own_layer(costs, classifier))) / total / mean}
    if all(c.seconds is not None for c in costs):
        out["seconds"] = sum(c.size * c.seconds for c in costs) / total
    return out


def print_table(costs: list[LayerCost], peak: float | None) -> None:
    total = sum(c.size for c in costs)
    print("| layer | resolution | coordinates | share | prefix GFLOP | GFLOP per evaluation | ms per evaluation "
          "| % of peak |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for c in costs:
        ms = f"{c.seconds * 1e3:.1f}" if c.seconds else "-"
        pct = f"{100 * c.per_evaluation / c.seconds / peak:.1f}" if c.seconds and peak else "-"
        print(f"| {c.layer} | {c.resolution} | {c.size} | {c.size / total:.3f} | {c.prefix / 1e9:.2f} | "
              f"{c.per_evaluation / 1e9:.2f} | {ms} | {pct} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4, help="Edits per timed batch (TorchEffects' batch_size).")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="PyTorch's CPU threads; the CPU peak counts each as a core.")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-time", action="store_true", help="Count only; time nothing.")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g, classifier = release_models(args.resolution)
    w = torch.randn(1, 514)
    print(f"AttFind at {args.resolution} px: {len(g.space)} coordinates in {len(g.space.sizes)} conv style layers; "
          f"torch {torch.__version__} on {device} ({args.threads} threads)")
    costs = layer_costs(g, classifier, w, args.batch)
    with torch.no_grad():
        classifier_flops = flops_of(lambda: classifier(torch.zeros(1, 3, args.resolution, args.resolution)))
    peaks = device_peaks(device, args.threads)
    if not args.no_time:
        from attfind.effects_pt import keep_freed_batch_memory

        if device.type == "cpu":
            keep_freed_batch_memory()   # as TorchEffects does: no page faults per batch
        g = g.to(device).to(memory_format=torch.channels_last)
        from models_pt.inference import optimize_for_inference

        time_layers(g, optimize_for_inference(classifier.to(device)), w.to(device), costs, args.batch, device)
    peak = peaks.get("float32", (None, ""))[0]
    print_table(costs, peak)
    s = summary(costs, classifier_flops)
    print(f"\nmean per evaluation: {s['flops'] / 1e9:.2f} GFLOP (weighted by each layer's coordinates); "
          f"a release of 250 images x {s['coordinates']} coordinates x 2 directions: "
          f"{250 * 2 * s['coordinates'] * s['flops'] / 1e15:.1f} PFLOP")
    print(f"at most {100 * s['shared_pass_saving']:.1f}% of it is the edited layer's own step, which one pass per "
          f"layer shared by its edits could save; the rest is the layers after the edit and the classifier "
          f"({classifier_flops / 1e9:.2f} GFLOP)")
    for name, (value, how) in peaks.items():
        print(f"peak {name}: {how}")
    if "seconds" in s:
        rate, achieved = 1 / s["seconds"], s["flops"] / s["seconds"]
        line = f"measured: {rate:.2f} evaluations/s, {achieved / 1e9:.1f} GFLOP/s achieved"
        for name, (value, _) in peaks.items():
            line += f", {100 * achieved / value:.1f}% of the {name} peak"
        hours = 250 * 2 * s["coordinates"] / rate / 3600
        print(line + f"; a release: {hours:,.0f} h on this device")
    print(f"peak memory: {peak_memory_gib(device):.2f} GiB ({'GPU, allocated' if device.type == 'cuda' else 'resident, whole process'})")


if __name__ == "__main__":
    main()
