"""Generator forward pass (style vectors + synthesis): PyTorch port vs TF, same machine, one run.

    .venv/bin/python bench/generator.py [--resolution 256] [--batches 1 4]

Builds the seeded TF reference generator at the release configuration, converts its variables
through the same rules as `cli.py convert`, checks the two agree on the batch, then prints
images per second for each framework and the ratio PyTorch / TF (> 1: PyTorch faster). TF runs
under ``tf.function``; both frameworks use all cores.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import images_per_second, use_all_cores  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    args = ap.parse_args()

    import numpy as np
    import tensorflow as tf
    import torch

    import models_pt
    from models_tf import generator as tfg
    from porting import mapping
    from porting.kinds import generator as kind
    from porting.verify_generator import make_inputs

    cores = use_all_cores()

    model = tfg.seeded_generator(tfg.release_config(args.resolution), seed=0)
    values = {v.name: v.numpy() for v in model.variables}
    config = kind.infer_config({n: a.shape for n, a in values.items()})
    module = models_pt.model_class("generator")(**config)
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    state = mapping.apply(mapping.plan(kind.RULES, shapes, list(values)), values, shapes)
    own = module.state_dict()
    module.load_state_dict({k: torch.from_numpy(state[k]) if k in state else own[k] for k in own})
    module.eval()

    tf_fn = tf.function(lambda w: model.g_synthesis(model.style_vector_calculator(w, training=False),
                                                     training=False))
    print(f"machine: {cores} cores, torch {torch.__version__}, tensorflow {tf.__version__}; "
          f"generator {args.resolution} px, {sum(module.style_sizes)} StyleSpace coordinates")
    print(f"{'batch':>5} {'TF img/s':>9} {'PT img/s':>9} {'PT/TF':>6} {'max abs diff':>13}")
    for b in args.batches:
        w = make_inputs(config, b, args.resolution, 0)
        wt = torch.from_numpy(w)
        with torch.inference_mode():
            diff = float(np.abs(tf_fn(w).numpy() - module(wt).numpy()).max())
            t_tf = images_per_second(lambda: tf_fn(w).numpy(), b, args.seconds)
            t_pt = images_per_second(lambda: module(wt), b, args.seconds)
        print(f"{b:>5} {t_tf:>9.2f} {t_pt:>9.2f} {t_pt / t_tf:>6.2f} {diff:>13.2e}")


if __name__ == "__main__":
    main()
