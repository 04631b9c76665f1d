"""The argument checker: validates a kernel call against its row of the kernel table.

One checker for everything written in Python: the NumPy twins' calls, and the scalars of every
optimizer call on both backends (the C++ optimizer entry point checks only the arrays). The C++
bindings check the same rules in C++ (cpp/bindings/arrays.cpp); the generated bad-input tests hold
both to the table.

    scalars(row, values)          -> {name: converted value}   (types, ranges, joint rules)
    arrays(row, values, scalars)  -> {name: array, list of arrays, or None}
    call(row, values)             -> both, scalars first
    fail(fn, argument, template)  the twins' own refusals (what the table cannot say)

A refused call raises KernelTypeError / KernelValueError (gradfuse.errors) naming the kernel and
the argument, before anything is written.
"""

from __future__ import annotations

import bisect
import operator

import numpy as np

from .errors import KernelTypeError, KernelValueError, label
from .table import Array, Kernel, Needs, Range, Scalar


def shape_str(shape) -> str:
    """(3,) / (2, 4) / (): as the messages write shapes."""
    return "(" + ", ".join(map(str, shape)) + (",)" if len(shape) == 1 else ")")


def _fmt(x) -> str:
    return repr(float(x)) if isinstance(x, float) else str(x)


# ---- scalars ----------------------------------------------------------------------------------------------
def real(fn: str, name: str, x) -> float:
    """A Python/NumPy number or a 0-d array (the C++ bindings' double), as a float."""
    if type(x) is float:  # the common case, first
        return x
    if (
        isinstance(x, (str, bytes))
        or (isinstance(x, np.ndarray) and x.ndim != 0)
        or not (hasattr(type(x), "__float__") or hasattr(type(x), "__index__"))
    ):
        raise KernelTypeError(fn, f"{{arg}} must be a number, got {type(x).__name__}", name, value=x)
    try:
        return float(x)
    except (TypeError, ValueError, OverflowError):
        raise KernelTypeError(fn, f"{{arg}} must be a number, got {type(x).__name__}", name, value=x) from None


def integer(fn: str, name: str, x) -> int:
    """An int, or an object with __index__ (not a float), that fits in int64."""
    if type(x) is int and -(2**63) <= x < 2**63:
        return x
    if isinstance(x, (float, np.floating)) or not hasattr(type(x), "__index__"):
        raise KernelTypeError(fn, f"{{arg}} must be an int, got {type(x).__name__}", name, value=x)
    value = operator.index(x)
    if not -(2**63) <= value < 2**63:
        raise KernelTypeError(fn, f"{{arg}} must be an int that fits in 64 bits, got {value}", name, value=x)
    return value


def _u64(fn: str, name: str, x) -> int:
    """An int (not a bool) of any size; the range check follows."""
    if isinstance(x, (bool, np.bool_)) or not hasattr(type(x), "__index__"):
        raise KernelTypeError(fn, f"{{arg}} must be an int, got {type(x).__name__}", name, value=x)
    return operator.index(x)


def flag(fn: str, name: str, x) -> bool:
    """A bool, a NumPy bool, a number or None (False), as the C++ bool caster takes them."""
    if x is True or x is False:
        return x
    if x is None or isinstance(x, (bool, np.bool_, int, float, np.integer, np.floating)):
        return bool(x)
    raise KernelTypeError(fn, f"{{arg}} must be a bool, got {type(x).__name__}", name, value=x)


def _string(fn: str, name: str, x) -> str:
    if not isinstance(x, str):
        raise KernelTypeError(fn, f"{{arg}} must be a str, got {type(x).__name__}", name, value=x)
    return x


_CONVERT = {"float": real, "int": integer, "bool": flag, "str": _string, "u64": _u64}


def scalars(row: Kernel, values: dict, partial: bool = False) -> dict:
    """The row's scalars in `values`, converted (float, int, bool, str) and checked: type, range, the
    row's joint rules. Returns {name: value}. partial: check only the scalars given (an optimizer's
    hyperparameters), and the rules that need only those."""
    fn = row.name
    out = {}
    specs = row.scalars if not partial else [row.by_name[n] for n in values if n in row.by_name]
    for s in specs:
        if not isinstance(s, Scalar):
            continue
        x = values[s.name]
        if x is None and s.nullable:
            out[s.name] = None
            continue
        x = _CONVERT[s.type](fn, s.name, x)
        ok = s.range is None or (x in s.range if isinstance(s.range, tuple) else s.range.test(x))
        if not ok:
            raise KernelValueError(fn, scalar_message(s, x), s.name, value=x)
        out[s.name] = x
    for rule in row.rules:
        try:
            ok = rule.test(out)
        except KeyError:  # partial: a scalar the rule needs was not given
            if not partial:
                raise
            continue
        if not ok:
            raise KernelValueError(fn, rule.message, rule.argument, value=out.get(rule.argument))
    return out


