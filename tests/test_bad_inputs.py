"""Bad inputs to every gf.ops kernel, on both backends: wrong dtypes, layouts, read-only arrays,
broadcast views, wrong shapes, missing arrays, aliased arguments, scalars of the wrong type; and
the documented unusual inputs (read-only inputs, in-place pairs, zero-size arrays, NaN and Inf).

The cases are generated from the kernel table (gradfuse/table.py), one valid call per kernel
(tests/kernel_cases.py: its richest example, every optional array given), each case changing one
argument: which arrays are read or written (Array.role), floating or typed (Array.dtype), lists
(Array.many), tied in shape to others (Array.shape), allowed to be another exactly (Array.in_place),
and the scalars' types. Every refused call must raise a gradfuse.errors.KernelTypeError /
KernelValueError of the same class with the same fields (kernel, argument, index, other,
other_index) on the C++ kernel and on the NumPy twin, name the kernel and the argument in its
message, and leave every array bitwise unchanged. Scalars out of their range, and broken joint
rules: tests/test_table.py. Calls that are documented to work must give the same results on both
backends.
"""

from __future__ import annotations

import math
import warnings

import ml_dtypes
import numpy as np
import pytest

import gradfuse as gf
import kernel_cases as kc
from conftest import BACKENDS
from gradfuse.table import ACTIVATIONS, READ

pytestmark = pytest.mark.kernels


def base(row):
    """The valid call every case of `row` changes: its richest example, float32, lists of two (4, 4)."""
    return kc.build(row, kc.richest(row))


BASES = {row.name: base(row) for row in kc.ROWS}


# ---- substitutions -------------------------------------------------------------------------------


def _get(values, name):
    """The array a substitution replaces: the argument, or the first array of a list argument."""
    v = values[name]
    return v[0] if isinstance(v, list) else v


def _put(values, name, new):
    if isinstance(values[name], list):
        values[name] = [new] + list(values[name][1:])
    else:
        values[name] = new


def non_contiguous(a):
    wide = np.repeat(a[..., None], 2, axis=-1)
    return wide[..., 0]


def read_only(a):
    b = a.copy()
    b.flags.writeable = False
    return b


def broadcast(a):
    return np.broadcast_to(a.reshape(-1)[:1].reshape((1,) * a.ndim), a.shape)


def wrong_shape(a):
    return np.zeros(a.shape[:-1] + (a.shape[-1] + 1,), a.dtype)


FLOAT_BAD_DTYPES = {
    "float64": np.float64,
    "int32": np.int32,
    "big_endian": ">f4",
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
    "complex64": np.complex64,
    "object": object,
}
TYPED_BAD_DTYPES = {"float32": np.float32, "int16": np.int16, "big_endian": None, "object": object}
# Scalars of the wrong type, per Scalar.type (None is refused too unless the scalar is nullable)
BAD_SCALAR_TYPES = {
    "float": ("0.5", [1.0]),
    "int": (1.5, "1"),
    "u64": (1.0, True, "3"),
    "bool": ("yes",),
    "str": (3, b"mean"),
}


def _sub(name, transform, min_ndim=0):
    def mutate(values):
        a = _get(values, name)
        if a.ndim < min_ndim or min(a.shape, default=0) < 2:
            return False  # the layout is C-contiguous anyway: nothing to test
        _put(values, name, transform(a))
        return True

    return mutate


def _set(name, value):
    def mutate(values):
        values[name] = value
        return True

    return mutate


def _short(name):
    def mutate(values):
        values[name] = values[name][:1]
        return True

    return mutate


def _alias(w, o, shift):
    """o becomes w itself (shift 0), or both become views of one buffer, one element apart."""

    def mutate(values):
        a, b = _get(values, w), _get(values, o)
        if a.shape != b.shape or a.dtype != b.dtype or a.size < 2:
            return False
        if shift == 0:
            _put(values, o, a)
        else:
            buf = np.concatenate([a.reshape(-1), b.reshape(-1)[-1:]])
            _put(values, w, buf[: a.size].reshape(a.shape))
            _put(values, o, buf[1:].reshape(b.shape))
        return True

    return mutate


def _bytes_of(w, o):
    """w becomes a view of the first bytes of o, reinterpreted as w's dtype and shape."""

    def mutate(values):
        a, b = _get(values, w), _get(values, o)
        if b.nbytes < a.nbytes or a.size == 0:
            return False
        _put(values, w, b.reshape(-1).view(np.uint8)[: a.nbytes].view(a.dtype).reshape(a.shape))
        return True

    return mutate


def _twice(name):
    def mutate(values):
        values[name] = [values[name][0], values[name][0]]
        return True

    return mutate


def _shape_bound(row, spec, present) -> bool:
    """Whether the array's shape is tied to another's: its own rule, or another array's like:/rule."""
    if spec.shape is not None:
        return True
    for a in row.arrays:
        if a is not spec and a.name in present and (callable(a.shape) or a.shape == f"like:{spec.name}"):
            return True
    return False


