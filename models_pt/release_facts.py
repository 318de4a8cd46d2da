"""What every side of the project must agree on about the StylEx release, in one place.

Layer: the bottom, inside ``models_pt`` (the ground floor) and below even it: this module imports
nothing of the project (a test checks it), so that the PyTorch modules, the TF reference side
(``models_tf``), ``porting``, the cross-checks, AttFind and the command line all read the same
facts without importing each other. Each
entry says where it comes from: the release's published file format (RF), the authors' notebook
(NB), or an ASSUMPTION the released files cannot show (a user holding the real files flips it
here).
"""
from __future__ import annotations

import os
from pathlib import Path

# --------------------------------------------------------------------------- the released files
# Model kind -> file stem in a release folder (``<stem>.savedmodel.zip``), in conversion order (RF).
RELEASE_STEMS = {"generator": "generator", "encoder": "encoder", "discriminator": "discriminator",
                 "classifier": "mobilenet"}
DLATENTS_FILE = "dlatents.pkl"            # RF: the encoder's dlatents of the release's images
EXAMPLES_FILE = "examples_1.tfrecord"     # RF: AttFind's effects, as the notebook wrote them
RELEASE_FILES = tuple(f"{stem}.savedmodel.zip" for stem in RELEASE_STEMS.values()) + (DLATENTS_FILE,
                                                                                       EXAMPLES_FILE)
BUCKET = "https://storage.googleapis.com/explaining-in-style"   # NB: bucket_path, less the release name
DEFAULT_RELEASE = "celeb_a_age"                                  # NB: the age classifier's release

# The real release's dlatents.pkl (250 latents), where the project's shared data sits beside a
# checkout; ``STYLEX_RELEASED_DLATENTS`` points elsewhere. Absent, the tests that need it skip.
RELEASED_DLATENTS = Path(os.environ.get(
    "STYLEX_RELEASED_DLATENTS",
    Path(__file__).resolve().parents[2] / "shared" / "data" / "released_dlatents.pkl"))

# --------------------------------------------------------------------------- what the files cannot show
# MobileNetV1: padding layers, epsilon, momentum and the dropout rate have no variables.
# ASSUMPTION: Keras' BatchNorm epsilon 1e-3 and momentum 0.99 (Keras' convention: the old
# statistics' weight; PyTorch's momentum 0.01), keras.applications' dropout 1e-3 before the
# head, and its explicit (0, 1) zero padding before the strided depthwise convs ("same" would
# pad with TF 'same' on the conv itself; the two differ on odd input sizes only).
CLASSIFIER_ASSUMED = {"bn_epsilon": 1e-3, "bn_momentum": 0.99, "dropout": 1e-3, "strided_padding": "explicit"}
# ASSUMPTION: StyleGAN2's minibatch-stddev group size (the checkpoint shows only that it is there).
MBSTD_GROUP = 4
# ASSUMPTION: StyleGAN2's mapping learning-rate multiplier (no variable holds it).
MAPPING_LR_MUL = 0.01
# ASSUMPTION: what the generator's convs add in training mode. StyleGAN2 trains with fresh
# per-image noise ("random", its randomize_noise) and renders with the stored constants; the
# notebook only renders (training=False), so the release cannot show it. "const": the constants.
GENERATOR_TRAIN_NOISE = "random"