def scalar_message(s, x) -> str:
    """What a kernel says of a bad value x of scalar s (after "kernel: ")."""
    if s.message is not None:
        return s.message.replace("{value}", _fmt(x))
    says = s.range.says if isinstance(s.range, Range) else "one of " + ", ".join(map(repr, s.range))
    return f"{{arg}} must be {says}, got {_fmt(x)}"


# ---- arrays -----------------------------------------------------------------------------------------------
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


class _Item:
    """One array of the call, with how messages name it."""

    __slots__ = ("spec", "array", "index", "start", "end")

    def __init__(self, spec: Array, array: np.ndarray, index: int | None):
        self.spec, self.array, self.index = spec, array, index

    def locate(self) -> None:
        """Its memory (for the aliasing check; reading the address costs microseconds)."""
        self.start = self.array.__array_interface__["data"][0]
        self.end = self.start + self.array.nbytes

    @property
    def label(self) -> str:
        return label(self.spec.name, self.index)


def _fail_type(fn, template, item_or_name, index=None, other=None, other_index=None):
    name = item_or_name if isinstance(item_or_name, str) else item_or_name.spec.name
    index = index if isinstance(item_or_name, str) else item_or_name.index
    raise KernelTypeError(fn, template, name, index, other, other_index)


def _fail_value(fn, template, item_or_name, index=None, other=None, other_index=None):
    name = item_or_name if isinstance(item_or_name, str) else item_or_name.spec.name
    index = index if isinstance(item_or_name, str) else item_or_name.index
    raise KernelValueError(fn, template, name, index, other, other_index)


_FLOATING = {"float": "float32 or float64", "real": "float32, float64 or bfloat16", "wide": "float32 or float64"}


def is_bfloat16(dt: np.dtype) -> bool:
    """ml_dtypes.bfloat16 (without importing ml_dtypes: an array of it means it is imported)."""
    return dt.kind == "V" and dt.itemsize == 2 and dt.type.__name__ == "bfloat16" and dt.type.__module__ == "ml_dtypes"


def _dtype_of(fn: str, item: _Item) -> str | None:
    """The floating dtype name of a "float" / "real" / "wide" array (TypeError for any other dtype);
    None for a typed array, whose dtype is checked here."""
    dt = item.array.dtype
    want = item.spec.dtype
    if want in _FLOATING:
        if dt is _F32:  # native dtypes are singletons: the common cases first
            return "float32"
        if dt is _F64:
            return "float64"
        if want == "real" and is_bfloat16(dt):
            return "bfloat16"
        if dt.kind != "f" or dt.itemsize not in (4, 8):
            _fail_type(fn, f"{{arg}} has dtype {dt}; expected {_FLOATING[want]}", item)
        if dt.byteorder == ">":
            _fail_type(fn, f"{{arg}} is big-endian; expected native {_FLOATING[want]}", item)
        return "float32" if dt.itemsize == 4 else "float64"
    expected = np.dtype(want)
    if dt.kind != expected.kind or dt.itemsize != expected.itemsize or dt.byteorder == ">":
        _fail_type(fn, f"{{arg}} has dtype {dt}; expected {want}", item)
    return None


def _layout(fn: str, item: _Item) -> None:
    flags = item.array.flags
    if not flags.c_contiguous:
        _fail_value(
            fn, "{arg} is not C-contiguous (no silent copies: pass np.ascontiguousarray(...) and use the result)", item
        )
    if not flags.aligned:
        _fail_value(fn, "{arg} is not aligned to its dtype", item)
    if item.spec.written and not flags.writeable:
        _fail_value(fn, "{arg} is read-only (it is written in place)", item)


