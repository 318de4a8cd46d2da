"""The cross-checks: the one layer that sees both frameworks.

Layer: the top, below only ``cli.py``, the tests and the benchmarks. It may import
``models_tf`` (the TF reference models), ``models_pt``, ``porting``, ``attfind`` and
``release_facts``; nothing below imports it. What lives here needs TF and the port together:

* ``tf_side``: a model kind's TF side (rebuild its reference model from a checkpoint's
  variables, trace it, call the SavedModel as the notebook does; read a nameless Keras
  ``.weights.h5`` through Keras' loader into the reference model);
* ``verify``: the TF half of ``verify`` (inputs, TF's trace, the float64 truth), a release
  folder's verification and the encode-reconstruct round trip;
* ``reference_release``: the reference-release writer (seeded TF models in the released file
  layout, ``dlatents.pkl``, and ``examples_1.tfrecord`` by the TF AttFind backend).
"""
