"""NumPy twins of the batchnorm kernels (being written)."""
from __future__ import annotations

KERNELS: tuple[str, ...] = ()
