"""gradfuse.ops: the fused kernels, resolved at each call to the active backend.

`gf.ops.adam(...)` runs the C++ kernel on the "cpp" backend and its NumPy twin on "numpy"
(see gf.set_backend / gf.use_backend). Both have the same name, signature, checks and results.
"""
from __future__ import annotations

import functools

from ._backend import get_backend
from ._ext import _core
from ._numpy import activation, batchnorm, clip, dense, dropout, loss, optim

__all__: list[str] = []


def _dispatcher(name: str, twin):
    native = getattr(_core, name) if _core is not None else None

    @functools.wraps(twin)
    def kernel(*args, **kwargs):
        if native is not None and get_backend() == "cpp":
            return native(*args, **kwargs)
        return twin(*args, **kwargs)

    kernel.cpp = native
    kernel.numpy = twin
    return kernel


# Each twin module lists its kernels in KERNELS; the C++ extension has a function of each name.
for _module in (optim, batchnorm, dropout, activation, dense, loss, clip):
    for _name in _module.KERNELS:
        globals()[_name] = _dispatcher(_name, getattr(_module, _name))
        __all__.append(_name)
del _module, _name
del activation, batchnorm, clip, dense, dropout, loss, optim