def bad_cases():
    """(row, case id, mutate(values) -> applies, expected exception, the argument the error must name)."""
    for row in kc.ROWS:
        values = BASES[row.name]
        present = [a for a in row.arrays if values[a.name] is not None]
        names = [a.name for a in present]
        floats = [a for a in present if a.floating]
        for spec in present:
            name = spec.name
            typed = not spec.floating
            for label, dt in (TYPED_BAD_DTYPES if typed else FLOAT_BAD_DTYPES).items():
                if dt is None:
                    if np.dtype(spec.dtype).itemsize == 1:
                        continue  # a byte has no byte order
                    dt = np.dtype(spec.dtype).newbyteorder(">")
                # another floating dtype the array may have, in the array that sets the call's dtype:
                # the next floating array is the one named
                sets_call = label == "float64" or (label == "bfloat16" and spec.dtype == "real")
                named = None if sets_call and spec is floats[0] else name
                yield row, f"{name}-dtype-{label}", _sub(name, lambda a, dt=dt: a.astype(dt)), TypeError, named
            yield row, f"{name}-not-an-array", _sub(name, lambda a: a.tolist()), TypeError, name
            yield row, f"{name}-non-contiguous", _sub(name, non_contiguous), ValueError, name
            yield row, f"{name}-fortran", _sub(name, np.asfortranarray, min_ndim=2), ValueError, name
            yield row, f"{name}-broadcast", _sub(name, broadcast), ValueError, name
            if spec.written:
                yield row, f"{name}-read-only", _sub(name, read_only), ValueError, name
            if _shape_bound(row, spec, names):
                yield row, f"{name}-wrong-shape", _sub(name, wrong_shape), ValueError, None
            if not spec.optional:
                yield row, f"{name}-missing", _set(name, None), TypeError, name
            if spec.many:
                yield row, f"{name}-not-a-list", _set(name, {"a": 1}), TypeError, name
                if spec is not present[0]:
                    yield row, f"{name}-short-list", _short(name), ValueError, None
                if spec.written:
                    yield row, f"{name}-twice-in-list", _twice(name), ValueError, name
        for w in [a for a in present if a.written]:
            for o in present:
                if o is w:
                    continue
                if w.floating and o.floating:
                    if w.in_place != o.name and o.in_place != w.name:
                        yield row, f"{w.name}-is-{o.name}", _alias(w.name, o.name, 0), ValueError, None
                    yield row, f"{w.name}-overlaps-{o.name}", _alias(w.name, o.name, 1), ValueError, None
                elif not w.floating:  # a written mask / output over another argument's bytes
                    yield row, f"{w.name}-inside-{o.name}", _bytes_of(w.name, o.name), ValueError, None
        for spec in row.scalars:
            bad = BAD_SCALAR_TYPES[spec.type] + (() if spec.nullable else (None,))
            for value in bad:
                if spec.type == "bool" and value is None:
                    continue  # None is False to a flag (as the C++ bool caster takes it)
                yield row, f"{spec.name}={value!r}", _set(spec.name, value), TypeError, spec.name


def _bf16_call(mutate):
    """A case on the row's bfloat16 call (BF16_BASES) instead of its float32 one."""

    def on_bf16(values):
        row_name = values["__row__"]
        values.clear()
        values.update(kc.copy_call(BF16_BASES[row_name]))
        return mutate(values)

    return on_bf16


def bf16_cases():
    """The dtype rules of a bfloat16 call: its other "real" arrays bfloat16 too, its "wide" ones
    float32 (not float64, not bfloat16)."""
    for row in kc.ROWS:
        if not row.bf16:
            continue
        values = BF16_BASES[row.name]
        present = [a for a in row.arrays if values[a.name] is not None and a.floating]
        for spec in present[1:]:
            wrong = {"real": ("float32", "float64"), "wide": ("float64", "bfloat16")}.get(spec.dtype, ())
            for label in wrong:
                dt = FLOAT_BAD_DTYPES.get(label, np.float32)
                yield (
                    row,
                    f"bf16-call-{spec.name}-dtype-{label}",
                    _bf16_call(_sub(spec.name, lambda a, dt=dt: a.astype(dt))),
                    TypeError,
                    spec.name,
                )


def _applies(case) -> bool:
    row, _, mutate, *_ = case
    return mutate({**kc.copy_call(BASES[row.name]), "__row__": row.name})


BF16_BASES = {row.name: kc.build(row, kc.richest(row), kc.BF16) for row in kc.ROWS if row.bf16}
# cases that do not apply (e.g. Fortran order of a 1-D array, which is C-contiguous) are not generated
BAD = [case for case in (*bad_cases(), *bf16_cases()) if _applies(case)]


@pytest.mark.parametrize("row,case,mutate,exc,arg", BAD, ids=[f"{r.name}-{c}" for r, c, *_ in BAD])
def test_bad_input_raises_alike_and_changes_nothing(row, case, mutate, exc, arg):
    def make():
        values = {**kc.copy_call(BASES[row.name]), "__row__": row.name}
        assert mutate(values)
        values.pop("__row__", None)
        return values

    kc.refused_alike(row, make, exc, arg)


