"""AttFind, the StylEx attribute search, split so that TensorFlow and PyTorch share everything
after the heavy step.

- ``attfind.selection``: the framework-free core (NumPy only): style ranges, the unstable-image
  filter, greedy selection, class combination, the image-specific ranking, the sufficiency
  measure's bookkeeping, Wu et al.'s selection and the discriminator filter's rule.
- ``attfind.backend``: the interface both effects backends offer; ``effects_tf.TFEffects`` (the
  notebook's way, on the SavedModels) and ``effects_pt.TorchEffects`` (the ported modules).
- ``attfind.cache`` (the per-image effect cache), ``attfind.report`` (the tfrecord comparison,
  the effects verdict, the output's wording), ``attfind.run`` (``cli.py attfind``),
  ``attfind.pictures``, ``attfind.distributed`` (Ray workers), ``attfind.truth`` (the float64
  truth), ``attfind.sufficiency`` and ``attfind.discriminator_filter``; the reproduction studies'
  analyses (flip rates, Wu et al., GANSpace) are the ``analyses`` package.
- ``attfind.tfrecord``: the reader and writer of ``examples_1.tfrecord``, without TensorFlow.

Layer: above ``porting``. It may import ``models_pt``, ``porting`` and ``release_facts``, never
``models_tf`` or the cross-checks; ``selection`` and ``backend`` import nothing of the project
(a test walks the imports).
"""
