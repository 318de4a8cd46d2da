"""Readers, mapping rules and writers that take the released TF StylEx models into PyTorch.

Layer: above ``models_pt``. It imports ``models_pt`` and ``release_facts`` only; it reads TF's
files with TensorFlow's own checkpoint reader, but never imports the TF reference models
(``models_tf``) or AttFind (a test walks the imports). What needs TF's models and the port
together (verification's TF side, the nameless Keras layout, the reference release) is in
``crosscheck``.

``kinds/`` holds one record per model kind; ``convert.prepare`` is the one path from a
checkpoint to a mapping plan; ``verdict`` judges a PyTorch module against TF's trace and a
float64 truth; ``controls`` are the deliberately wrong ports; ``readers``, ``mapping``,
``release``, ``dlatents``, ``onnx_export``, ``samples``, ``atomic``, ``errors``
do what their names say.
"""
from models_pt import __version__  # noqa: E402,F401  (the converter records it in every file)
