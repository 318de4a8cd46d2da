"""Readers, mapping rules and writers that take the released TF StylEx models into PyTorch."""
__version__ = "0.1.0"
