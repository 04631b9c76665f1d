"""NumPy twins of the dropout kernels (cpp/src/dropout.cpp; contract in cpp/include/gradfuse/dropout.hpp).

The math only (gf.ops checks every argument against the kernel table first, gradfuse.table), with
the results of gradfuse._core, bitwise:

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

import numpy as np

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


def dropout_mask_bytes(*, n):
    return 8 * ((n + 63) // 64)


def _factors(keep: np.ndarray, p: float, dtype) -> np.ndarray:
    """scale where kept, 0 where dropped, in dtype."""
    return np.where(keep, scale(p, dtype), np.dtype(dtype).type(0))


def dropout_forward(*, x, y, mask, p, seed, counter):
    n = x.size
    if p == 1:
        keep = np.zeros(n, bool)
    else:
        keep = random_words(n, seed, counter) >= threshold(p)
    # a dropped Inf gives NaN (x * 0, as torch); a kept value near the largest float overflows to Inf
    with np.errstate(invalid="ignore", over="ignore"):
        y[...] = x * _factors(keep, p, x.dtype).reshape(x.shape)
    padded = np.zeros(8 * mask.size, bool)
    padded[:n] = keep
    mask[...] = np.packbits(padded, bitorder="little")


def dropout_backward(*, dy, mask, dx, p):
    keep = np.unpackbits(mask, bitorder="little")[: dy.size].astype(bool)
    with np.errstate(invalid="ignore", over="ignore"):
        dx[...] = dy * _factors(keep, p, dy.dtype).reshape(dy.shape)


def philox4x32_10(*, counters, key, out):
    words = philox(*counters.T, int(key[0]), int(key[1]))
    out[...] = np.stack(words, axis=1)
