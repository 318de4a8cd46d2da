"""TF reference models of the StylEx release (Keras 2 API via ``tf_keras``), with the released
structure, object API and variable names: the generator (``generator.py``), the encoder and
discriminator (``resnet_d.py``), the MobileNetV1 classifier (``classifier.py``), the ops they
share (``ops.py``), the image -> dlatent pipeline (``pipeline.py``) and the planted attribute of
the reference release (``plant.py``).

Layer: the bottom, beside ``models_pt``. It imports only ``release_facts`` of the project, never
``porting``, ``attfind`` or the cross-checks (a test walks the imports). Each module holding a
model kind ends with the same TF-side functions (``reference_model``, ``trace_activations``,
``notebook_output``, ``notebook_input_size``) that ``crosscheck.tf_side`` calls by the kind's record.
"""
