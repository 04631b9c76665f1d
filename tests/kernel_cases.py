"""Valid calls of any kernel, built from its row of the kernel table (gradfuse/table.py).

The generated tests (bad inputs, properties, determinism, ISA parity, the table's own checks, the
optimizers against torch) take their cases from here, so a new kernel gets them by adding its row:

    examples(row)               the row's examples (an implicit "defaults" one when it has none)
    cases(rows)                 [(row, example)] with ids "<kernel>-<example>"
    build(row, example, dtype)  {argument: value}: a complete valid call of gf.ops.<kernel>(**call)
    call_args(row, values)      the same call as (positional args, keyword args), as the signature splits it
    scalars_of(row, example)    the call's scalars: the row's defaults, then the example's
    richest(row)                the example that uses the most arrays (every optional state on)

What valid data looks like comes from each Array's `values` ("signed", "nonneg", "grad", "labels"...)
and its dtype and shape rules; list arguments (the multi-tensor kernels) take a list of shapes.

For the optimizer classes (gf.optim):

    optimizer_classes()          every class in gf.optim.__all__ with a kernel (cls._kernel)
    hyperparameters(cls, s)      a call's kernel scalars as the class's constructor arguments (Scalar.hyper)
    settings(cls)                constructor arguments that together take every path: the defaults,
                                 each example of its row, and one with every number moved off its
                                 default and maximize=True
    all_states(cls)              constructor arguments under which every state of the row is used
    class_only(cls)              numeric constructor arguments that are not kernel scalars (torch's own)
"""

from __future__ import annotations

import functools
import inspect
import math

import ml_dtypes
import numpy as np

import gradfuse as gf
from gradfuse import _checks
from gradfuse.errors import KernelError
from gradfuse.table import KERNELS, NO_DEFAULT, READ, WRITE, Array, Example, Kernel, Needs, Range, Scalar

ROWS: list[Kernel] = list(KERNELS.values())
OPTIMIZER_ROWS: list[Kernel] = [r for r in ROWS if r.entry == "optim_step"]
LIST_SHAPES = [(4, 4), (4, 4)]  # the arrays of a list argument, unless a test asks for others


def examples(row: Kernel) -> tuple:
    return row.examples or (Example("defaults"),)


def cases(rows=None) -> list:
    """[(row, example)] of every example of every row."""
    return [(row, ex) for row in (ROWS if rows is None else rows) for ex in examples(row)]


def case_id(case) -> str:
    row, ex = case
    return f"{row.name}-{ex.id}"


def scalars_of(row: Kernel, example: Example | None = None, **override) -> dict:
    """The call's scalars: the row's defaults, the example's values, then `override`."""
    example = example or examples(row)[0]
    out = {s.name: s.default for s in row.scalars if s.default is not NO_DEFAULT}
    out.update(example.scalars)
    out.update(override)
    return out


def used_arrays(row: Kernel, scalars: dict) -> list[Array]:
    return [a for a in row.arrays if row.used(a, scalars)]


def richest(row: Kernel) -> Example:
    """The example that uses the most arrays (the first of those that set the most scalars)."""
    return max(examples(row), key=lambda ex: (len(used_arrays(row, scalars_of(row, ex))), len(ex.scalars)))


# ---- values ---------------------------------------------------------------------------------------------------

POOL = 1_000_003 + 4096  # the largest parity case, plus the room for offsets


