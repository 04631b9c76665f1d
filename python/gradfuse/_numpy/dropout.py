"""NumPy twins of the dropout kernels (being written)."""
from __future__ import annotations

KERNELS: tuple[str, ...] = ()
