"""The one error of quantization at load."""
from __future__ import annotations


class QuantizationError(ValueError):
    """A quantization mode that is unknown, or that cannot run on the chosen device or layer."""
