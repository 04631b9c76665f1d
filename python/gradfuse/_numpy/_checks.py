"""Argument checks of the NumPy twins: the same checks, exceptions and messages as the C++
bindings (cpp/bindings/arrays.cpp), so both backends refuse the same inputs the same way.
"""
from __future__ import annotations

import bisect
import functools
import math
import operator

import numpy as np


def _item(name: str, i: int, is_list: bool) -> str:
    return f"{name}[{i}]" if is_list else name


def _shape(a: np.ndarray) -> str:
    return "(" + ", ".join(map(str, a.shape)) + (",)" if a.ndim == 1 else ")")


def quiet(kernel):
    """A twin that never warns, like its C++ kernel: NaN / Inf arithmetic (inf - inf, 0 / 0,
    overflow) gives NaN / Inf silently."""
    @functools.wraps(kernel)
    def silent(*args, **kwargs):
        with np.errstate(all="ignore"):
            return kernel(*args, **kwargs)
    return silent


def tensor_lists(fn: str, *args):
    """Check the tensor-list arguments of a multi-tensor kernel and return them as lists.

    Each arg is (name, obj, written) or (name, obj, written, required). args[0] is the parameter
    list; every other list has its length, and its i-th array the dtype and shape of params[i].
    Absent optional arguments come back as None.
    """
    lists, flags = [], []
    for spec in args:
        name, obj, written = spec[:3]
        required = spec[3] if len(spec) > 3 else True
        if obj is None:
            if required:
                raise TypeError(f"{fn}: {name} is required (got None)")
            lists.append(None)
            flags.append(False)
            continue
        if isinstance(obj, np.ndarray):
            items, is_list = [obj], False
        elif isinstance(obj, (list, tuple)):
            items, is_list = list(obj), True
        else:
            raise TypeError(f"{fn}: {name} must be a numpy.ndarray or a list of them, got {type(obj).__name__}")
        if lists and len(items) != len(lists[0]):
            raise ValueError(f"{fn}: {name} has {len(items)} arrays but {args[0][0]} has {len(lists[0])}")
        lists.append(items)
        flags.append(is_list)

    dtype = None
    written_ranges, read_ranges = [], []
    for a, spec in enumerate(args):
        items = lists[a]
        if items is None:
            continue
        name, _, written = spec[:3]
        for i, arr in enumerate(items):
            what = _item(name, i, flags[a])
            if not isinstance(arr, np.ndarray):
                raise TypeError(f"{fn}: {what} must be a numpy.ndarray, got {type(arr).__name__}")
            dt = arr.dtype
            if dt.kind != "f" or dt.itemsize not in (4, 8):
                raise TypeError(f"{fn}: {what} has dtype {dt}; expected float32 or float64")
            if dt.byteorder == ">":
                raise TypeError(f"{fn}: {what} is big-endian; expected native float32 or float64")
            name_of = "float32" if dt.itemsize == 4 else "float64"
            if dtype is None:
                dtype = name_of
            elif name_of != dtype:
                raise TypeError(f"{fn}: {what} has dtype {name_of} but {_item(args[0][0], 0 if a == 0 else i, flags[0])} is "
                                f"{dtype} (one call takes one dtype)")
            if not arr.flags.c_contiguous:
                raise ValueError(f"{fn}: {what} is not C-contiguous (no silent copies: pass "
                                 "np.ascontiguousarray(...) and use the result)")
            if not arr.flags.aligned:
                raise ValueError(f"{fn}: {what} is not aligned to its dtype")
            if written and not arr.flags.writeable:
                raise ValueError(f"{fn}: {what} is read-only (it is updated in place)")
            if a > 0:
                ref = lists[0][i]
                if arr.shape != ref.shape:
                    raise ValueError(f"{fn}: {what} has shape {_shape(arr)} but "
                                     f"{_item(args[0][0], i, flags[0])} has shape {_shape(ref)}")
            if arr.size:
                start = arr.__array_interface__["data"][0]
                (written_ranges if written else read_ranges).append((start, start + arr.nbytes, what))

    written_ranges.sort(key=lambda r: r[0])
    for prev, cur in zip(written_ranges, written_ranges[1:]):
        if cur[0] < prev[1]:
            raise ValueError(f"{fn}: {prev[2]} and {cur[2]} share memory (an array that is updated in place "
                             "must not overlap any other argument)")
    starts = [r[0] for r in written_ranges]
    for begin, end, what in read_ranges:
        k = bisect.bisect_left(starts, end)
        if k > 0 and written_ranges[k - 1][1] > begin:
            raise ValueError(f"{fn}: {what} shares memory with {written_ranges[k - 1][2]} (an array that is "
                             "updated in place must not overlap any other argument)")
    return lists


