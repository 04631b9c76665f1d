"""Backend selection: "cpp" (the fused C++ kernels) or "numpy" (their NumPy twins).

set_backend changes the process-wide default; use_backend overrides it for a block, in the
current thread or task only (a context variable), so concurrent code is not affected.
"""

from __future__ import annotations

import contextlib
import contextvars

from ._ext import IMPORT_ERROR, _core

BACKENDS = ("cpp", "numpy")
_default = "cpp" if _core is not None else "numpy"
_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("gradfuse_backend", default=None)


def _checked(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}")
    if name == "cpp" and _core is None:
        raise RuntimeError(f"the cpp backend is unavailable: the extension failed to import ({IMPORT_ERROR})")
    return name


def get_backend() -> str:
    """The backend gradfuse.ops uses now: "cpp" or "numpy"."""
    name = _override.get()
    return _default if name is None else name


def set_backend(name: str) -> None:
    """Set the process-wide backend ("cpp" or "numpy")."""
    global _default
    _default = _checked(name)


@contextlib.contextmanager
def use_backend(name: str):
    """Use a backend inside a `with` block (this thread / task only)."""
    token = _override.set(_checked(name))
    try:
        yield name
    finally:
        _override.reset(token)