def test_every_kernel_has_bad_cases():
    have = {r.name for r, *_ in BAD}
    assert have == set(gf.ops.__all__)


# ---- inputs that are documented to work: the same result on both backends ------------------------


def _poison(name, value):
    def mutate(values):
        a = _get(values, name)
        if a.size == 0:
            return False
        a.reshape(-1)[a.size // 2] = value
        return True

    return mutate


def good_cases():
    """(row, case id, mutate(values) or None for the zero-size call)."""
    for row in kc.ROWS:
        values = BASES[row.name]
        present = [a for a in row.arrays if values[a.name] is not None]
        for spec in present:
            if spec.role == READ:  # inputs are only read: a read-only array is fine
                yield row, f"{spec.name}-read-only", _sub(spec.name, read_only)
                if spec.floating:
                    for label, value in (("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf)):
                        yield row, f"{spec.name}-{label}", _poison(spec.name, value)
            if spec.in_place is not None:  # documented in-place pairs: the output may be exactly the input
                yield row, f"{spec.name}-is-{spec.in_place}", _alias(spec.name, spec.in_place, 0)
        if present:
            yield row, "zero-size", None


GOOD = [case for case in good_cases() if case[2] is None or case[2](kc.copy_call(BASES[case[0].name]))]


def _same(a, b, where):
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{where}: NaN positions differ")
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6, equal_nan=True, err_msg=where)
        else:
            np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=2e-5, abs=1e-6), f"{where}: {a} vs {b}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


@pytest.mark.skipif(len(BACKENDS) < 2, reason="compares the C++ kernels with their twins")
@pytest.mark.parametrize("row,case,mutate", GOOD, ids=[f"{r.name}-{c}" for r, c, _ in GOOD])
def test_documented_inputs_give_the_same_result_on_both_backends(row, case, mutate):
    got = {}
    for backend in BACKENDS:
        if mutate is None:
            values = kc.build(row, kc.richest(row), **kc.zero_size(row, kc.richest(row)))
        else:
            values = kc.copy_call(BASES[row.name])
            assert mutate(values)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the kernels never warn: NaN / Inf arithmetic is silent
            result = getattr(getattr(gf.ops, row.name), backend)(**values)
        got[backend] = (result, kc.arrays_in(values))
    _same(got["cpp"], got["numpy"], f"{row.name} {case}")


SKIPPING = [row for row in kc.ROWS if "skip_nonfinite" in row.by_name]


@pytest.mark.parametrize("row", SKIPPING, ids=lambda r: r.name)
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_skip_nonfinite_skips_the_whole_step(backend, row, value):
    """skip_nonfinite=True: a non-finite gradient anywhere -> False, nothing written (documented)."""
    values = kc.copy_call(BASES[row.name])
    values["grads"][1][2, 3] = value
    values["skip_nonfinite"] = True
    snap = kc.snapshot(values)
    assert getattr(gf.ops, row.name)(**values) is False
    kc.assert_unchanged(snap)


NORMS = [row for row in kc.ROWS if "norm_type" in row.by_name]


@pytest.mark.parametrize("row", NORMS, ids=lambda r: r.name)
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0, 0.5, 0.1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_norms_of_huge_values_agree_on_both_backends(row, norm_type, dtype):
    """Norms of values near the dtype's maximum: float32 ones accumulate in double without overflow;
    float64 ones may overflow to inf. Both backends give the same norm (no exception, no warning)
    and scale the same way."""
    big = np.finfo(dtype).max / 4
    got = {}
    for backend in BACKENDS:
        values = kc.build(row, kc.richest(row), dtype, scalars={"norm_type": norm_type})
        values["grads"] = [np.full((3, 5), big, dtype), np.full(7, -big / 3, dtype)]
        with gf.use_backend(backend), np.errstate(all="raise"):
            got[backend] = (getattr(gf.ops, row.name)(**values), values["grads"])
    _same(got[BACKENDS[0]], got[BACKENDS[-1]], row.name)
    if dtype == np.float32 and norm_type >= 1:
        norm = got[BACKENDS[0]][0]
        assert all(math.isfinite(n) for n in (norm if isinstance(norm, list) else [norm] if norm is not None else []))


@pytest.mark.skipif(len(BACKENDS) < 2, reason="compares the C++ kernels with their twins")
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_nan_and_inf_through_every_activation(activation):
    """NaN / Inf inputs and gradients: the same outputs on both backends (relu's backward gives 0
    where its input is <= 0, whatever dy is, as torch's threshold_backward)."""
    special = np.array([np.nan, np.inf, -np.inf, 1.5, -1.5, 0.0, -0.0] * 3, np.float32)
    got = {}
    for backend in BACKENDS:
        with gf.use_backend(backend):
            y, dx = np.empty_like(special), np.empty_like(special)
            gf.ops.activation_forward(special, y, activation=activation)
            gf.ops.activation_backward(special[::-1].copy(), dx, activation=activation, x=special, y=y)
            got[backend] = (y, dx)
    _same(got["cpp"], got["numpy"], activation)
