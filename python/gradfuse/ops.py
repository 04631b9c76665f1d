"""gradfuse.ops: the fused kernels, resolved at each call to the active backend.

`gf.ops.adam(...)` runs the C++ kernel on the "cpp" backend and its NumPy twin on "numpy"
(see gf.set_backend / gf.use_backend). Both have the same name, signature, checks and results.

Bad inputs (the same on both backends; tests/test_bad_inputs.py checks every kernel):

- TypeError: an argument of the wrong type (not an ndarray, a str for a number, a float for an
  int), an array of the wrong dtype (int, float16, complex, object, big-endian, float64 mixed
  with float32; uint8 masks, int64 labels, uint32 counters where those are asked for).
- ValueError: a non-C-contiguous array (strided, Fortran-ordered, a broadcast view), a read-only
  array that is written, a wrong shape, a written array that shares memory with any other
  argument (except the documented in-place pairs: y may BE x, dx may BE dy), a scalar out of its
  range (negative lr, betas outside [0, 1), eps < 0, p outside [0, 1], NaN or inf where a finite
  number is needed), class labels out of range.
- Every check runs before anything is written: a call that raises leaves every array as it was.
  Messages name the kernel and the argument ("adam: grads[0] has dtype float64 but ...").

Valid but unusual inputs:

- Read-only arrays may be passed where an array is only read.
- Zero-size arrays are a no-op: an optimizer step over empty tensors changes nothing; a batch of
  no samples writes only its (empty) outputs (batch norm's forward sets save_mean and
  save_invstd to 0 and leaves the running statistics alone); a mean over no elements is NaN
  (0 / 0, as torch), a sum or norm over none is 0.
- NaN and Inf propagate through the arithmetic, as in torch: into the parameters and state of an
  optimizer step (skip_nonfinite=True skips the whole step instead and returns False), into
  outputs and gradients. Where torch's formula selects rather than computes, the selection wins:
  relu's backward is 0 wherever its input is <= 0 (even for a NaN dy), the hinge loss's max(0, .)
  drops a NaN margin term, and sign-based updates (Rprop, Lion) move a parameter by sign(NaN) = 0.
  No kernel warns (the NumPy twins compute under np.errstate(all="ignore")).
- Norms accumulate in double: float32 gradients never overflow; float64 ones whose |g|^p
  overflows double give an infinite norm (as torch).
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
