"""NumPy twins of the loss kernels (being written)."""
from __future__ import annotations

KERNELS: tuple[str, ...] = ()
