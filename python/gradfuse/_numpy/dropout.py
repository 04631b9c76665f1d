"""NumPy twins of the dropout kernels (cpp/src/dropout.cpp; contract in cpp/include/gradfuse/dropout.hpp).

Same names, signatures, checks and results as gradfuse._core, bitwise:

    keep_i = u_i >= threshold(p)   (never when p == 1)
    y_i    = x_i * (keep_i ? scale : 0),   scale = dtype(1 / (1 - p)), 0 when p == 1

u_i is output word i % 4 of Philox4x32-10 of block b = i // 4 (i: the flat index) with counter
(b mod 2^32, b // 2^32, counter mod 2^32, counter // 2^32) and key (seed mod 2^32, seed // 2^32);
threshold(p) = min(2^32 - 1, round(p * 2^32)), ties to even. The mask is bit-packed: bit i % 8
of byte i // 8 is keep_i, 8 * ceil(n / 64) bytes, padding bits 0.

Philox4x32-10 is written here on uint32 arrays (numpy.random.Philox is the 4x64 variant and
gives other numbers); the 32x32 -> 64-bit products are taken in uint64, which holds them exactly.
"""
from __future__ import annotations

import operator

import numpy as np

from . import _checks as check

KERNELS: tuple[str, ...] = ("dropout_forward", "dropout_backward", "dropout_mask_bytes", "philox4x32_10")

PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57  # round multipliers
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments
PHILOX_ROUNDS = 10
_U32 = 0xFFFFFFFF


def philox(c0, c1, c2, c3, k0: int, k1: int):
    """Philox4x32-10 of the counters (c0[i], c1[i], c2[i], c3[i]) (uint32 arrays) under the key
    (k0, k1) (Python ints < 2^32). Returns the four output words, uint32 arrays."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint32) for c in (c0, c1, c2, c3))
    for _ in range(PHILOX_ROUNDS):
        p0 = c0.astype(np.uint64) * np.uint64(PHILOX_M0)
        p1 = c2.astype(np.uint64) * np.uint64(PHILOX_M1)
        hi0, lo0 = (p0 >> np.uint64(32)).astype(np.uint32), p0.astype(np.uint32)
        hi1, lo1 = (p1 >> np.uint64(32)).astype(np.uint32), p1.astype(np.uint32)
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint32(k0), lo1, hi0 ^ c3 ^ np.uint32(k1), lo0
        k0, k1 = (k0 + PHILOX_W0) & _U32, (k1 + PHILOX_W1) & _U32
    return c0, c1, c2, c3


def random_words(n: int, seed: int, counter: int) -> np.ndarray:
    """u_0 .. u_{n-1}: the uint32 of each element of a dropout call."""
    blocks = np.arange((n + 3) // 4, dtype=np.uint64)
    c0 = (blocks & np.uint64(_U32)).astype(np.uint32)
    c1 = (blocks >> np.uint64(32)).astype(np.uint32)
    c2 = np.full(blocks.shape, counter & _U32, np.uint32)
    c3 = np.full(blocks.shape, counter >> 32, np.uint32)
    words = philox(c0, c1, c2, c3, seed & _U32, seed >> 32)
    return np.stack(words, axis=1).reshape(-1)[:n]  # element 4 b + j <- word j of block b


def threshold(p: float) -> int:
    """min(2^32 - 1, round(p * 2^32)); p * 2^32 is exact and Python's round ties to even."""
    return min(_U32, round(p * 2.0**32))


def scale(p: float, dtype) -> np.generic:
    """1 / (1 - p) in double, rounded once to dtype; 0 when p == 1."""
    return np.dtype(dtype).type(1.0 / (1.0 - p) if p < 1 else 0.0)