class _Dims:
    """Symbolic dimensions bound by the first array that has them."""

    def __init__(self):
        self.values: dict = {}
        self.source: dict = {}

    def match(self, fn: str, item: _Item, rule: tuple) -> None:
        shape = item.array.shape
        if "..." in rule:
            at = rule.index("...")
            head, tail = rule[:at], rule[at + 1 :]
            if len(shape) < len(head) + len(tail):
                _fail_value(
                    fn,
                    f"{{arg}} must have at least {len(head) + len(tail)} dimension"
                    f"{'s' if len(head) + len(tail) != 1 else ''} {self._say(rule)}, got shape "
                    f"{shape_str(shape)}",
                    item,
                )
            pairs = list(zip(head, shape)) + list(zip(tail, shape[len(shape) - len(tail) :]))
            rest = shape[len(head) : len(shape) - len(tail)]
            if "..." in self.values and self.values["..."] != rest:
                self._mismatch(fn, item, rule, pairs)
            self.values.setdefault("...", rest)
            self.source.setdefault("...", item.label)
        else:
            if len(shape) != len(rule):
                _fail_value(fn, f"{{arg}} must be {len(rule)}-D {self._say(rule)}, got shape {shape_str(shape)}", item)
            pairs = list(zip(rule, shape))
        for dim, n in pairs:
            if isinstance(dim, int):
                if n != dim:
                    self._mismatch(fn, item, rule, pairs)
            elif dim in self.values:
                if self.values[dim] != n:
                    self._mismatch(fn, item, rule, pairs)
        for dim, n in pairs:
            if isinstance(dim, str) and dim not in self.values:
                self.values[dim], self.source[dim] = n, item.label

    @staticmethod
    def _say(rule: tuple) -> str:
        return "(" + ", ".join(map(str, rule)) + (",)" if len(rule) == 1 else ")")

    def _mismatch(self, fn: str, item: _Item, rule: tuple, pairs: list) -> None:
        """The rule with the sizes known so far (a symbol this array would bind: its own size)."""
        own = dict(pairs)
        want, known = [], []
        for dim in rule:
            if dim == "...":
                want.extend(self.values.get("...", ("...",)))
            else:
                want.append(self.values.get(dim, own.get(dim, dim)) if isinstance(dim, str) else dim)
            if isinstance(dim, str) and dim in self.source and self.source[dim] != item.label:
                known.append(f"{dim} from {self.source[dim]}")
        why = f" ({', '.join(known)})" if known else ""
        _fail_value(
            fn,
            f"{{arg}} has shape {shape_str(item.array.shape)} but must be {self._say(rule)} = {shape_str(want)}{why}",
            item,
        )


def _check_shape(fn: str, item: _Item, rule, dims: _Dims, found: dict, lists: dict, scalars_: dict) -> None:
    if callable(rule):
        rule = rule(scalars_, {k: v for k, v in found.items() if isinstance(v, np.ndarray)})
    if rule is None:
        return
    shape = item.array.shape
    if isinstance(rule, Needs):
        if rule.shape is None:
            _fail_value(fn, f"{{arg}} {rule.why}", item)
        if tuple(shape) != tuple(rule.shape):
            _fail_value(fn, f"{{arg}} has shape {shape_str(shape)} but {rule.why} {shape_str(rule.shape)}", item)
    elif isinstance(rule, str):  # like:<arg>
        ref_name = rule[5:]
        ref = found[ref_name]
        if ref is None:
            return
        ref_array = ref[item.index or 0] if isinstance(ref, (list, tuple)) else ref
        if shape != ref_array.shape:
            _fail_value(
                fn,
                f"{{arg}} has shape {shape_str(shape)} but {{other}} has shape {shape_str(ref_array.shape)}",
                item,
                other=ref_name,
                other_index=(item.index or 0) if lists.get(ref_name) else None,
            )
    else:
        dims.match(fn, item, tuple(rule))


