"""Training on the port: the classifier (``classifier.py``), StylEx (``stylex.py``), the image
folders they read (``data.py``) and the converted-format writer (``weights.py``). The objective
and the step themselves are ``models_pt.stylex`` (PyTorch only)."""
