"""Checkpoints: gf.save / gf.load.

Exact round trips of every supported type (explicit cases and a hypothesis property), an optimizer
resumed from a checkpoint continuing bitwise, the documented file layout, corruption (truncation at
every offset, random bit flips, forged documents with valid checksums, other files) always giving
CheckpointError, unsupported objects refused with their key path, and atomicity: a save that fails
or is killed mid-way (SIGKILL of a subprocess) leaves the previous checkpoint intact.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import json
import math
import os
import pickle
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradfuse as gf
import kernel_cases as kc
from gradfuse import checkpoint as ckpt

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(gf.__file__)))
DTYPES = ["?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]


def assert_same(a, b, where="state"):
    """b is what gf.load returned for a: the same types, keys, key order and bits."""
    if isinstance(a, np.ndarray):
        assert type(b) is np.ndarray, where
        assert b.dtype == a.dtype.newbyteorder("=") and b.dtype.isnative, where
        assert b.shape == a.shape, where
        assert b.flags.c_contiguous and b.flags.writeable and b.flags.owndata, where
        assert np.ascontiguousarray(a, dtype=b.dtype).tobytes() == b.tobytes(), where
    elif isinstance(a, np.generic):
        assert type(b) is type(a), where
        assert np.asarray(a).astype(b.dtype).tobytes() == np.asarray(b).tobytes(), where
    elif type(a) is float:
        assert type(b) is float and struct.pack("<d", a) == struct.pack("<d", b), where
    elif isinstance(a, dict):
        assert type(b) is dict, where
        assert [(type(k), k) for k in a] == [(type(k), k) for k in b], where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif type(a) in (list, tuple):
        assert type(b) is type(a) and len(b) == len(a), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert type(b) is type(a) and b == a, where


def roundtrip(state, tmp_path, name="ckpt.gfc"):
    path = tmp_path / name
    gf.save(state, path)
    return gf.load(path)


def nan_with_payload(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


# ---- round trips ---------------------------------------------------------------------------------------
def test_round_trip_of_every_supported_type(tmp_path):
    state = {
        "none": None,
        "true": True,
        "false": False,
        "ints": [0, 1, -1, 2**62, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**400, -(7**500)],
        "floats": [
            0.0,
            -0.0,
            1.5,
            -1e-310,
            5e-324,
            1.7976931348623157e308,
            math.pi,
            float("inf"),
            float("-inf"),
            float("nan"),
            -float("nan"),
            nan_with_payload(0x7FF0000000000001),
            nan_with_payload(0xFFF8DEADBEEF0001),
            1e16,
            1e-7,
            123456789012345678.0,
        ],
        "strings": [
            "",
            "plain",
            "unicode: \u00e9\u4e2d\U0001f600",
            '\x00\n"\\',
            "lone surrogate \ud800",
            '{"$": "tuple", "items": []}',
        ],
        "tuple": (1, 2.0, "three", None, (), ((),)),
        "list": [[], [[]], ()],
        "empty_dict": {},
        7: "int key",
        -3: "negative int key",
        2**70: "huge int key",
        "7": "str key that looks like an int",
        "tagged-looking": {"$": "dict", "items": [["$", "array"]]},
        "np_scalars": [
            np.float32(1.5),
            np.float64(-0.0),
            np.float16(np.nan),
            np.int8(-5),
            np.uint64(2**64 - 1),
            np.int64(-(2**63)),
            np.bool_(True),
            np.complex64(1 - 2j),
            np.complex128(complex("nan+1j")),
        ],
        "arrays": [
            np.zeros((0,), np.float32),
            np.zeros((3, 0, 2), np.int16),
            np.array(7.25),
            np.array(True),
            np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        ],
    }
    assert_same(state, roundtrip(state, tmp_path))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("order", ["<", ">"])
def test_arrays_of_every_dtype_and_byte_order(tmp_path, dtype, order):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=5 * 7 * np.dtype(dtype).itemsize, dtype=np.uint8)
    a = raw.view(np.dtype(dtype).newbyteorder(order)).reshape(5, 7)  # every bit pattern, NaNs included
    if dtype == "?":
        a = raw.reshape(5, -1) % 2 == 1
    back = roundtrip({"a": a, "t": a.T, "s": a[::2, 1::3], "0d": a[1, 2].copy().reshape(())}, tmp_path)
    for key in back:
        assert back[key].dtype.isnative
    assert_same({"a": a, "t": a.T, "s": a[::2, 1::3], "0d": a[1, 2].reshape(())}, back)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_array_layouts_and_subclasses(tmp_path):
    a = np.arange(60, dtype=np.float64).reshape(3, 4, 5)
    mm = np.lib.format.open_memmap(tmp_path / "m.npy", mode="w+", dtype=np.float32, shape=(4,))
    mm[:] = [1, 2, 3, 4]
    state = {
        "fortran": np.asfortranarray(a),
        "negative strides": a[::-1, ::-2],
        "broadcast": np.broadcast_to(a[0], (6, 4, 5)),
        "readonly": np.frombuffer(b"\x01\x02\x03\x04", np.uint8),
        "memmap": mm,
        "matrix": np.asmatrix(a[0]),
    }
    back = roundtrip(state, tmp_path)
    for key, value in state.items():
        assert type(back[key]) is np.ndarray
        np.testing.assert_array_equal(back[key], np.asarray(value))
        assert back[key].flags.c_contiguous and back[key].flags.writeable
    assert back["broadcast"].shape == (6, 4, 5)


def test_loaded_arrays_are_independent(tmp_path):
    shared = np.arange(4.0)
    back = roundtrip({"a": shared, "b": shared, "c": shared[1:3]}, tmp_path)
    back["a"][0] = 99
    assert back["b"][0] == 0 and back["c"][0] == 1  # references are not kept: separate copies
    assert not np.shares_memory(back["a"], back["b"])


def test_dict_subclasses_load_as_dicts_and_order_is_kept(tmp_path):
    state = collections.OrderedDict([("z", 1), ("a", 2), (3, 3)])
    state["dd"] = collections.defaultdict(list, {1: [2]})
    back = roundtrip(state, tmp_path)
    assert type(back) is dict and list(back) == ["z", "a", 3, "dd"]
    assert type(back["dd"]) is dict and back["dd"] == {1: [2]}


# Hypothesis: any tree of the supported types round-trips exactly.
_array_dtypes = st.sampled_from([np.dtype(d).newbyteorder(o) for d in DTYPES for o in "<>"])
_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10)
    | _array_dtypes.flatmap(lambda dt: hnp.from_dtype(dt).map(dt.newbyteorder("=").type))
    | hnp.arrays(_array_dtypes, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
)
_keys = st.text(max_size=8) | st.integers(min_value=-(2**70), max_value=2**70)
_trees = st.recursive(
    _leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(_keys, children, max_size=4)
    ),
    max_leaves=16,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=_trees)
def test_property_any_tree_round_trips(tmp_path, state):
    assert_same(state, roundtrip(state, tmp_path))


# ---- optimizers: resuming continues bitwise -----------------------------------------------------------------
# Every optimizer class, with settings from its kernel table row that use every state and move every
# number off its default (tests/kernel_cases.py: varied).
OPTIMIZERS = [(cls.__name__, kc.varied(cls)) for cls in kc.optimizer_classes()]


def _grads(params, step):
    rng = np.random.default_rng([1234, step])
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


def _make_params():
    rng = np.random.default_rng(5)
    return [
        rng.standard_normal((17, 5)).astype(np.float32),
        rng.standard_normal(33),
        rng.standard_normal(5).astype(np.float32),
    ]


@pytest.mark.parametrize("name, kwargs", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_optimizer_resumes_bitwise_from_a_checkpoint(tmp_path, backend, name, kwargs):
    cls = getattr(gf.optim, name)
    # Two parameter groups with different settings, so the state dict has several groups.
    params = _make_params()
    opt = cls([{"params": params[:2]}, {"params": params[2:], "lr": 1e-3}], **kwargs)
    for step in range(4):
        opt.step(_grads(params, step))
    saved = opt.state_dict()
    gf.save(
        {"model": {f"p{i}": p for i, p in enumerate(params)}, "optimizer": saved, "epoch": 4}, tmp_path / "ckpt.gfc"
    )
    for step in range(4, 11):  # the uninterrupted run
        opt.step(_grads(params, step))

    state = gf.load(tmp_path / "ckpt.gfc")
    # the groups as saved (schedule-free groups hold their step count and averaging sums)
    assert_same(state["optimizer"]["param_groups"], saved["param_groups"])
    resumed = [state["model"][f"p{i}"] for i in range(3)]
    opt2 = cls([{"params": resumed[:2]}, {"params": resumed[2:], "lr": 0.5}], **kwargs)
    opt2.load_state_dict(state["optimizer"])
    for step in range(state["epoch"], 11):
        opt2.step(_grads(resumed, step))
    for p, q in zip(params, resumed):
        assert p.tobytes() == q.tobytes()
    assert_same(opt.state_dict(), opt2.state_dict())


def test_optimizer_state_dict_keeps_int_keys_tuples_and_none(tmp_path):
    params = _make_params()
    opt = gf.optim.Adam(params, betas=(0.8, 0.99))
    opt.step(_grads(params, 0))
    sd = opt.state_dict()
    back = roundtrip(sd, tmp_path)
    assert list(back["state"]) == [0, 1, 2] and all(type(k) is int for k in back["state"])
    assert back["param_groups"][0]["betas"] == (0.8, 0.99) and type(back["param_groups"][0]["betas"]) is tuple
    assert back["param_groups"][0]["foreach"] is None
    assert_same(sd, back)


# ---- the documented file layout --------------------------------------------------------------------------
def test_file_layout_matches_the_documented_format(tmp_path):
    a = np.arange(10, dtype=">i4")
    b = np.ones((2, 3), np.float16)
    gf.save({"a": a, "t": (1, 2.5), "b": b}, tmp_path / "c.gfc")
    raw = (tmp_path / "c.gfc").read_bytes()
    magic, version, flags, json_len, data_len = struct.unpack_from("<8sIIQQ", raw)
    crc, reserved = struct.unpack_from("<II", raw, 32)
    assert magic == b"\x89GFCKPT\n" and version == gf.checkpoint.FORMAT_VERSION == 1 and flags == reserved == 0
    assert crc == zlib.crc32(raw[:32] + raw[40 : 40 + json_len])
    data_start = -(-(40 + json_len) // 64) * 64
    assert len(raw) == data_start + data_len + 32
    assert raw[40 + json_len : data_start] == bytes(data_start - 40 - json_len)
    assert raw[-32:] == hashlib.sha256(raw[:-32]).digest()
    doc = json.loads(raw[40 : 40 + json_len])
    assert doc["format"] == "gradfuse.checkpoint" and doc["version"] == 1
    assert doc["arrays"] == [
        {"dtype": "<i4", "shape": [10], "offset": 0, "nbytes": 40},
        {"dtype": "<f2", "shape": [2, 3], "offset": 64, "nbytes": 12},
    ]
    assert doc["root"] == {
        "$": "dict",
        "items": [
            ["a", {"$": "array", "index": 0}],
            ["t", {"$": "tuple", "items": [1, 2.5]}],
            ["b", {"$": "array", "index": 1}],
        ],
    }
    assert raw[data_start : data_start + 40] == a.astype("<i4").tobytes()
    assert raw[data_start + 64 : data_start + 76] == b.tobytes()
    assert data_len == 76


# ---- corrupt, truncated and foreign files --------------------------------------------------------------------
def _sample_file(tmp_path):
    state = {
        "w": np.linspace(-1, 1, 37, dtype=np.float32),
        "opt": {0: {"step": 3, "m": np.arange(5.0)}},
        "betas": (0.9, 0.999),
        "name": "run",
        "nan": float("nan"),
        "big": 2**80,
    }
    path = tmp_path / "ok.gfc"
    gf.save(state, path)
    return state, path.read_bytes()


def test_truncation_at_every_offset_is_detected(tmp_path):
    state, raw = _sample_file(tmp_path)
    path = tmp_path / "cut.gfc"
    for size in range(len(raw)):
        path.write_bytes(raw[:size])
        with pytest.raises(gf.CheckpointError) as info:
            gf.load(path)
        assert str(path) in str(info.value)
        if size >= 8:
            assert "truncated" in str(info.value)
    path.write_bytes(raw)
    assert_same(state, gf.load(path))


def test_trailing_bytes_are_detected(tmp_path):
    _, raw = _sample_file(tmp_path)
    path = tmp_path / "long.gfc"
    for extra in (b"\x00", b"junk" * 100):
        path.write_bytes(raw + extra)
        with pytest.raises(gf.CheckpointError, match="trailing"):
            gf.load(path)


def test_every_bit_flip_is_detected(tmp_path):
    _, raw = _sample_file(tmp_path)
    path = tmp_path / "flip.gfc"
    rng = np.random.default_rng(0)
    positions = list(range(0, 48)) + list(rng.integers(0, len(raw), 400)) + list(range(len(raw) - 40, len(raw)))
    for pos in positions:
        bit = int(rng.integers(0, 8))
        damaged = bytearray(raw)
        damaged[pos] ^= 1 << bit
        path.write_bytes(bytes(damaged))
        with pytest.raises(gf.CheckpointError) as info:
            gf.load(path)
        assert str(path) in str(info.value)


def test_bit_flips_give_a_clear_message(tmp_path):
    _, raw = _sample_file(tmp_path)
    path = tmp_path / "flip.gfc"
    json_len = struct.unpack_from("<Q", raw, 16)[0]
    cases = {
        0: "not a gradfuse checkpoint",
        8: "version",
        40 + json_len // 2: "CRC-32",
        len(raw) - 40: "SHA-256",
        len(raw) - 1: "SHA-256",
    }
    for pos, message in cases.items():
        damaged = bytearray(raw)
        damaged[pos] ^= 0x10
        path.write_bytes(bytes(damaged))
        with pytest.raises(gf.CheckpointError, match=message):
            gf.load(path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x89",
        b"hello world\n" * 20,
        b"\x89GFCKPT",
        b"\x89GFCKPT\r\n",
        b"PK\x03\x04" + bytes(100),
        pickle.dumps({"a": 1}),
    ],
    ids=["empty", "one byte", "text", "magic prefix", "other magic", "zip", "pickle"],
)
def test_non_checkpoint_files(tmp_path, content):
    path = tmp_path / "other.bin"
    path.write_bytes(content)
    with pytest.raises(gf.CheckpointError) as info:
        gf.load(path)
    assert str(path) in str(info.value)
    message = str(info.value)
    assert "not a gradfuse checkpoint" in message or "truncated" in message


def test_npy_file_is_not_a_checkpoint(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(3))
    with pytest.raises(gf.CheckpointError, match="not a gradfuse checkpoint"):
        gf.load(tmp_path / "x.npy")


def test_checkpoint_error_is_a_value_error_and_os_errors_pass_through(tmp_path):
    assert issubclass(gf.CheckpointError, ValueError)
    with pytest.raises(FileNotFoundError):
        gf.load(tmp_path / "missing.gfc")
    with pytest.raises(IsADirectoryError):
        gf.load(tmp_path)


def _forge(doc: dict, data: bytes = b"", version: int = 1) -> bytes:
    """A file with valid checksums around an arbitrary JSON document (what only a crafted or buggy
    writer could produce)."""
    text = json.dumps(doc).encode()
    pre = struct.pack("<8sIIQQ", b"\x89GFCKPT\n", version, 0, len(text), len(data))
    head = pre + struct.pack("<II", zlib.crc32(pre + text), 0) + text
    head += bytes(-(-len(head) // 64) * 64 - len(head))
    return head + data + hashlib.sha256(head + data).digest()


def _doc(root, arrays=()):
    return {"format": "gradfuse.checkpoint", "version": 1, "arrays": list(arrays), "root": root}


def test_a_forged_valid_file_loads(tmp_path):
    path = tmp_path / "f.gfc"
    path.write_bytes(
        _forge(
            _doc(
                {"$": "dict", "items": [["x", {"$": "array", "index": 0}]]},
                [{"dtype": "<f8", "shape": [2], "offset": 0, "nbytes": 16}],
            ),
            np.array([1.0, 2.0]).tobytes(),
        )
    )
    assert_same({"x": np.array([1.0, 2.0])}, gf.load(path))


ARR = [{"dtype": "<f8", "shape": [2], "offset": 0, "nbytes": 16}]
FORGED = {
    "object dtype": (
        _doc({"$": "array", "index": 0}, [{"dtype": "|O", "shape": [2], "offset": 0, "nbytes": 16}]),
        "never hold",
    ),
    "string dtype": (
        _doc({"$": "array", "index": 0}, [{"dtype": "<U2", "shape": [2], "offset": 0, "nbytes": 16}]),
        "never hold",
    ),
    "big-endian dtype": (
        _doc({"$": "array", "index": 0}, [{"dtype": ">f8", "shape": [2], "offset": 0, "nbytes": 16}]),
        "never hold",
    ),
    "object scalar": (_doc({"$": "scalar", "dtype": "|O", "hex": "00" * 8}), "never hold"),
    "wrong nbytes": (
        _doc({"$": "array", "index": 0}, [{"dtype": "<f8", "shape": [3], "offset": 0, "nbytes": 16}]),
        "claims",
    ),
    "huge shape": (
        _doc({"$": "array", "index": 0}, [{"dtype": "<f8", "shape": [2**40, 2**40], "offset": 0, "nbytes": 16}]),
        "claims",
    ),
    "negative dim": (
        _doc({"$": "array", "index": 0}, [{"dtype": "<f8", "shape": [-2], "offset": 0, "nbytes": 16}]),
        "shape",
    ),
    "misaligned": (
        _doc({"$": "array", "index": 0}, [{"dtype": "<f8", "shape": [1], "offset": 8, "nbytes": 8}]),
        "lies at",
    ),
    "unused array": (_doc(None, ARR), "not used"),
    "array used twice": (_doc([{"$": "array", "index": 0}, {"$": "array", "index": 0}], ARR), "used twice"),
    "missing array": (_doc({"$": "array", "index": 1}, ARR), "refers to array"),
    "unknown tag": (_doc({"$": "set", "items": []}, ARR), "unknown"),
    "plain object": (_doc({"a": 1}, ARR), "unknown"),
    "extra key": (_doc({"$": "tuple", "items": [], "x": 1}, ARR), "unknown"),
    "bad dict item": (_doc({"$": "dict", "items": [["a"]]}, ARR), "malformed dict item"),
    "float key": (_doc({"$": "dict", "items": [[1.5, None]]}, ARR), "dict key"),
    "duplicate key": (_doc({"$": "dict", "items": [["a", 1], ["a", 2]]}, ARR), "twice"),
    "bad hex int": (_doc({"$": "int", "hex": "12"}, ARR), "malformed integer"),
    "bad float bits": (_doc({"$": "float", "bits": "xyz"}, ARR), "malformed float"),
    "bad scalar size": (_doc({"$": "scalar", "dtype": "<f4", "hex": "00"}, ARR), "scalar of 1 bytes"),
    "wrong format": ({"format": "other", "version": 1, "arrays": [], "root": None}, "format"),
    "missing root": ({"format": "gradfuse.checkpoint", "version": 1, "arrays": []}, "not a checkpoint description"),
    "not an object": ([1, 2, 3], "not a checkpoint description"),
}


@pytest.mark.parametrize("case", list(FORGED))
def test_forged_documents_are_rejected(tmp_path, case):
    doc, message = FORGED[case]
    data = b"" if doc is None or not isinstance(doc, dict) or not doc.get("arrays") else bytes(16)
    path = tmp_path / "forged.gfc"
    path.write_bytes(_forge(doc, data))
    with pytest.raises(gf.CheckpointError, match=message):
        gf.load(path)


def test_forged_json_oddities_are_rejected(tmp_path):
    path = tmp_path / "forged.gfc"
    for text, message in [
        (b'{"format": NaN}', "does not parse"),
        (b"[" * 100000 + b"]" * 100000, "."),
        (b"\xff\xfe", "does not parse"),
        (b'{"a": 1' + b"0" * 5000 + b"}", "does not parse"),
    ]:
        pre = struct.pack("<8sIIQQ", b"\x89GFCKPT\n", 1, 0, len(text), 0)
        head = pre + struct.pack("<II", zlib.crc32(pre + text), 0) + text
        head += bytes(-(-len(head) // 64) * 64 - len(head))
        path.write_bytes(head + hashlib.sha256(head).digest())
        with pytest.raises(gf.CheckpointError, match=message):
            gf.load(path)


def test_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "v2.gfc"
    path.write_bytes(_forge(_doc(None), version=2))
    with pytest.raises(gf.CheckpointError, match="format version 2 is not supported.*newer"):
        gf.load(path)


# ---- unsupported objects ----------------------------------------------------------------------------------
class Foo:
    pass


class Color(enum.IntEnum):
    RED = 1


class MyFloat(float):
    pass


UNSUPPORTED = {
    "object": ({"model": {"w": Foo()}}, TypeError, r"state\['model'\]\['w'\]: object of type Foo is not supported"),
    "set": ({"a": [1, {2}]}, TypeError, r"state\['a'\]\[1\]: object of type set"),
    "bytes": ({"a": b"x"}, TypeError, r"state\['a'\]: object of type bytes"),
    "int enum": ({"a": Color.RED}, TypeError, r"state\['a'\]: object of type Color"),
    "float subclass": ((MyFloat(1.0),), TypeError, r"state\[0\]: object of type MyFloat"),
    "object array": ({"a": np.array([1, "x"], dtype=object)}, TypeError, r"state\['a'\]: arrays of dtype object"),
    "string array": ({"a": np.array(["ab"])}, TypeError, r"arrays of dtype <U2"),
    "datetime array": ({"a": np.array(["2020-01-01"], dtype="M8[D]")}, TypeError, r"arrays of dtype datetime64"),
    "structured array": ({"a": np.zeros(2, dtype=[("x", "f4")])}, TypeError, r"arrays of dtype"),
    "longdouble array": ({"a": np.zeros(2, dtype=np.longdouble)}, TypeError, r"arrays of dtype"),
    "masked array": ({"a": np.ma.masked_array([1.0, 2.0], mask=[0, 1])}, TypeError, r"masked arrays"),
    "numpy str": ({"a": np.str_("x")}, TypeError, r"NumPy scalars of type str_"),
    "datetime scalar": ({"a": np.datetime64("2020-01-01")}, TypeError, r"NumPy scalars of type datetime64"),
    "tuple key": ({(1, 2): 3}, TypeError, r"state: dict key \(1, 2\) of type tuple"),
    "float key": ({"a": {1.5: 3}}, TypeError, r"state\['a'\]: dict key 1.5 of type float"),
    "bool key": ({True: 3}, TypeError, r"dict key True of type bool"),
    "None key": ({None: 3}, TypeError, r"dict key None of type NoneType"),
    "numpy int key": ({np.int64(1): 3}, TypeError, r"of type int64"),
}


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unsupported_objects_are_refused_before_writing(tmp_path, case):
    state, exc, message = UNSUPPORTED[case]
    path = tmp_path / "ckpt.gfc"
    gf.save({"old": 1}, path)
    before = path.read_bytes()
    with pytest.raises(exc, match=message):
        gf.save(state, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.gfc"]


def test_circular_references_are_refused(tmp_path):
    a = {"x": []}
    a["x"].append(a)
    with pytest.raises(TypeError, match=r"state\['x'\]\[0\]: circular reference"):
        gf.save(a, tmp_path / "c.gfc")
    shared = [1]
    back = roundtrip({"a": shared, "b": shared}, tmp_path)  # shared, not circular: saved twice
    assert back == {"a": [1], "b": [1]}


def test_torch_tensors_are_refused(tmp_path, torch):
    with pytest.raises(TypeError, match=r"state\['w'\]: object of type Tensor"):
        gf.save({"w": torch.zeros(2)}, tmp_path / "c.gfc")


# ---- atomic writing ---------------------------------------------------------------------------------------
def test_save_accepts_str_and_pathlike_and_overwrites(tmp_path):
    gf.save({"v": 1}, str(tmp_path / "a.gfc"))
    gf.save({"v": 2}, tmp_path / "a.gfc")
    assert gf.load(str(tmp_path / "a.gfc")) == {"v": 2}
    assert os.listdir(tmp_path) == ["a.gfc"]


def test_save_errors_for_bad_destinations(tmp_path):
    with pytest.raises(FileNotFoundError):
        gf.save({}, tmp_path / "no" / "such" / "folder.gfc")
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        gf.save({}, tmp_path / "dir")


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_file_mode_is_kept_or_follows_the_umask(tmp_path):
    path = tmp_path / "a.gfc"
    old = os.umask(0o027)
    try:
        gf.save({}, path)
        assert os.stat(path).st_mode & 0o777 == 0o640
        os.chmod(path, 0o604)
        gf.save({"x": 1}, path)
        assert os.stat(path).st_mode & 0o777 == 0o604
    finally:
        os.umask(old)


def test_a_failing_save_keeps_the_old_file_and_removes_its_temp(tmp_path, monkeypatch):
    path = tmp_path / "c.gfc"
    gf.save({"v": np.arange(5)}, path)
    before = path.read_bytes()
    real = ckpt._array_pieces

    def failing(arr, dtype):
        yield from real(arr, dtype)
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of writing

    monkeypatch.setattr(ckpt, "_array_pieces", failing)
    with pytest.raises(KeyboardInterrupt):
        gf.save({"v": np.arange(10)}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.gfc"]


def test_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "c.gfc"
    gf.save({"v": 1}, path)
    before = path.read_bytes()

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        gf.save({"v": 2}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.gfc"]


KILL_CHILD = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import gradfuse as gf
    from gradfuse import checkpoint as ckpt

    mode, path = sys.argv[1], sys.argv[2]
    ckpt._CHUNK = 1 << 20
    real_pieces = ckpt._array_pieces

    def slow_pieces(arr, dtype):  # the real writer, slowed down so the kill lands mid-way
        for piece in real_pieces(arr, dtype):
            yield piece
            time.sleep(0.002)

    if mode == "data":
        ckpt._array_pieces = slow_pieces
    else:  # "fsync": everything written, killed before the rename
        def stuck(fd):
            print("fsync", flush=True)
            time.sleep(60)
        ckpt.os.fsync = stuck
    print("start", flush=True)
    gf.save({"big": np.full(48 << 20, 7, np.uint8), "epoch": 2}, path)
    print("done", flush=True)
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("mode", ["data", "fsync"])
def test_a_save_killed_mid_way_leaves_the_previous_checkpoint(tmp_path, mode):
    path = tmp_path / "ckpt.gfc"
    old_state = {"big": np.arange(1 << 16, dtype=np.float32), "epoch": 1}
    gf.save(old_state, path)
    before = path.read_bytes()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")])))
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_CHILD, mode, str(path)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "start"
        if mode == "fsync":
            assert child.stdout.readline().strip() == "fsync"
        deadline = time.monotonic() + 60
        while True:  # wait until the temporary file holds part of the new checkpoint
            temps = [f for f in os.listdir(tmp_path) if f.endswith(".gfckpt-tmp")]
            if temps and os.path.getsize(tmp_path / temps[0]) > (4 << 20):
                break
            assert time.monotonic() < deadline and child.poll() is None, "the child never wrote"
            time.sleep(0.001)
        # the reader sees the old checkpoint at the final path while the new one is being written
        assert_same(old_state, gf.load(path))
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    assert_same(old_state, gf.load(path))
    temps = sorted(str(tmp_path / f) for f in os.listdir(tmp_path) if f != "ckpt.gfc")
    assert len(temps) == 1 and os.path.basename(temps[0]).startswith(".ckpt.gfc.")
    if mode == "data":  # the leftover is a partial checkpoint
        with pytest.raises(gf.CheckpointError, match="truncated"):
            gf.load(temps[0])
    else:  # written and flushed, killed before the rename: complete, but not at the final path
        assert gf.load(temps[0])["epoch"] == 2
    (tmp_path / "other.gfc").write_bytes(b"")
    (tmp_path / ".other.gfc.abc.gfckpt-tmp").write_bytes(b"")  # another checkpoint's temp: kept
    assert sorted(gf.checkpoint.clean_temp_files(path)) == temps
    assert sorted(os.listdir(tmp_path)) == [".other.gfc.abc.gfckpt-tmp", "ckpt.gfc", "other.gfc"]
    gf.save({"epoch": 3}, path)
    assert gf.load(path) == {"epoch": 3}


@pytest.mark.skipif(os.name != "posix", reason="Windows cannot replace a file that a reader holds open")
def test_concurrent_readers_never_see_a_partial_file(tmp_path):
    path = tmp_path / "c.gfc"
    states = [{"v": np.full(1 << 18, i, np.float64), "i": i} for i in range(2)]
    gf.save(states[0], path)
    errors, seen = [], set()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                got = gf.load(path)
                assert np.all(got["v"] == got["i"])
                seen.add(got["i"])
            except Exception as exc:  # noqa: BLE001 - collected for the assertion below
                errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for k in range(40):
            gf.save(states[k % 2], path)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert seen <= {0, 1}
    assert os.listdir(tmp_path) == ["c.gfc"]


# ---- memory -----------------------------------------------------------------------------------------------
def test_save_and_load_do_not_copy_big_arrays(tmp_path):
    big = np.ones(16 << 20, np.float32)  # 64 MiB
    swapped = np.ones(4 << 20, ">f8")  # 32 MiB, converted piece by piece
    path = tmp_path / "big.gfc"
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        gf.save({"big": big, "swapped": swapped}, path)
        save_peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        back = gf.load(path)
        load_peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert save_peak < 24 << 20  # about one 16 MiB piece, never a copy of the state
    assert load_peak < (96 + 8) << 20  # the loaded arrays themselves (96 MiB), nothing more
    assert back["big"].tobytes() == big.tobytes() and np.array_equal(back["swapped"], swapped)
