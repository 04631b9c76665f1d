"""gradfuse.ops: the fused kernels, resolved at each call to the active backend.

Each gf.ops.<kernel> is built from its row of the kernel table (gradfuse.table): its signature,
defaults and docstring are the row's. `gf.ops.adam(...)` runs the C++ kernel on the "cpp" backend
and its NumPy twin on "numpy" (see gf.set_backend / gf.use_backend). Both have the same name,
signature, checks and results. Beside the call, every kernel has:

    .cpp / .numpy   the kernel on one backend, whatever the active one (same signature)
    .check(...)     every argument checked as the call would check it; nothing is computed or written
    .row            its row of the kernel table

Bad inputs (the same on both backends; the generated tests check every kernel):

- TypeError (gradfuse.errors.KernelTypeError, which carries the kernel, the argument and its
  index): an argument of the wrong type (not an ndarray, a str for a number, a float for an
  int), an array of the wrong dtype (int, float16, complex, object, big-endian, float64 mixed
  with float32; uint8 masks, int64 labels, uint32 counters where those are asked for; an
  optimizer's bfloat16 `copies` beside float64 params: bf16 compute copies need float32 masters).
- ValueError (gradfuse.errors.KernelValueError): a non-C-contiguous array (strided,
  Fortran-ordered, a broadcast view), a read-only array that is written, a wrong shape, a written
  array that shares memory with any other argument (except the documented in-place pairs: y may BE
  x, dx may BE dy), a scalar out of its range (negative lr, betas outside [0, 1), eps < 0, p
  outside [0, 1], NaN or inf where a finite number is needed), class labels out of range.
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

import numpy as np

from . import _checks
from ._backend import get_backend
from ._ext import _core
from ._numpy import activation, batchnorm, clip, dense, dropout, loss
from ._numpy import optim as optim_twins
from ._numpy._common import upcast_call
from .errors import KernelTypeError
from .table import KERNELS, NO_DEFAULT, Kernel, Scalar

__all__: list[str] = []

# The twin module of each family: the function of the kernel's name holds the math.
_TWINS = {
    "optim": optim_twins,
    "clip": clip,
    "batchnorm": batchnorm,
    "dropout": dropout,
    "activation": activation,
    "dense": dense,
    "loss": loss,
}


# ---- the calls ------------------------------------------------------------------------------------------
def _twin(row: Kernel, values: dict):
    """The NumPy twin: every argument checked against the row, then the math."""
    checked = _checks.call(row, values)
    if row.entry == "optim_step":
        return optim_twins.step(row, checked)
    module = _TWINS[row.family]
    twin = getattr(module, row.name)
    if row.bf16 and _bf16_call(row, checked):
        # a twin whose bf16 call is not "widen, compute, round once" has its own <name>_bf16(row, values)
        own = getattr(module, f"{row.name}_bf16", None)
        return own(row, checked) if own is not None else upcast_call(twin, row, checked)
    return twin(**checked)


def _bf16_call(row: Kernel, checked: dict) -> bool:
    """Whether a checked call's "real" arrays are bfloat16 (the first present one says)."""
    for spec in row.arrays:
        a = checked[spec.name]
        if spec.dtype == "real" and a is not None:
            a = a[0] if isinstance(a, (list, tuple)) and a else a
            return isinstance(a, np.ndarray) and a.dtype.kind == "V"
    return False


def _check(row: Kernel, values: dict) -> None:
    _checks.call(row, values)


def _step_arrays(row: Kernel, values: dict, scalars: dict) -> tuple:
    """The array lists of an optimizer call in row order: None where the scalars leave a state
    unused; a required or used state that is None is refused here (the C++ entry point treats None
    as absent)."""
    out = [values[name] for name in _NAMES[row.name]]
    for k, spec in enumerate(row.arrays):
        if spec.when is not None and not spec.when(scalars):
            out[k] = None
        elif out[k] is None and (spec.when is not None or not spec.optional):
            raise KernelTypeError(row.name, "{arg} is required (got None)", spec.name)
    return tuple(out)


