"""The kernel table (gradfuse/table.py) against the code that implements it, so the two cannot drift
apart:

- the C++ bindings: for each kernel with its own binding, the pybind11 signature (names, order,
  keyword-only split, defaults and their types) is the row's; for the optimizers (one entry point,
  optim_step), every row is a registered algorithm and every scalar a field of OptimArgs;
- gf.ops: each kernel's signature (and .numpy's, .check's) is the row's;
- ranges: every Range's `good` values are accepted and its `bad` ones refused with a ValueError
  naming that argument, on both backends, with the same fields and nothing changed; the same for
  the choices of a scalar (activation, reduction) and for each joint rule (Rule);
- examples: every example of every row is a valid call that both backends accept.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

import gradfuse as gf
import kernel_cases as kc
from conftest import BACKENDS, HAS_CORE
from gradfuse._ext import _core
from gradfuse.table import KERNELS, NO_DEFAULT, Range, Scalar
from test_signatures import parse_pybind_signature

needs_core = pytest.mark.skipif(not HAS_CORE, reason="the C++ extension is not available")
NATIVE = [row for row in kc.ROWS if row.entry is None]


def table_signature(row) -> list:
    """[(name, keyword_only, default or inspect.Parameter.empty)] as the row defines the call."""
    out, keyword_only = [], False
    for a in row.args:
        keyword_only = keyword_only or (isinstance(a, Scalar) and a.keyword_only)
        out.append((a.name, keyword_only, inspect.Parameter.empty if a.default is NO_DEFAULT else a.default))
    return out


def python_signature(fn) -> list:
    out = []
    for p in inspect.signature(fn).parameters.values():
        assert p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY), p
        out.append((p.name, p.kind is p.KEYWORD_ONLY, p.default))
    return out


def assert_same_signature(got, want, what):
    assert [g[:2] for g in got] == [w[:2] for w in want], f"{what}: names, order or keyword-only split"
    for (name, _, a), (_, _, b) in zip(got, want):  # defaults: equal, and of the same type (False is not 0.0)
        same = (type(a), a) == (type(b), b) or (
            isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
        )
        assert same, f"{what}: default of {name}: {a!r} vs {b!r} (the table)"


def test_every_kernel_has_a_row_and_every_row_a_kernel():
    assert sorted(gf.ops.__all__) == sorted(KERNELS)
    for row in kc.ROWS:
        names = [a.name for a in row.args]
        assert len(names) == len(set(names)), row.name
        for a in row.arrays:  # shape references name arguments of the row
            if isinstance(a.shape, str):
                assert a.shape.startswith("like:") and a.shape[5:] in names, (row.name, a.name)
            if a.in_place is not None:
                assert a.in_place in names and a.written, (row.name, a.name)


# ---- the C++ bindings ------------------------------------------------------------------------------------------


@needs_core
@pytest.mark.parametrize("row", NATIVE, ids=lambda r: r.name)
def test_binding_signature_is_the_rows(row):
    assert_same_signature(
        parse_pybind_signature(getattr(_core, row.name).__doc__), table_signature(row), f"_core.{row.name}"
    )


@needs_core
@pytest.mark.parametrize("row", kc.OPTIMIZER_ROWS, ids=lambda r: r.name)
def test_optimizer_row_is_a_registered_algorithm_with_its_fields(row):
    assert row.name in _core._optimizer_algorithms()
    fields = set(_core._optimizer_fields())
    missing = [s.name for s in row.scalars if s.name != "skip_nonfinite" and s.name not in fields]
    assert not missing, f"{row.name}: scalars that OptimArgs has no field for: {missing}"
    assert not hasattr(_core, row.name), "optimizers go through optim_step"


@needs_core
def test_every_registered_algorithm_and_field_has_a_row():
    """The other way round: no algorithm without a row (but test-only ones, _touch), no unused field."""
    rows = {r.name for r in kc.OPTIMIZER_ROWS}
    assert {a for a in _core._optimizer_algorithms() if not a.startswith("_")} == rows
    scalars = {s.name for r in kc.OPTIMIZER_ROWS for s in r.scalars}
    assert set(_core._optimizer_fields()) <= scalars


# ---- gf.ops ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", kc.ROWS, ids=lambda r: r.name)
def test_ops_signature_is_the_rows(row):
    op = getattr(gf.ops, row.name)
    want = table_signature(row)
    for fn in (op, op.numpy, op.check):
        assert_same_signature(python_signature(fn), want, f"gf.ops.{row.name}")
    assert op.row is row and op.__doc__ == row.doc


# ---- examples ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", kc.ROWS, ids=lambda r: r.name)
def test_examples_are_valid_and_complete(row):
    """Every example sets only the row's scalars, every scalar without a default, within the ranges
    and rules; its dims give every array a shape."""
    for ex in kc.examples(row):
        assert set(ex.scalars) <= {s.name for s in row.scalars}, (row.name, ex.id)
        s = kc.scalars_of(row, ex)
        assert {x.name for x in row.scalars} <= set(s), (row.name, ex.id, "a scalar without a default is missing")
        gf._checks.scalars(row, s)
        kc.shapes_of(row, s, dict(ex.dims), present=[a.name for a in kc.used_arrays(row, s)])
    ids = [ex.id for ex in kc.examples(row)]
    assert len(ids) == len(set(ids)), row.name


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", kc.cases(), ids=kc.case_id)
def test_both_backends_accept_every_example(case, dtype):
    """With every optional array given, and with no elements at all. Without the optional arrays,
    both accept the call or both refuse it alike (some paths need one of them: relu's backward
    needs x or y; the table's `when` cannot say "either")."""
    row, ex = case
    results = {}
    for backend in BACKENDS:
        fn = getattr(getattr(gf.ops, row.name), backend)
        with np.errstate(all="ignore"):
            results[backend] = [fn(**kc.build(row, ex, dtype)), fn(**kc.build(row, ex, dtype, **kc.zero_size(row, ex)))]
    types = {b: [type(r) for r in rs] for b, rs in results.items()}
    assert len({tuple(t) for t in types.values()}) == 1, types
    accepted_alike(row, lambda: kc.build(row, ex, dtype, optional=False))


def accepted_alike(row, make) -> bool:
    """make() -> a call's values. The NumPy twin accepts it and then so does the C++ kernel (True),
    or the twin refuses it and the C++ kernel refuses it alike (False)."""
    try:
        with np.errstate(all="ignore"):
            getattr(gf.ops, row.name).numpy(**make())
    except (TypeError, ValueError):
        kc.refused_alike(row, make)
        return False
    for backend in BACKENDS:
        with np.errstate(all="ignore"):
            getattr(getattr(gf.ops, row.name), backend)(**make())
    return True


# ---- ranges, choices and rules on both backends ------------------------------------------------------------------


def _probes():
    """(row, scalar, value, good) for every Range probe and every choice of every scalar."""
    for row in kc.ROWS:
        for spec in row.scalars:
            for v in kc.good_values(spec):
                yield pytest.param(row, spec, v, True, id=f"{row.name}-{spec.name}={v!r}-good")
            for v in kc.bad_values(spec):
                yield pytest.param(row, spec, v, False, id=f"{row.name}-{spec.name}={v!r}-bad")


PROBES = list(_probes())


def test_every_range_has_probes_on_its_two_sides():
    for row in kc.ROWS:
        for spec in row.scalars:
            if isinstance(spec.range, Range):
                assert spec.range.good and spec.range.bad, f"{row.name}.{spec.name}: a Range without probes"
                assert all(spec.range(v) for v in spec.range.good), (row.name, spec.name)
                assert not any(spec.range(v) for v in spec.range.bad), (row.name, spec.name)


@pytest.mark.parametrize("row, spec, value, good", PROBES)
def test_scalar_range_on_both_backends(row, spec, value, good):
    """A valid call of the row with one scalar changed: accepted on both backends when the value is
    a good probe, refused with a ValueError naming that scalar (the same fields on both) when bad."""
    if good:  # accepted by some example (whose rules allow it); where a kernel's own checks refuse it, alike
        tried = [ex for ex in kc.examples(row) if kc.rules_hold(row, kc.scalars_of(row, ex, **{spec.name: value}))]
        accepted = [accepted_alike(row, lambda ex=ex: kc.build(row, ex, scalars={spec.name: value})) for ex in tried]
        assert any(accepted), f"no example of {row.name} accepts {spec.name}={value!r}"
    else:
        ex = kc.examples(row)[0]
        kc.refused_alike(row, lambda: kc.build(row, ex, scalars={spec.name: value}), ValueError, spec.name)


RULES = [
    pytest.param(
        row,
        rule,
        ex,
        change,
        id=f"{row.name}-{rule.argument}-{ex.id}-{next(iter(change))}={next(iter(change.values()))!r}",
    )
    for row in kc.ROWS
    for rule, ex, change in kc.rule_breakers(row)
]


def test_every_rule_can_be_broken():
    for row in kc.ROWS:
        for rule in row.rules:
            found = any(r is rule for r, *_ in kc.rule_breakers(row))
            assert found, f"{row.name}: no call breaks {rule.argument}'s rule"


@pytest.mark.parametrize("row, rule, ex, change", RULES)
def test_joint_rule_on_both_backends(row, rule, ex, change):
    """Scalars each in range that break a joint rule: a ValueError naming the rule's argument."""
    kc.refused_alike(row, lambda: kc.build(row, ex, scalars=change), ValueError, rule.argument)