def dropout_mask_bytes(n):
    """Bytes of the packed dropout mask of n elements: 8 * ceil(n / 64) (whole 64-bit words)."""
    n = check.integer("dropout_mask_bytes", "n", n)
    if n < 0:
        raise ValueError(f"dropout_mask_bytes: n must be >= 0, got {n}")
    return 8 * ((n + 63) // 64)


def _probability(fn, p):
    if not (hasattr(type(p), "__float__") or hasattr(type(p), "__index__")) or isinstance(p, (str, bytes)):
        raise TypeError(f"{fn}: p must be a number, got {type(p).__name__}")
    p = float(p)
    if not (0 <= p <= 1):
        raise ValueError(f"{fn}: dropout probability has to be between 0 and 1, but got {p!r}")
    return p


def _u64(fn, name, v):
    """An int (or an object with __index__; not a bool) in [0, 2**64)."""
    if isinstance(v, (bool, np.bool_)) or not hasattr(type(v), "__index__"):
        raise TypeError(f"{fn}: {name} must be an int, got {type(v).__name__}")
    v = operator.index(v)
    if not 0 <= v < 2**64:
        raise ValueError(f"{fn}: {name} must be an int in [0, 2**64), got {v}")
    return v


def _factors(keep: np.ndarray, p: float, dtype) -> np.ndarray:
    """scale where kept, 0 where dropped, in dtype."""
    return np.where(keep, scale(p, dtype), np.dtype(dtype).type(0))


def dropout_forward(x, y, mask, *, p, seed, counter):
    """Inverted dropout, training mode: y = x * keep / (1 - p), and the keep bits packed into mask
    (uint8, dropout_mask_bytes(x.size) bytes; np.unpackbits(mask, bitorder='little')[:x.size]).
    keep comes from Philox4x32-10 keyed on (seed, counter, element index): the same for every
    thread count, ISA and backend. p in [0, 1] (1: zeros); seed and counter: ints in [0, 2**64).
    y may be x (in place)."""
    fn = "dropout_forward"
    p = _probability(fn, p)
    seed, counter = _u64(fn, "seed", seed), _u64(fn, "counter", counter)
    args = check.ArgSet(fn)
    x = args.floating("x", x, False)
    y = args.floating("y", y, True)
    mask = args.typed("mask", mask, True, "u", 1, "uint8")
    args.require_shape("y", y, x.shape, "x has shape")
    args.require_shape("mask", mask, (dropout_mask_bytes(x.size),), f"x.size = {x.size} needs")
    args.allow_in_place("y", "x")
    args.check_aliasing()

    n = x.size
    if p == 1:
        keep = np.zeros(n, bool)
    else:
        keep = random_words(n, seed, counter) >= threshold(p)
    with np.errstate(invalid="ignore"):  # a dropped Inf gives NaN (x * 0, as torch)
        y[...] = x * _factors(keep, p, x.dtype).reshape(x.shape)
    padded = np.zeros(8 * mask.size, bool)
    padded[:n] = keep
    mask[...] = np.packbits(padded, bitorder="little")


def dropout_backward(dy, mask, dx, *, p):
    """Dropout backward: dx = dy * keep / (1 - p) with keep read from the forward's mask (0 when
    p == 1). dx may be dy (in place)."""
    fn = "dropout_backward"
    p = _probability(fn, p)
    args = check.ArgSet(fn)
    dy = args.floating("dy", dy, False)
    mask = args.typed("mask", mask, False, "u", 1, "uint8")
    dx = args.floating("dx", dx, True)
    args.require_shape("dx", dx, dy.shape, "dy has shape")
    args.require_shape("mask", mask, (dropout_mask_bytes(dy.size),), f"dy.size = {dy.size} needs")
    args.allow_in_place("dx", "dy")
    args.check_aliasing()

    keep = np.unpackbits(mask, bitorder="little")[:dy.size].astype(bool)
    with np.errstate(invalid="ignore"):
        dx[...] = dy * _factors(keep, p, dy.dtype).reshape(dy.shape)


def philox4x32_10(counters, key, out):
    """Philox4x32-10 (Random123): out[i] = the four output words of counter counters[i] (uint32,
    (n, 4)) under key (uint32, (2,)); out is uint32 (n, 4)."""
    fn = "philox4x32_10"
    args = check.ArgSet(fn)
    counters = args.typed("counters", counters, False, "u", 4, "uint32")
    key = args.typed("key", key, False, "u", 4, "uint32")
    out = args.typed("out", out, True, "u", 4, "uint32")
    if counters.ndim != 2 or counters.shape[1] != 4:
        args.fail(f"counters has shape {check.shape_str(counters.shape)}; expected (n, 4)")
    args.require_shape("key", key, (2,), "expected")
    args.require_shape("out", out, counters.shape, "counters has shape")
    args.check_aliasing()

    words = philox(*counters.T, int(key[0]), int(key[1]))
    out[...] = np.stack(words, axis=1)
