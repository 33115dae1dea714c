"""Inference: the sCDI/pCDI network, its loader and the reconstruction it returns.
TensorFlow is imported only when a model is built or loaded."""

from .reconstructor import BUCKETS, Reconstructor, default_model_path
from .result import SUPPORT_THRESHOLD, Reconstruction

__all__ = ["BUCKETS", "SUPPORT_THRESHOLD", "Reconstruction", "Reconstructor", "default_model_path"]
