"""Which kernels a run used, for the report: a user whose table differs from ours can see why.

Float32 rounding depends on the kernels each framework picks, and those depend on the machine
and on a few switches (``docs/verification.md`` lists the ones the kernel matrix tried):

* PyTorch: oneDNN (``torch.backends.mkldnn.enabled``) or, with oneDNN off, NNPACK for float32
  convolutions of 16 or more images and its own im2col + BLAS kernels below that, oneDNN's
  instruction set (``ONEDNN_MAX_CPU_ISA``, default: the best the CPU has), ATen's vector
  kernels (``torch.backends.cpu.get_cpu_capability()``), the CPU threads, and on a GPU cuDNN
  with TF32 on or off;
* TensorFlow: its oneDNN path (``TF_ENABLE_ONEDNN_OPTS``; off by default on CPUs without
  AVX-512 VNNI and the like) or Eigen (``crosscheck.tf_side.tf_kernels``);
* onnxruntime: its version, providers and graph optimisation level (``porting.onnx_export``);
* settings that make float32 kernels compute in reduced precision (bfloat16, TF32):
  ``ONEDNN_DEFAULT_FPMATH_MODE`` (oneDNN, both frameworks), PyTorch's float32 matmul precision
  and oneDNN ``fp32_precision`` switches, cuDNN's and cuBLAS' TF32 switches on a GPU, TF's
  TF32 execution. ``float32_math`` reads them, ``reduced_float32`` names the ones that are on, and
  ``float32_diagnosis`` says, under a verdict table, when they explain a float32 failure.

Layer: ``porting`` (PyTorch only here; the TF half is in ``crosscheck``).
"""
from __future__ import annotations

import os
import platform
from contextlib import contextmanager


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def torch_kernels(device: str = "cpu") -> dict:
    """PyTorch's kernel choices in this process."""
    import torch

    out = {
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "onednn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
        "nnpack": bool(torch.backends.nnpack.is_available() and torch._C._get_nnpack_enabled()),
        "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "default (best available)",
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": cpu_name(),
    }
    if str(device).startswith("cuda"):
        out.update(cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(0),
                   cudnn_tf32=bool(torch.backends.cudnn.allow_tf32),
                   matmul_tf32=bool(torch.backends.cuda.matmul.allow_tf32))
    out["float32_math"] = float32_math()
    return out


FPMATH_ENV = ("ONEDNN_DEFAULT_FPMATH_MODE", "DNNL_DEFAULT_FPMATH_MODE")
STRICT = ("", "strict", "default")   # oneDNN's float32 math: anything else may round to bf16/f16/tf32


def fpmath_env() -> str | None:
    """``ONEDNN_DEFAULT_FPMATH_MODE`` (or its older name) as set, None where unset or empty."""
    return next((os.environ[k] for k in FPMATH_ENV if os.environ.get(k, "").strip()), None)


def float32_math() -> dict:
    """PyTorch's settings that change float32 arithmetic, as this process has them."""
    import torch

    try:
        precision = torch.get_float32_matmul_precision()
    except RuntimeError:   # PyTorch refuses to answer once a per-backend fp32_precision was set
        precision = "per backend"
    out = {"fpmath_mode": fpmath_env(), "matmul_precision": precision}
    for op in ("conv", "matmul"):
        out[f"onednn_{op}_fp32"] = str(getattr(getattr(torch.backends.mkldnn, op, None), "fp32_precision", "n/a"))
    return out


def reduced_float32(kernels: dict) -> list[str]:
    """The settings of ``kernels`` (a report's) that make float32 kernels round to fewer bits,
    each as ``setting (how to turn it off)``."""
    out = []
    pt, tf = kernels.get("pytorch") or {}, kernels.get("tensorflow") or {}
    mode = (pt.get("float32_math") or {}).get("fpmath_mode") or tf.get("fpmath_mode")
    if mode is not None and mode.strip().lower() not in STRICT:
        out.append(f"ONEDNN_DEFAULT_FPMATH_MODE={mode} (unset it, or set STRICT)")
    math = pt.get("float32_math") or {}
    if math.get("matmul_precision") in ("high", "medium"):
        out.append(f"torch.get_float32_matmul_precision() == {math['matmul_precision']!r} "
                   "(torch.set_float32_matmul_precision('highest'))")
    for op in ("conv", "matmul"):
        value = math.get(f"onednn_{op}_fp32")
        if value in ("bf16", "tf32"):
            out.append(f"torch.backends.mkldnn.{op}.fp32_precision == {value!r} (set it to 'ieee')")
    if pt.get("cudnn_tf32"):
        out.append("torch.backends.cudnn.allow_tf32 (set it False)")
    if pt.get("matmul_tf32"):
        out.append("torch.backends.cuda.matmul.allow_tf32 (set it False)")
    if tf.get("tf32_execution") and tf.get("gpus"):
        out.append("TF's TensorFloat-32 on its GPU (tf.config.experimental.enable_tensor_float_32_execution(False))")
    return out