def _fmt(x: float) -> str:
    return repr(float(x))


# Scalar conversions with the C++ bindings' rules (pybind11's casters), so that both backends refuse
# the same values with the same exception type; the messages name the function and the argument.


def real(fn: str, name: str, x) -> float:
    """A Python/NumPy number (or a 0-d array), as a float; TypeError for anything else (a str, None)."""
    if (isinstance(x, (str, bytes)) or (isinstance(x, np.ndarray) and x.ndim != 0)
            or not (hasattr(type(x), "__float__") or hasattr(type(x), "__index__"))):
        raise TypeError(f"{fn}: {name} must be a number, got {type(x).__name__}")
    try:
        return float(x)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"{fn}: {name} must be a number, got {type(x).__name__}") from None


def integer(fn: str, name: str, x) -> int:
    """An int (or an object with __index__, not a float) that fits in int64; TypeError otherwise."""
    if isinstance(x, (float, np.floating)) or not hasattr(type(x), "__index__"):
        raise TypeError(f"{fn}: {name} must be an int, got {type(x).__name__}")
    value = operator.index(x)
    if not -2**63 <= value < 2**63:
        raise TypeError(f"{fn}: {name} must be an int that fits in 64 bits, got {value}")
    return value


def flag(fn: str, name: str, x) -> bool:
    """A bool, a NumPy bool, a number or None (False); TypeError for anything else (a str, a list)."""
    if x is None or isinstance(x, (bool, np.bool_, int, float, np.integer, np.floating)):
        return bool(x)
    raise TypeError(f"{fn}: {name} must be a bool, got {type(x).__name__}")


def nonneg(fn: str, name: str, x: float) -> None:
    x = real(fn, name, x)
    if not (math.isfinite(x) and x >= 0):
        raise ValueError(f"{fn}: {name} must be a finite number >= 0, got {_fmt(x)}")


def finite(fn: str, name: str, x: float) -> None:
    x = real(fn, name, x)
    if not math.isfinite(x):
        raise ValueError(f"{fn}: {name} must be a finite number, got {_fmt(x)}")


def unit(fn: str, name: str, x: float) -> None:
    x = real(fn, name, x)
    if not (0 <= x < 1):
        raise ValueError(f"{fn}: {name} must be in [0, 1), got {_fmt(x)}")


def closed_unit(fn: str, name: str, x: float) -> None:
    x = real(fn, name, x)
    if not (0 <= x <= 1):
        raise ValueError(f"{fn}: {name} must be in [0, 1], got {_fmt(x)}")


def step(fn: str, s) -> None:
    s = integer(fn, "step", s)
    if s < 1:
        raise ValueError(f"{fn}: step must be >= 1 (the 1-based step being taken), got {s}")


def grad_scale(fn: str, scale):
    """None, or a finite number > 0."""
    if scale is None:
        return None
    s = real(fn, "grad_scale", scale)
    if not (math.isfinite(s) and s > 0):
        raise ValueError(f"{fn}: grad_scale must be a finite number > 0, got {_fmt(s)}")
    return s


def flags(fn: str, **values) -> None:
    """flag() of each keyword argument (the bool options of a kernel)."""
    for name, value in values.items():
        flag(fn, name, value)


