"""Fuzz the argument handling of every gf.ops kernel (atheris, coverage-guided).

Each input picks a kernel, a backend (cpp / numpy), an ISA path and, for every argument of the
kernel's signature, a fuzzed value: arrays of fuzzed dtype, shape, layout (C, Fortran, strided,
reversed, misaligned, broadcast), read-only flag and contents (NaN/Inf included), views aliasing
an earlier argument, lists of arrays, scalars of every sort (huge ints, NaN, bools, strings,
None). The call must either succeed or raise one of the documented exceptions (TypeError,
ValueError; RuntimeError from clip_grad_norm* with error_if_nonfinite=True), and a call that
raises must leave every array unchanged. Anything else (another exception type, a crash, a
sanitizer report) is a finding.

    python tests/fuzz/fuzz_kernels.py -max_total_time=60        # see tests/fuzz/README.md
"""

from __future__ import annotations

import inspect
import math
import os
import sys
import warnings

import atheris
import numpy as np

with atheris.instrument_imports(include=["gradfuse"]):
    import gradfuse as gf
    from gradfuse._ext import _core

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: kernel_cases
import kernel_cases as kc  # noqa: E402

KERNELS = sorted(gf.ops.__all__)
BACKENDS = ["cpp", "numpy"] if _core is not None else ["numpy"]
ISAS = list(_core._build_info()["cpu_isas"]) if _core is not None else [None]

DTYPES = [
    np.float32,
    np.float64,
    np.float16,
    np.int64,
    np.int32,
    np.uint8,
    np.uint32,
    np.bool_,
    np.complex64,
    np.dtype(">f4"),
    np.dtype(">f8"),
    np.dtype(">i8"),
    object,
]


def _valid(name):
    """From the kernel table: a valid call of the kernel (its richest example) as {argument: (shape,
    dtype)} for its arrays (the first of a list), and its scalars, so that the fuzzer reaches the
    checks behind the dtype and shape checks often enough."""
    row = gf.table.KERNELS[name]
    values = kc.build(row, kc.richest(row), shapes=[(3, 2)])
    arrays = {}
    for a in row.arrays:
        v = values[a.name]
        v = v[0] if isinstance(v, list) and v else v
        if isinstance(v, np.ndarray):
            arrays[a.name] = (v.shape, v.dtype)
    return arrays, {s.name: values[s.name] for s in row.scalars}


VALID = {name: _valid(name) for name in KERNELS}
# The strings the kernels take (the table's choices), and some they do not.
STRINGS = sorted({c for row in kc.ROWS for s in row.scalars if s.type == "str" for c in s.range}) + [
    "silu",
    "",
    "RELU",
    "bogus",
]
MAX_ELEMENTS = 4096


