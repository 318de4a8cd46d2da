"""A stand-in for torchvision in the generic-chain benchmark's environment only.

onnx2torch imports torchvision at start-up for two node converters (NonMaxSuppression and
RoiAlign), which none of the StylEx models uses; the registry has no CPU build of torchvision
for torch 2.13. Anything that really calls into it fails loudly."""
from . import ops  # noqa: F401