def shape_str(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + (",)" if len(shape) == 1 else ")")


class ArgSet:
    """The array arguments of one single-array kernel call: the twin of cpp/bindings ArgSet, with
    the same checks and messages. Floating arrays share one dtype (float32 or float64, set by the
    first one); typed arrays have the dtype asked for (uint8 masks, int64 labels)."""

    def __init__(self, fn: str):
        self.fn = fn
        self.dtype = None
        self._first_floating = None
        self._args = []  # (name, array or None, written)
        self._in_place = set()  # frozenset({out, in}): names allowed to be exactly the same array

    def _add(self, name, obj, written, optional):
        if obj is None:
            if not optional:
                raise TypeError(f"{self.fn}: {name} is required (got None)")
            self._args.append((name, None, written))
            return None
        if not isinstance(obj, np.ndarray):
            raise TypeError(f"{self.fn}: {name} must be a numpy.ndarray, got {type(obj).__name__}")
        if not obj.flags.c_contiguous:
            raise ValueError(f"{self.fn}: {name} is not C-contiguous (no silent copies: pass "
                             "np.ascontiguousarray(...) and use the result)")
        if not obj.flags.aligned:
            raise ValueError(f"{self.fn}: {name} is not aligned to its dtype")
        if written and not obj.flags.writeable:
            raise ValueError(f"{self.fn}: {name} is read-only (it is written)")
        self._args.append((name, obj, written))
        return obj

    def floating(self, name, obj, written, optional=False):
        if isinstance(obj, np.ndarray):
            dt = obj.dtype
            if dt.kind != "f" or dt.itemsize not in (4, 8):
                raise TypeError(f"{self.fn}: {name} has dtype {dt}; expected float32 or float64")
            if dt.byteorder == ">":
                raise TypeError(f"{self.fn}: {name} is big-endian; expected native float32 or float64")
            kind = "float32" if dt.itemsize == 4 else "float64"
            if self.dtype is None:
                self.dtype, self._first_floating = kind, name
            elif kind != self.dtype:
                raise TypeError(f"{self.fn}: {name} has dtype {kind} but {self._first_floating} is {self.dtype} "
                                "(one call takes one dtype)")
        return self._add(name, obj, written, optional)

    def typed(self, name, obj, written, kind, itemsize, type_name, optional=False):
        if isinstance(obj, np.ndarray):
            dt = obj.dtype
            if dt.kind != kind or dt.itemsize != itemsize or dt.byteorder == ">":
                raise TypeError(f"{self.fn}: {name} has dtype {dt}; expected {type_name}")
        return self._add(name, obj, written, optional)

    def require_shape(self, name, arr, shape, what):
        if arr is not None and tuple(arr.shape) != tuple(shape):
            raise ValueError(f"{self.fn}: {name} has shape {shape_str(arr.shape)} but {what} {shape_str(shape)}")

    def fail(self, msg):
        raise ValueError(f"{self.fn}: {msg}")

    def allow_in_place(self, out_name, in_name):
        """Lets `out` be exactly `in` (same start, same shape: an element-wise kernel updating in
        place); any other overlap is still refused by check_aliasing()."""
        self._in_place.add(frozenset((out_name, in_name)))

    def check_aliasing(self):
        spans = [(name, a.__array_interface__["data"][0], a.nbytes, w, a.shape) for name, a, w in self._args
                 if a is not None and a.nbytes]
        for wname, wstart, wbytes, written, wshape in spans:
            if not written:
                continue
            for oname, ostart, obytes, _, oshape in spans:
                if (frozenset((wname, oname)) in self._in_place and wstart == ostart and wbytes == obytes
                        and wshape == oshape):
                    continue
                if oname != wname and wstart < ostart + obytes and ostart < wstart + wbytes:
                    raise ValueError(f"{self.fn}: {wname} shares memory with {oname} (an array that is written "
                                     "must not overlap any other argument)")