class Inputs:
    """Builds the arguments of one call from the fuzzer's bytes, remembering every array made."""

    def __init__(self, fdp: atheris.FuzzedDataProvider, name: str):
        self.fdp = fdp
        self.valid_arrays, self.valid_scalars = VALID[name]
        self.arrays: list[np.ndarray] = []  # every array passed, to check "unchanged on error"
        self.dims = [fdp.ConsumeIntInRange(0, 9) for _ in range(3)]
        self.base_dtype = np.float64 if fdp.ConsumeBool() else np.float32
        self.first_shape = None

    def pick(self, n: int) -> int:
        return self.fdp.ConsumeIntInRange(0, n - 1)

    def shape_for(self, name: str) -> tuple:
        choice = self.pick(5)
        if choice == 0 and self.first_shape is not None:
            return self.first_shape
        if choice == 1 and name in self.valid_arrays:  # the shape of a valid call (the table's example)
            return self.valid_arrays[name][0]
        if choice == 4:  # any small shape, up to 5 dimensions
            return tuple(self.fdp.ConsumeIntInRange(0, 5) for _ in range(self.pick(6)))
        return tuple(self.dims[self.pick(3)] for _ in range(self.pick(4)))

    def dtype_for(self, name: str):
        choice = self.pick(8)
        if choice < 5:  # the table's dtype rule: the call's float dtype, or a fixed one (labels, masks)
            valid = self.valid_arrays.get(name)
            return valid[1] if valid is not None and valid[1].kind != "f" else self.base_dtype
        if choice == 5:
            return self.base_dtype
        return DTYPES[self.pick(len(DTYPES))]

    def contents(self, shape: tuple, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        size = math.prod(shape)
        if dtype == np.dtype(object):
            return np.full(shape, None, dtype=object)
        raw = self.fdp.ConsumeBytes(size * dtype.itemsize)
        raw += bytes(size * dtype.itemsize - len(raw))
        arr = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        if dtype.kind == "u" and self.fdp.ConsumeBool():
            arr %= max(1, self.pick(16))  # small labels / words as well as any bit pattern
        if dtype.kind == "i" and self.fdp.ConsumeBool():
            arr %= max(1, self.pick(16))
        return arr

    def array(self, name: str) -> np.ndarray:
        if self.arrays and self.pick(8) == 0:  # a view of an earlier argument: aliasing
            earlier = self.arrays[self.pick(len(self.arrays))]
            flat = earlier.reshape(-1) if earlier.flags.c_contiguous else earlier
            if flat.ndim == 1 and flat.size and self.fdp.ConsumeBool():
                start = self.pick(flat.size)
                return flat[start : start + self.fdp.ConsumeIntInRange(0, flat.size)]
            return earlier
        shape = self.shape_for(name)
        if math.prod(shape) > MAX_ELEMENTS:
            shape = (self.dims[0],)
        if self.first_shape is None:
            self.first_shape = shape
        dtype = self.dtype_for(name)
        layout = self.pick(10)
        if layout == 0 and len(shape) >= 2:  # Fortran order: same shape, not C-contiguous
            arr = np.asfortranarray(self.contents(shape, dtype))
        elif layout == 1 and shape:  # every other element of a bigger array
            arr = self.contents((2 * shape[0],) + shape[1:], dtype)[::2]
        elif layout == 2 and shape:  # reversed: a negative stride
            arr = self.contents(shape, dtype)[::-1]
        elif layout == 3 and np.dtype(dtype) != object:  # misaligned: one byte into a byte buffer
            itemsize = np.dtype(dtype).itemsize
            buffer = np.zeros(math.prod(shape) * itemsize + 1, np.uint8)
            arr = buffer[1:].view(dtype).reshape(shape)
            arr[...] = self.contents(shape, dtype)
        elif layout == 4 and shape:  # broadcast: zero strides (and read-only)
            arr = np.broadcast_to(self.contents((1,) + shape[1:], dtype), shape)
        else:
            arr = self.contents(shape, dtype)
        if self.pick(8) == 0:
            arr.flags.writeable = False
        self.arrays.append(arr)
        return arr

    def array_arg(self, name: str):
        choice = self.pick(12)
        if choice == 0:
            return None
        if choice == 1:
            return self.scalar()
        if choice <= 4:  # a list (or tuple) of arrays: the multi-tensor kernels take those
            items = [self.array(name) for _ in range(self.pick(4))]
            if self.pick(6) == 0:
                items.append(self.scalar())
            return tuple(items) if self.pick(4) == 0 else items
        return self.array(name)

    def number(self, like):
        fdp = self.fdp
        choice = self.pick(10)
        if choice == 0:
            return [0.0, -0.0, math.nan, math.inf, -math.inf, 1e308, -1.0, 5e-324][self.pick(8)]
        if choice == 1:
            return [0, -1, 1, 2**31, 2**32, 2**63 - 1, 2**63, -(2**63), 2**64, 10**30][self.pick(10)]
        if choice == 2:
            return fdp.ConsumeBool()
        if choice == 3:
            return np.float32(fdp.ConsumeRegularFloat()) if fdp.ConsumeBool() else np.int64(fdp.ConsumeInt(8))
        if isinstance(like, bool):
            return fdp.ConsumeBool()
        if isinstance(like, int):
            return fdp.ConsumeIntInRange(-4, 1 << 40)
        return fdp.ConsumeProbability() if fdp.ConsumeBool() else fdp.ConsumeFloat()

    def scalar(self, like=None):
        choice = self.pick(12)
        if choice == 0:
            return None
        if choice == 1:
            return STRINGS[self.pick(len(STRINGS))] if self.fdp.ConsumeBool() else self.fdp.ConsumeUnicode(8)
        if choice == 2:
            return [self.number(like)] if self.fdp.ConsumeBool() else object()
        if choice == 3:
            return np.zeros(self.pick(3), np.float32)
        if isinstance(like, str):
            return STRINGS[self.pick(len(STRINGS))]
        return self.number(like)


def build_call(fn, inputs: Inputs):
    """Positional arguments and keywords for fn, following its signature."""
    args, kwargs = [], {}
    for param in inspect.signature(fn).parameters.values():
        required = param.default is inspect.Parameter.empty
        if param.kind is param.KEYWORD_ONLY:
            if required or inputs.pick(3):
                like = param.default if not required else inputs.valid_scalars.get(param.name)
                kwargs[param.name] = inputs.scalar(like)
            continue
        if param.default is None or required:
            value = inputs.array_arg(param.name) if param.name != "n" else inputs.scalar(1)
        else:
            value = inputs.scalar(param.default)
        if not required and inputs.pick(4) == 0:
            break  # leave the rest of the positional arguments at their defaults
        args.append(value)
    return args, kwargs


def snapshot(arrays):
    return [(a, None if a.dtype == object else a.tobytes()) for a in arrays]


def check_unchanged(saved, name, exc):
    for arr, before in saved:
        if before is not None and arr.tobytes() != before:
            raise AssertionError(f"{name} raised {exc!r} but changed an argument") from exc


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    name = KERNELS[fdp.ConsumeIntInRange(0, len(KERNELS) - 1)]
    backend = BACKENDS[fdp.ConsumeIntInRange(0, len(BACKENDS) - 1)]
    isa = ISAS[fdp.ConsumeIntInRange(0, len(ISAS) - 1)]
    inputs = Inputs(fdp, name)
    fn = getattr(gf.ops, name)
    args, kwargs = build_call(fn, inputs)
    saved = snapshot(inputs.arrays)
    if isa is not None:
        _core._set_isa(isa)
    try:
        try:
            with gf.use_backend(backend):
                fn(*args, **kwargs)
        except (TypeError, ValueError) as exc:
            check_unchanged(saved, name, exc)
        except RuntimeError as exc:  # documented: a non-finite norm with error_if_nonfinite
            if not (name.startswith("clip_grad_norm") and "non-finite" in str(exc)):
                raise
            check_unchanged(saved, name, exc)
    except BaseException:
        print(describe(name, backend, isa, args, kwargs), file=sys.stderr)
        raise


def describe(name, backend, isa, args, kwargs) -> str:
    """The failing call, for the report (the crash file replays it exactly)."""

    def show(x):
        if isinstance(x, np.ndarray):
            return (
                f"array(shape={x.shape}, dtype={x.dtype}, strides={x.strides}, writeable={x.flags.writeable}, "
                f"values={np.array2string(x.reshape(-1)[:8], threshold=8)})"
            )
        if isinstance(x, (list, tuple)):
            return type(x).__name__ + "[" + ", ".join(map(show, x)) + "]"
        return repr(x)

    call = ", ".join([show(a) for a in args] + [f"{k}={show(v)}" for k, v in kwargs.items()])
    return f"\n=== gf.ops.{name}({call})  backend={backend} isa={isa}"


def main() -> None:
    warnings.simplefilter("ignore")  # overflow warnings of NumPy arithmetic on fuzzed values
    # Inputs of up to 4 KiB from the start (libFuzzer otherwise grows them from a few bytes).
    defaults = [
        arg
        for arg in ("-max_len=4096", "-len_control=0")
        if not any(a.startswith(arg.split("=")[0] + "=") for a in sys.argv)
    ]
    atheris.Setup(sys.argv + defaults, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
