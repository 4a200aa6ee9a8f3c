"""Fused kernels for una-hpc, imported as `una_hpc.kernels` (the folder is mapped by setuptools package-dir).

Kept light on purpose: relative imports only, no side effects; triton is imported lazily by the triton backend.
"""

from .operands import operand_dtype
from .seq_logps import seq_logps

__all__ = ["operand_dtype", "seq_logps"]
