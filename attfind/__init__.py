"""AttFind, the StylEx attribute search, split so that TensorFlow and PyTorch share everything
after the heavy step.

- ``attfind.selection``: the framework-free core (NumPy only): style ranges, shifts, the
  unstable-image filter, greedy selection, class combination, the image-specific ranking and
  the sufficiency measure's bookkeeping. Backends compute the effects; this does the rest.
- ``porting.dlatents``: the restricted reader (and the writer) for ``dlatents.pkl``.
- ``attfind.tfrecord``: a pure-Python reader and writer for ``examples_1.tfrecord``.
"""