@functools.lru_cache(maxsize=None)
def _pool(dtype, kind: str) -> np.ndarray:
    """Random material of one kind, generated once per dtype (read-only); arrays are copies of
    slices of it at offsets that depend on a salt, so a large case costs a copy, not a generation.

    any        standard normal (parameters, inputs)
    grad       magnitudes 2^-20 .. 2^10, both signs, exact zeros of both signs and a few subnormals
    grad_normal  the same without subnormals (scaling those by a power of two would round)
    signed     running means, momentum buffers: small, both signs, some +0.0 and -0.0
    nonneg     squares, sums, maxima: 2^-10 .. 4, and zeros
    positive   step sizes, variances, weights: > 0
    probability  in [0, 1]
    """
    rng = np.random.default_rng(1234)
    x = rng.standard_normal(POOL)
    e = rng.integers(-20, 11, POOL)
    if kind == "any":
        out = x
    elif kind in ("grad", "grad_normal"):
        out = np.ldexp(x, e)
        out[e == -20] = 0.0
        out[e == -19] = -0.0
        if kind == "grad":
            out[e == 10] = x[e == 10] * ml_dtypes.finfo(dtype).smallest_normal / 8  # subnormal in dtype
    elif kind == "signed":
        out = x * 0.1
        out[e == 0] = 0.0
        out[e == 1] = -0.0
    elif kind == "nonneg":
        out = np.ldexp(np.abs(x), np.minimum(e, 0) // 2)
        out[e == 2] = 0.0
    elif kind == "positive":
        out = np.abs(x) * 0.5 + 1e-3
    elif kind == "probability":
        out = rng.uniform(0.0, 1.0, POOL)
    else:
        raise KeyError(f"no values of kind {kind!r}")
    out = out.astype(dtype)
    out.flags.writeable = False
    return out


BF16 = np.dtype(ml_dtypes.bfloat16)


def is_bf16(dtype) -> bool:
    return np.dtype(dtype) == BF16


def material(dtype, kind: str, shape, salt: int) -> np.ndarray:
    """A fresh array of `shape` with values of `kind` (see _pool)."""
    n = math.prod(shape)
    if n > POOL - 4096:
        raise ValueError(f"{n} elements: more than the pool holds")
    start = (salt * 769) % 4096
    return _pool(np.dtype(dtype).type, kind)[start : start + n].reshape(shape).copy()


# States whose valid values depend on another state's: a table fact the row does not state yet
# (reported; the lead will add it). A centered second moment keeps square_avgs >= grad_avgs**2 (a
# second moment and a mean: their difference is a variance); random values would make those NaN.
RELATED_STATES = {("square_avgs", "grad_avgs"): lambda second, mean: second + mean * mean}


def _values(spec: Array, dtype, shape, salt: int, subnormals: bool, classes: int | None):
    if spec.floating and spec.dtype != "real" and is_bf16(dtype):
        dtype = np.float32  # "wide" (and "float") arrays stay float32 in a bfloat16 call
    if not spec.floating:
        dt = np.dtype(spec.dtype)
        if spec.role == WRITE:
            return np.zeros(shape, dt)
        rng = np.random.default_rng(salt)
        if spec.values == "labels":
            return rng.integers(0, max(classes or 1, 1), shape).astype(dt)
        return rng.integers(0, np.iinfo(dt).max, shape, dtype=dt, endpoint=True)
    if spec.role == WRITE:
        return np.zeros(shape, dtype)
    kind = spec.values
    if kind == "grad" and not subnormals:
        kind = "grad_normal"
    return material(dtype, kind, shape, salt)


# ---- shapes ---------------------------------------------------------------------------------------------------


class _Later(Exception):
    """A shape that needs another array's first."""


def _expand(rule, dims: dict) -> tuple:
    out = []
    for d in rule:
        if isinstance(d, int):
            out.append(d)
        elif d == "...":
            out.extend(dims.get("...", ()))
        else:
            out.append(dims[d])
    return tuple(out)


def _shape_of(row: Kernel, spec: Array, scalars: dict, dims: dict, shapes: list, resolved: dict):
    rule = spec.shape
    if callable(rule):
        placeholders = {n: np.broadcast_to(np.uint8(0), s) for n, s in resolved.items() if not isinstance(s, list)}
        try:
            rule = rule(scalars, placeholders)
        except KeyError:
            raise _Later from None
    if isinstance(rule, Needs):
        if rule.shape is None:
            raise ValueError(f"{row.name}: no shape of {spec.name} can do: {rule.why}")
        return tuple(rule.shape)
    if isinstance(rule, str):  # like:<arg>
        ref = rule[5:]
        if ref in resolved:
            return resolved[ref]
        if any(a.name == ref for a in row.arrays if a.name not in resolved and a is not spec):
            raise _Later
        rule = None
    if rule is None:
        return list(shapes) if spec.many else tuple(dims.get("...", ()))
    return _expand(rule, dims)


def shapes_of(row: Kernel, scalars: dict, dims: dict | None = None, shapes=None, present=None) -> dict:
    """{array name: shape (a list of shapes for a list argument)} of the arrays in `present`."""
    dims = dims or {}
    shapes = LIST_SHAPES if shapes is None else shapes
    pending = [a for a in row.arrays if present is None or a.name in present]
    resolved: dict = {}
    while pending:
        progress = False
        for spec in list(pending):
            try:
                resolved[spec.name] = _shape_of(row, spec, scalars, dims, shapes, resolved)
            except _Later:
                continue
            pending.remove(spec)
            progress = True
        if not progress:
            raise ValueError(f"{row.name}: the shapes of {[a.name for a in pending]} cannot be resolved")
    return resolved


# ---- calls ----------------------------------------------------------------------------------------------------


def build(
    row: Kernel,
    example: Example | None = None,
    dtype=np.float32,
    *,
    dims: dict | None = None,
    shapes=None,
    optional: bool = True,
    subnormals: bool = True,
    salt: int = 0,
    scalars: dict | None = None,
) -> dict:
    """A valid call of `row` ({argument: value}, in signature order): the example's scalars and
    dimensions (`dims` overrides them; `shapes`: the shapes of a list argument's arrays); arrays
    the scalars do not use are None; optional arrays are given unless optional=False."""
    example = example or examples(row)[0]
    s = scalars_of(row, example, **(scalars or {}))
    d = dict(example.dims, **(dims or {}))
    present = [
        a.name
        for a in row.arrays
        if row.used(a, s)
        and (optional or not a.optional or a.when is not None)
        and not (a.dtype == "bfloat16" and np.dtype(dtype) != np.float32)  # bf16 copies: beside float32 only
    ]
    shape = shapes_of(row, s, d, shapes, present)
    classes = None
    for a in row.arrays:  # class labels index the last axis of the first floating array read
        if a.name in shape and a.floating and not a.many and a.role == READ and shape[a.name]:
            classes = shape[a.name][-1]
            break
    out = {}
    for k, a in enumerate(row.args):
        if isinstance(a, Scalar):
            out[a.name] = s[a.name]
        elif a.name not in shape:
            out[a.name] = None
        elif a.many:
            out[a.name] = [
                _values(a, dtype, sh, salt + 10 * i + k, subnormals, classes) for i, sh in enumerate(shape[a.name])
            ]
        else:
            out[a.name] = _values(a, dtype, shape[a.name], salt + k, subnormals, classes)
    for (second, mean), relate in RELATED_STATES.items():
        if out.get(second) is not None and out.get(mean) is not None and second in row.by_name:
            for i, (a, b) in enumerate(zip(out[second], out[mean])):
                out[second][i] = relate(a, b)
    return out


def call_args(row: Kernel, values: dict) -> tuple[list, dict]:
    """(positional, keyword) arguments of the call: positional up to the first keyword-only scalar."""
    args, kwargs, keyword_only = [], {}, False
    for a in row.args:
        keyword_only = keyword_only or (isinstance(a, Scalar) and a.keyword_only)
        if keyword_only:
            kwargs[a.name] = values[a.name]
        else:
            args.append(values[a.name])
    return args, kwargs


def copy_call(values: dict) -> dict:
    return {
        k: ([a.copy() for a in v] if isinstance(v, list) else v.copy() if isinstance(v, np.ndarray) else v)
        for k, v in values.items()
    }


def arrays_in(values) -> list:
    """Every ndarray of a call (list elements too), in order."""
    items = values.values() if isinstance(values, dict) else values
    return [a for v in items for a in (v if isinstance(v, (list, tuple)) else [v]) if isinstance(a, np.ndarray)]


def zero_size(row: Kernel, example: Example | None = None) -> dict:
    """The dims (for a single-array kernel) or list shapes that make a call of no elements."""
    example = example or examples(row)[0]
    if any(a.many for a in row.arrays):
        return dict(shapes=[(0, 4), (0,)])
    dims = dict(example.dims)
    first = next(iter(dims), None)
    if first == "..." or first is None:
        dims["..."] = (0,) + tuple(dims.get("...", ())[1:])
    else:
        dims[first] = 0
    return dict(dims=dims)


def scaled(row: Kernel, example: Example, elements: int) -> dict:
    """The example's dims scaled up so that its largest array has at least `elements` elements (every
    dimension by the same factor, the smallest that does it); for list arguments, [(elements,), (17,)]."""
    if any(a.many for a in row.arrays):
        return dict(shapes=[(elements,), (17,)])
    if not example.dims:
        return {}
    s = scalars_of(row, example)
    present = [a.name for a in used_arrays(row, s)]

    def dims_for(factor):
        out = {}
        for k, v in example.dims.items():
            out[k] = tuple(max(1, round(n * factor)) for n in v) if k == "..." else max(1, round(v * factor))
        return out

    def largest(dims):
        return max((math.prod(sh) for sh in shapes_of(row, s, dims, None, present).values()), default=0)

    base = largest(dims_for(1.0))
    if base >= elements:
        return dict(dims=dims_for(1.0))
    rank = max(len(sh) for sh in shapes_of(row, s, dims_for(1.0), None, present).values())
    factor = (elements / max(base, 1)) ** (1.0 / max(rank, 1)) * 0.9  # close below, then up in small steps
    while largest(dims_for(factor)) < elements:
        factor *= 1.02
    return dict(dims=dims_for(factor))


# ---- refusals: the same on both backends ----------------------------------------------------------------------

FIELDS = ("kernel", "argument", "index", "other", "other_index")


def fields(err) -> tuple:
    return tuple(getattr(err, f, None) for f in FIELDS)


def snapshot(values: dict) -> list:
    """Every array of a call (list elements too) with its bytes, shape, dtype and address."""
    return [(a, a.tobytes(), a.shape, a.dtype, a.__array_interface__["data"][0]) for a in arrays_in(values)]


def assert_unchanged(snap) -> None:
    for a, data, shape, dtype, address in snap:
        assert a.shape == shape and a.dtype == dtype and a.__array_interface__["data"][0] == address
        assert a.tobytes() == data, "an array changed in a call that raised"


def refusal(fn, values: dict):
    """fn(**values) must raise a KernelTypeError / KernelValueError and change nothing; returns it."""
    snap = snapshot(values)
    try:
        fn(**values)
    except KernelError as err:
        assert_unchanged(snap)
        return err
    except Exception as err:  # noqa: BLE001 -- reported as the failure it is
        raise AssertionError(f"{type(err).__name__} is not a gradfuse.errors kernel error: {err}") from err
    raise AssertionError("the call did not raise")


def backends() -> list:
    from conftest import BACKENDS

    return BACKENDS


def refused_alike(row: Kernel, make, expect=None, argument=None):
    """make() -> a call's values, fresh for each backend. Each backend must refuse it (a kernel
    error, nothing changed), both with the same exception class and the same fields (kernel,
    argument, index, other, other_index), the message naming the kernel and the argument.
    expect: the exception class; argument: the argument the error must name. Returns the errors."""
    op = getattr(gf.ops, row.name)
    errors = {}
    for backend in backends():
        err = refusal(getattr(op, backend), make())
        errors[backend] = err
        text = str(err)
        assert err.kernel == row.name and text.startswith(row.name + ":"), f"{backend}: {text}"
        if err.argument is not None:
            assert gf.errors.label(err.argument, err.index).lower() in text.lower(), f"{backend}: {text}"
        if expect is not None:
            assert isinstance(err, expect), f"{backend}: {type(err).__name__}: {text}"
        if argument is not None:
            assert err.argument == argument, f"{backend}: names {err.argument!r}, not {argument!r}: {text}"
    first = next(iter(errors.values()))
    for backend, err in errors.items():
        assert type(err) is type(first) and fields(err) == fields(first), "the backends disagree: " + "; ".join(
            f"{b}: {type(e).__name__}{fields(e)} {e}" for b, e in errors.items()
        )
    return errors


# ---- scalars: probes of ranges and rules -------------------------------------------------------------------


def in_range(spec: Scalar, value) -> bool:
    if spec.range is None:
        return True
    return value in spec.range if isinstance(spec.range, tuple) else spec.range(value)


def rules_hold(row: Kernel, scalars: dict) -> bool:
    try:
        _checks.scalars(row, scalars)
    except (KernelError, KeyError):
        return False
    return True


def good_values(spec: Scalar) -> tuple:
    if isinstance(spec.range, Range):
        return spec.range.good
    if isinstance(spec.range, tuple):
        return spec.range
    return ()


def bad_values(spec: Scalar) -> tuple:
    """Values out of the scalar's range: Range.bad, or for choices one value of the same type that is
    not among them."""
    if isinstance(spec.range, Range):
        return spec.range.bad
    if isinstance(spec.range, tuple):
        if spec.type == "str":
            return ("no-such-" + spec.range[0], spec.range[0].upper() + " ")
        return (max(spec.range) + 1, min(spec.range) - 1)
    return ()


def with_scalar(row: Kernel, name: str, value) -> Example | None:
    """An example of the row in which `name` may take `value` (the row's other rules still hold)."""
    for ex in examples(row):
        if rules_hold(row, scalars_of(row, ex, **{name: value})):
            return ex
    return None


# Candidates for a scalar without a Range when a rule is to be broken (numbers; flags take both).
_CANDIDATES = {"float": (0.0, 2.0, 0.5, -1.0, math.inf, math.nan), "int": (0, 1, -1, 2), "bool": (True, False)}


def rule_breakers(row: Kernel) -> list:
    """[(rule, example, {scalar: value})]: calls whose scalars are each in range but break a joint
    rule, found by trying every scalar of the row at its candidate values (its good probes, and
    plain numbers and flags) in each example; one per (rule, scalar, value)."""
    out, seen = [], set()
    for rule in row.rules:
        for spec in row.scalars:
            tried = (*good_values(spec), *_CANDIDATES.get(spec.type, ()))
            for v in tried:
                key = (rule.argument, spec.name, repr(v))
                if key in seen or not in_range(spec, v):
                    continue
                for ex in examples(row):
                    s = scalars_of(row, ex, **{spec.name: v})
                    if not rule.test(s) and all(r.test(s) for r in row.rules if r is not rule):
                        out.append((rule, ex, {spec.name: v}))
                        seen.add(key)
                        break
    return out


# ---- the optimizer classes --------------------------------------------------------------------------------------


# Optimizers whose step couples every parameter by default (Lamb: timm's global gradient clip over
# all groups), and the setting that makes each parameter's step its own again: the tests that
# compare a group with separate optimizers use it (tests/test_lamb.py checks the coupled step).
COUPLED = {"Lamb": {"max_grad_norm": None}}


def per_parameter(name: str, kwargs: dict) -> dict:
    """kwargs under which optimizer `name` steps each parameter independently of the others."""
    return {**kwargs, **COUPLED.get(name, {})}


def optimizer_classes() -> list:
    out = []
    for name in gf.optim.__all__:
        cls = getattr(gf.optim, name)
        if isinstance(cls, type) and issubclass(cls, gf.optim.Optimizer) and getattr(cls, "_kernel", None):
            out.append(cls)
    return out


def torch_class(cls, torch):
    """torch.optim's class of the same name, where the row has a torch counterpart (Kernel.torch)."""
    if cls._row.torch is None:
        return None
    return getattr(torch.optim, cls.__name__)


def _signature(cls) -> dict:
    return inspect.signature(cls).parameters


def hyper_key(spec: Scalar) -> str:
    return spec.hyper if isinstance(spec.hyper, str) else spec.hyper[0]


def hyperparameters(cls, scalars: dict) -> dict:
    """The kernel scalars `scalars` as cls's constructor arguments (Scalar.hyper): pairs such as betas
    are completed from the constructor's defaults; scalars the class does not take are dropped."""
    sig = _signature(cls)
    out: dict = {}
    for s in cls._row.scalars:
        if s.hyper is None or s.name not in scalars or hyper_key(s) not in sig:
            continue
        key = hyper_key(s)
        if isinstance(s.hyper, tuple):
            pair = list(out.get(key, sig[key].default))
            pair[s.hyper[1]] = scalars[s.name]
            out[key] = tuple(pair)
        else:
            out[key] = scalars[s.name]
    return out


def class_only(cls) -> dict:
    """{name: default} of the constructor's numeric arguments that are no kernel scalar's hyperparameter
    (torch's own, such as an initial accumulator value)."""
    keys = {hyper_key(s) for s in cls._row.scalars if s.hyper is not None}
    return {n: p.default for n, p in _signature(cls).items() if n not in keys and type(p.default) in (int, float)}


def _scalars_of_hyper(cls, kwargs: dict) -> dict:
    """The kernel scalars that constructor arguments give (the inverse of hyperparameters)."""
    sig = _signature(cls)
    out = {}
    for s in cls._row.scalars:
        if s.hyper is None or hyper_key(s) not in sig:
            continue
        value = kwargs.get(hyper_key(s), sig[hyper_key(s)].default)
        out[s.name] = value[s.hyper[1]] if isinstance(s.hyper, tuple) else value
    return out


def _valid(cls, kwargs: dict) -> bool:
    try:
        cls([np.zeros(2, np.float32)], **kwargs)
    except (TypeError, ValueError):
        return False
    return True


def varied(cls) -> dict:
    """The richest example's settings with every number moved off its default (halved; a zero takes
    another example's value), each move kept only where the row's ranges and rules allow it, the
    class's own numbers too, and maximize=True."""
    row = cls._row
    base = scalars_of(row, richest(row))
    kwargs = hyperparameters(cls, {k: v for k, v in base.items() if k in richest(row).scalars})
    current = _scalars_of_hyper(cls, kwargs)
    for s in row.scalars:
        if s.hyper is None or s.type != "float" or s.name not in current:
            continue
        value = current[s.name]
        if value:
            new = value * 0.5
        else:
            others = [ex.scalars[s.name] for ex in examples(row) if ex.scalars.get(s.name)]
            if not others:
                continue
            new = max(others)
        trial = {**kwargs, **hyperparameters(cls, {**current, s.name: new})}
        if _valid(cls, trial):
            kwargs, current = trial, {**current, s.name: new}
    for name, default in class_only(cls).items():
        trial = {**kwargs, name: default * 0.5 if default else 0.5}
        if _valid(cls, trial):
            kwargs = trial
    if "maximize" in _signature(cls):
        kwargs["maximize"] = True
    return kwargs


def settings(cls, prologue: bool = False) -> list:
    """Constructor arguments that together take every path of cls: its defaults, each example of its
    row (as hyperparameters), and varied(cls); prologue=True: each example also with maximize=True
    (the gradient prologue crossed with every path)."""
    out = [{}]
    for ex in examples(cls._row):
        kw = hyperparameters(cls, ex.scalars)
        variants = [kw, {**kw, "maximize": True}] if prologue and "maximize" in _signature(cls) else [kw]
        out.extend(v for v in variants if v not in out)
    out.append(varied(cls))
    return out


def all_states(cls) -> dict:
    """Constructor arguments under which the optimizer uses every state its row's examples use."""
    return hyperparameters(cls, richest(cls._row).scalars)


def setting_id(kwargs: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in kwargs.items()) or "defaults"


def bad_hyperparameters(cls) -> list:
    """[(id, constructor arguments, exception class, message or None)]: a hyperparameter the class
    refuses, one per case, from its row: each bad probe of each Scalar with a torch message (also as
    an int where it is one, as torch's -1), a string for a number and a number for a pair (TypeError),
    each joint rule broken (Rule.torch), and the class's own numbers at -1 (message: torch's, where
    torch has the class; None here)."""
    row, sig = cls._row, _signature(cls)
    out = []
    for s in row.scalars:
        if s.hyper is None or hyper_key(s) not in sig or s.torch is None:
            continue
        probes = []
        for v in bad_values(s):
            probes.append(v)
            if isinstance(v, float) and v.is_integer():
                probes.append(int(v))
        for v in probes:
            out.append(
                (f"{s.name}={v!r}", hyperparameters(cls, {s.name: v}), ValueError, s.torch.replace("{value}", str(v)))
            )
        if s.type == "float":
            out.append(
                (
                    f"{s.name}='0.1'",
                    hyperparameters(cls, {s.name: "0.1"}),
                    TypeError,
                    s.torch.replace("{value}", repr("0.1")) + " (expected a number, got str)",
                )
            )
        if isinstance(s.hyper, tuple) and s.hyper[1] == 0:
            key = hyper_key(s)
            out.append((f"{key}=0.9", {key: 0.9}, TypeError, f"Invalid {key}: 0.9 (expected a pair of numbers)"))
    for rule, ex, change in rule_breakers(row):
        if rule.torch is None:
            continue
        scalars = scalars_of(row, ex, **change)
        kwargs = hyperparameters(cls, {k: scalars[k] for k in (*ex.scalars, *change)})
        ((name, value),) = change.items()
        out.append((f"rule-{rule.argument}-{ex.id}-{name}={value!r}", kwargs, ValueError, rule.torch.format(**scalars)))
    for name in class_only(cls):
        out.append((f"{name}=-1", {name: -1}, ValueError, None))
    return out
