"""NumPy twins of the dense kernels (being written)."""
from __future__ import annotations

KERNELS: tuple[str, ...] = ()