def describe(kernels: dict) -> str:
    """One line: ``PyTorch 2.13.0 on cpu (2 threads, oneDNN, ISA default, ATen AVX2); TF ...``."""
    parts = []
    pt = kernels.get("pytorch")
    if pt:
        if pt.get("onednn"):
            conv = "oneDNN"
        elif pt.get("nnpack"):
            conv = "no oneDNN (NNPACK for >= 16 images, else im2col + BLAS)"
        else:
            conv = "no oneDNN (im2col + BLAS" + (", NNPACK off" if "nnpack" in pt else "") + ")"
        isa = pt.get("onednn_max_isa", "?")
        text = (f"PyTorch {pt.get('torch')} on {pt.get('device')} ({pt.get('threads')} threads, {conv}, "
                f"oneDNN ISA {isa.split(' ')[0]}, ATen {pt.get('aten_cpu_capability')}")
        if "cudnn_tf32" in pt:
            text += f", cuDNN TF32 {'on' if pt['cudnn_tf32'] else 'off'}"
        parts.append(text + ")")
    tf = kernels.get("tensorflow")
    if tf:
        tf32 = ""
        if "tf32_execution" in tf:
            tf32 = (f", TF32 {'on' if tf['tf32_execution'] else 'off'}"
                    f"{'' if tf.get('gpus') else ' (GPU kernels only; none here)'}")
        parts.append(f"TF {tf.get('tensorflow')} ({'oneDNN' if tf.get('onednn') else 'Eigen'} kernels, "
                     f"TF_ENABLE_ONEDNN_OPTS={tf.get('TF_ENABLE_ONEDNN_OPTS')}{tf32})")
    math = (pt or {}).get("float32_math")
    if math or tf:
        mode = (math or {}).get("fpmath_mode") or (tf or {}).get("fpmath_mode")
        text = f"float32 math: ONEDNN_DEFAULT_FPMATH_MODE={mode if mode is not None else 'unset'}"
        if math:
            text += (f", PyTorch matmul precision {math.get('matmul_precision')}, oneDNN fp32_precision "
                     f"conv {math.get('onednn_conv_fp32')} / matmul {math.get('onednn_matmul_fp32')}")
        reduced = reduced_float32(kernels)
        parts.append(text + (f" (REDUCED: {len(reduced)} setting{'s' if len(reduced) > 1 else ''} on)" if reduced else ""))
    ort = kernels.get("onnxruntime")
    if ort:
        parts.append(f"onnxruntime {ort.get('onnxruntime')} ({', '.join(ort.get('providers', []))}, "
                     f"optimisation {ort.get('graph_optimization')})")
    cpu = (pt or {}).get("cpu")
    return "; ".join(parts) + (f"; CPU {cpu}" if cpu else "")


@contextmanager
def summing_kernels():
    """PyTorch's float32 convolutions on kernels that sum each output's terms (oneDNN's, or
    ATen's im2col + BLAS), never on NNPACK's fast algorithms, within the block.

    With oneDNN off, PyTorch hands float32 convolutions of 16 or more images to NNPACK, whose
    Winograd and FFT kernels transform whole tiles: on the demo release a correct generator's
    4x4 layer erred 7x what a summing kernel errs (score 1.73 of the float32 bound at 16 images,
    0.26 without NNPACK; docs/verification.md). That is PyTorch's choice of algorithm, not the
    port's, and the rounding model (``porting.rounding``) models summation, so ``verify`` runs the
    port's float32 pass in this block and says so in its report. AttFind's effects are judged as
    computed, on whatever kernels the machine picks."""
    import torch

    with torch.backends.nnpack.flags(enabled=False):
        yield


BY_FAR = 30.0   # a float32 score this far over its bound is no rounding-model miss (correct ports: <= 0.5)


def float32_diagnosis(reports) -> list[str]:
    """Lines for under a verdict table when float32 fails while the float64 verdict is exact:
    the port is right and the machine's float32 arithmetic is not float32's. Names the settings
    that are on (``reduced_float32``); where none is but the failure is far beyond any rounding
    (score >= ``BY_FAR``), says reduced-precision kernels are the likely cause."""
    failed = [r for r in reports if r.exact and r.fit32 is False]
    if not failed:
        return []
    worst = max(failed, key=lambda r: r.worst().score)
    score, tf_score = worst.worst().score, worst.worst().tf_score
    names = ", ".join(r.model for r in failed)
    tf_too = (f"; TF's own float32 run errs as far (TF score {tf_score:.0f})"
              if tf_score is not None and tf_score >= BY_FAR else "")
    reduced = reduced_float32(worst.kernels)
    if reduced:
        return [f"note: float32 fails ({names}; worst score {score:.0f}{tf_too}) because this machine's kernels "
                f"compute float32 in reduced precision: {'; '.join(reduced)}.",
                f"note: the port itself is exact: the float64 verdict passed for {names}. Turn the setting off "
                "and run verify again to judge float32 (docs/verification.md)."]
    if score >= BY_FAR:
        return [f"note: float32 fails far beyond float32 rounding ({names}; worst score {score:.0f}{tf_too}) while "
                "the port is exact in float64: kernels computing float32 in reduced precision (bfloat16, TF32) "
                "do this. None of the settings known to cause it is on here (ONEDNN_DEFAULT_FPMATH_MODE, "
                "PyTorch's float32 matmul precision and oneDNN fp32_precision, TF32); check the machine's "
                "math libraries (docs/verification.md)."]
    return []