def arrays(row: Kernel, values: dict, scalars_: dict) -> dict:
    """The row's arrays in `values`, checked: presence, type, dtype (one floating dtype per call),
    layout, shapes, and no written array sharing memory with another argument (but its in-place
    partner, exactly). A list argument comes back as a list when it was given as a list or tuple,
    and as a 1-tuple when it was given as one ndarray (a twin's own messages then name it without
    an index, as the C++ binding's do); absent and unused arrays come back as None."""
    fn = row.name
    found: dict = {}
    lists: dict = {}  # list arguments: given as a list (True) or as one ndarray
    items: list[_Item] = []
    count = None  # the length of the list arguments
    first_list = None
    first_float: _Item | None = None
    dtype = None
    for spec in row.arrays:
        obj = values[spec.name]
        used = row.used(spec, scalars_)
        if obj is None or not used:
            if obj is None and used and not spec.optional:
                _fail_type(fn, "{arg} is required (got None)", spec.name)
            found[spec.name] = None
            continue
        if spec.many:
            if isinstance(obj, np.ndarray):
                arrays_, is_list = [obj], False
            elif isinstance(obj, (list, tuple)):
                arrays_, is_list = list(obj), True
            else:
                _fail_type(
                    fn, f"{{arg}} must be a numpy.ndarray or a list of them, got {type(obj).__name__}", spec.name
                )
            if count is None:
                count, first_list = len(arrays_), spec.name
            elif len(arrays_) != count:
                _fail_value(
                    fn, f"{{arg}} has {len(arrays_)} arrays but {{other}} has {count}", spec.name, other=first_list
                )
            lists[spec.name] = is_list
        else:
            if not isinstance(obj, np.ndarray):
                _fail_type(fn, f"{{arg}} must be a numpy.ndarray, got {type(obj).__name__}", spec.name)
            arrays_, is_list = [obj], False
        for i, a in enumerate(arrays_):
            index = i if is_list else None
            if not isinstance(a, np.ndarray):
                _fail_type(fn, f"{{arg}} must be a numpy.ndarray, got {type(a).__name__}", spec.name, index)
            item = _Item(spec, a, index)
            kind = _dtype_of(fn, item)
            if kind is not None:
                if spec.dtype == "wide" and dtype == "bfloat16":
                    if kind != "float32":
                        _fail_type(
                            fn,
                            f"{{arg}} has dtype {kind}; expected float32 beside {{other}} in bfloat16",
                            item,
                            other=first_float.spec.name,
                            other_index=first_float.index,
                        )
                elif dtype is None:
                    dtype, first_float = kind, item
                elif kind != dtype:
                    # a list names its counterpart in the first list (params[i] for grads[i])
                    other_index = first_float.index
                    if other_index is not None and item.index is not None and item.spec is not first_float.spec:
                        other_index = item.index
                    _fail_type(
                        fn,
                        f"{{arg}} has dtype {kind} but {{other}} is {dtype} (one call takes one dtype)",
                        item,
                        other=first_float.spec.name,
                        other_index=other_index,
                    )
            _layout(fn, item)
            items.append(item)
        found[spec.name] = (arrays_ if is_list else (obj,)) if spec.many else obj

    dims = _Dims()
    order = list(row.shape_order) + [a.name for a in row.arrays if a.name not in row.shape_order]
    by_name = {}
    for item in items:
        by_name.setdefault(item.spec.name, []).append(item)
    for name in order:
        spec = row.arg(name)
        for item in by_name.get(name, ()):
            _check_shape(fn, item, spec.shape, dims, found, lists, scalars_)

    _check_aliasing(fn, items)
    return found


def _check_aliasing(fn: str, items: list[_Item]) -> None:
    """A written array may not share memory with any other argument, except exactly (same start,
    shape and bytes) with its in-place partner. The C++ checker (arrays.cpp) runs the same steps, so
    both backends name the same two arguments. Written arrays sorted by address must be pairwise
    disjoint (neighbours suffice); then no read array may overlap a written one."""
    items = [it for it in items if it.array.nbytes]
    for it in items:
        it.locate()
    order = {id(it): k for k, it in enumerate(items)}
    written = sorted((it for it in items if it.spec.written), key=lambda it: (it.start, order[id(it)]))
    for prev, cur in zip(written, written[1:]):  # written arrays pairwise disjoint: neighbours suffice
        if cur.start < prev.end:
            _fail_value(fn, _SHARED, cur, other=prev.spec.name, other_index=prev.index)
    starts = [it.start for it in written]
    for it in items:  # then no read array overlaps a written one, but its in-place partner, exactly
        if it.spec.written:
            continue
        for w in reversed(written[: bisect.bisect_left(starts, it.end)]):
            if w.end <= it.start:
                break  # disjoint and sorted: the ends grow with the starts
            if _partners(w, it) and w.start == it.start and w.end == it.end and w.array.shape == it.array.shape:
                continue
            _fail_value(fn, _SHARED, w, other=it.spec.name, other_index=it.index)


_SHARED = "{arg} shares memory with {other} (an array that is written must not overlap any other argument)"


def _partners(a: _Item, b: _Item) -> bool:
    return a.spec.in_place == b.spec.name or b.spec.in_place == a.spec.name


def fail(fn: str, argument: str, template: str, index: int | None = None):
    """A twin's refusal of what the table cannot say (a label out of range, a missing saved
    tensor): KernelValueError naming the kernel and the argument; {arg} in template is its label."""
    raise KernelValueError(fn, template, argument, index)


def call(row: Kernel, values: dict) -> dict:
    """Every argument of a call checked (scalars first): {name: converted scalar or checked array}."""
    checked = scalars(row, values)
    return {**arrays(row, values, checked), **checked}


__all__ = ["call", "scalars", "arrays", "fail", "real", "integer", "flag", "shape_str", "scalar_message"]