def run_optim(row: Kernel, arrays: tuple, scalars: dict, skip_nonfinite: bool) -> bool:
    """An optimizer kernel call whose scalars are already checked and converted: arrays in the
    row's order (None for a state the call does not use), scalars without skip_nonfinite and
    without the optional ones left at None. The backend checks the arrays. The optimizers call
    this directly with the scalars they checked once."""
    if _core is not None and get_backend() == "cpp":
        return _core.optim_step(row.name, _NAMES[row.name], arrays, scalars, skip_nonfinite)
    full = {**_NULLABLE[row.name], **scalars, "skip_nonfinite": skip_nonfinite}
    values = dict(zip(_NAMES[row.name], arrays))
    return optim_twins.step(row, {**_checks.arrays(row, values, full), **full})


def _native(scalars: dict) -> tuple[dict, bool]:
    native = {k: v for k, v in scalars.items() if v is not None}
    return native, native.pop("skip_nonfinite")


def _optim(row: Kernel, values: dict) -> bool:
    scalars = _checks.scalars(row, values)
    return run_optim(row, _step_arrays(row, values, scalars), *_native(scalars))


def _optim_cpp(row: Kernel, values: dict) -> bool:
    scalars = _checks.scalars(row, values)
    return _core.optim_step(row.name, _NAMES[row.name], _step_arrays(row, values, scalars), *_native(scalars))


_NAMES = {name: tuple(a.name for a in row.arrays) for name, row in KERNELS.items()}
_NULLABLE = {name: {s.name: None for s in row.scalars if s.nullable} for name, row in KERNELS.items()}


# ---- building gf.ops.<kernel> from its row ---------------------------------------------------------------
def _parameters(row: Kernel) -> str:
    """The row's signature as Python source: arrays and scalars in order, keyword-only from the first
    keyword-only scalar on, defaults read from the namespace."""
    out, keyword_only = [], False
    for a in row.args:
        if isinstance(a, Scalar) and a.keyword_only and not keyword_only:
            out.append("*")
            keyword_only = True
        out.append(a.name if a.default is NO_DEFAULT else f"{a.name}=_defaults[{a.name!r}]")
    return ", ".join(out)


def _define(row: Kernel, body: str, **namespace):
    """A function with the row's name, signature and docstring that returns `body` (Python source;
    `values` in it stands for {argument name: value})."""
    values = "{" + ", ".join(f"{a.name!r}: {a.name}" for a in row.args) + "}"
    source = f"def {row.name}({_parameters(row)}):\n    return {body.replace('values', values)}\n"
    scope = {"_defaults": row.defaults(), "_row": row, **namespace}
    exec(compile(source, f"<gradfuse.ops.{row.name}>", "exec"), scope)  # as dataclasses build __init__
    fn = scope[row.name]
    fn.__doc__ = row.doc
    fn.__module__ = __name__
    fn.__qualname__ = row.name
    return fn


def _native_call(row: Kernel) -> str:
    """The C++ binding called with the row's arguments: positional up to the first keyword-only one."""
    out, keyword_only = [], False
    for a in row.args:
        keyword_only = keyword_only or (isinstance(a, Scalar) and a.keyword_only)
        out.append(f"{a.name}={a.name}" if keyword_only else a.name)
    return f"_native({', '.join(out)})"


def _build(row: Kernel):
    if row.entry == "optim_step":
        kernel = _define(row, "_optim(_row, values)", _optim=_optim)
        cpp = _define(row, "_optim_cpp(_row, values)", _optim_cpp=_optim_cpp) if _core is not None else None
    else:
        native = getattr(_core, row.name) if _core is not None else None
        kernel = _define(
            row,
            f"({_native_call(row)} if _native is not None and _backend() == 'cpp' else _twin(_row, values))",
            _native=native,
            _backend=get_backend,
            _twin=_twin,
        )
        cpp = native
    kernel.cpp = cpp
    kernel.numpy = _define(row, "_twin(_row, values)", _twin=_twin)
    kernel.check = _define(row, "_check(_row, values)", _check=_check)
    kernel.row = row
    return kernel


for _row in KERNELS.values():
    globals()[_row.name] = _build(_row)
    __all__.append(_row.name)
del _row
