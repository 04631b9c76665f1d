"""NumPy twins of the activation kernels (being written)."""
from __future__ import annotations

KERNELS: tuple[str, ...] = ()
