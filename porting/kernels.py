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
* onnxruntime: its version, providers and graph optimisation level (``porting.onnx_export``).

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
        parts.append(f"TF {tf.get('tensorflow')} ({'oneDNN' if tf.get('onednn') else 'Eigen'} kernels, "
                     f"TF_ENABLE_ONEDNN_OPTS={tf.get('TF_ENABLE_ONEDNN_OPTS')})")
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
