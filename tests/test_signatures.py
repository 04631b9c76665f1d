"""Every gf.ops kernel: the C++ function and its NumPy twin have the same signature (names, order,
keyword-only split, defaults and their types), and gf.ops dispatches to both. The signatures against
the kernel table itself: tests/test_table.py (which uses the parser here)."""

from __future__ import annotations

import ast
import inspect

import pytest

import gradfuse as gf
from conftest import HAS_CORE
from gradfuse._ext import _core


def _split_top_level(text):
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def parse_pybind_signature(doc):
    """[(name, keyword_only, default or inspect.Parameter.empty)] from a pybind11 docstring's first
    line, e.g. 'kernel(params: object, *, step: int, lr: float = 0.001, ...) -> bool'."""
    line = doc.lstrip().splitlines()[0]
    open_at = line.index("(")
    depth, close_at = 0, None
    for i in range(open_at, len(line)):
        depth += line[i] == "("
        depth -= line[i] == ")"
        if depth == 0:
            close_at = i
            break
    out, kw_only = [], False
    for item in _split_top_level(line[open_at + 1 : close_at]):
        if item == "*":
            kw_only = True
            continue
        head, eq, default = item.partition(" = ")
        name = head.split(":")[0].strip()
        out.append((name, kw_only, ast.literal_eval(default) if eq else inspect.Parameter.empty))
    return out


def twin_signature(fn):
    out = []
    for p in inspect.signature(fn).parameters.values():
        assert p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY), p
        out.append((p.name, p.kind is p.KEYWORD_ONLY, p.default))
    return out


def test_parse_pybind_signature_itself():
    got = parse_pybind_signature(
        "f(a: object, b: list[int, float] = None, *, c: typing.SupportsFloat | "
        "typing.SupportsIndex = 1e-08, d: bool = False, e: int) -> bool\n\ndoc"
    )
    assert got == [
        ("a", False, inspect.Parameter.empty),
        ("b", False, None),
        ("c", True, 1e-8),
        ("d", True, False),
        ("e", True, inspect.Parameter.empty),
    ]


NATIVE = [name for name in gf.ops.__all__ if getattr(gf.ops, name).row.entry is None]  # the rest: optim_step


@pytest.mark.skipif(not HAS_CORE, reason="the C++ extension is not available")
@pytest.mark.parametrize("name", NATIVE)
def test_pybind_signature_matches_twin(name):
    twin = getattr(gf.ops, name).numpy
    got = parse_pybind_signature(getattr(_core, name).__doc__)
    want = twin_signature(twin)
    assert [g[:2] for g in got] == [w[:2] for w in want]  # names, order, keyword-only split
    for (pname, _, a), (_, _, b) in zip(got, want):  # defaults: equal, and the same type (False is not 0.0)
        assert (type(a), a) == (type(b), b), f"{name}: default of {pname}: {a!r} (C++) vs {b!r} (NumPy)"


@pytest.mark.parametrize("name", gf.ops.__all__)
def test_ops_dispatch_has_the_twin_signature(name):
    op = getattr(gf.ops, name)
    assert op.row is gf.table.KERNELS[name]
    assert inspect.signature(op) == inspect.signature(op.numpy) == inspect.signature(op.check)
    if op.row.entry is not None and HAS_CORE:  # the optimizers' C++ side is a Python function over optim_step
        assert inspect.signature(op.cpp) == inspect.signature(op)
