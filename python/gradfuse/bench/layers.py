"""bench layers: batch norm, dropout, dense + ReLU, GEMM, cross-entropy and gradient clipping (float32
and bf16), against the NumPy twins and torch.

    python -m gradfuse bench layers [--quick] [--repeats N] [--out DIR] [--threads N] [--no-torch]

Every row times gradfuse (C++), its NumPy twin and torch (when importable) in this process,
interleaved, after warm-up; cells are medians. Forward rows use torch under no_grad (its cheapest
forward); forward+backward rows use autograd, as training does (parameter gradients set to None
before each backward, like zero_grad).

Rates: batch norm and dropout are memory-bound and reported in GB/s of the bytes their algorithm
must move, from the kernel table (gradfuse/table.py; float32: batch norm forward 12 B/element: x
read twice, y written once; backward 20:
dy and x read for the sums, again for dx, dx written; dropout forward 8.125: x read, y written, one
mask bit; backward 8.125), next to the machine's read-modify-write bandwidth measured here. Dense
layers and GEMM are compute-bound and reported in GFLOP/s (the table's FLOPs: 2 N in out per GEMM), next to the FMA
units' peak measured here.

bf16 rows (issue 12): the same kernels on ml_dtypes.bfloat16 data (batch norm's per-channel arrays
stay float32), their bytes at 2 B per data element; next to them, interleaved in the same
measurement, gradfuse's float32 call ("fp32" column) and torch on bfloat16 tensors, which is what
torch.autocast gives these layers (autocast leaves batch_norm and dropout to their input's dtype,
bf16 after an autocast Linear; batch_norm then keeps float32 weights and running statistics).

Layer rows ("layer Dropout ...", kind "layer") time a gf.nn layer's forward(x, training=True) +
backward(dy) against the same kernels called alone on preallocated outputs ("kernels"), and the layer
again with NumPy's own allocator ("numpy-alloc", gf.memory switched off): what a layer call costs
beyond its kernels (fresh outputs, Python) and what the caching allocator saves of it. Their minor
page faults per call are counted too (a number a busy machine does not blur).

Targets (the layer issue): dropout forward+backward >= 25x faster than torch; batch norm
forward+backward >= 2x faster than torch; dense + ReLU forward+backward at least as fast as torch,
and GEMM at >= 0.9x the better of numpy.matmul and torch.mm. Issue 12: a layer's forward+backward
within 1.2x of its kernels alone.

bf16 rows (issue 12; --no-bf16 leaves them out): bf16 GEMM (bf16 A, B, float32 C) against torch.mm
in bf16 and oneDNN's own matmul (one call, its own threading), target >= 0.9x oneDNN and >= 1.2x
torch; dense + ReLU forward+backward in bf16 against torch autocast bf16; a 16x16x16 bf16 matmul for
the fixed cost of a call (gf.ops.matmul, the binding alone, oneDNN, torch). gradfuse runs on its
default bf16 GEMM path, the other path is a column of its own (gradfuse-onednn / gradfuse-fallback).
Their limit is the bf16 units' peak (oneDNN's best bf16 matmul, where the CPU has AMX-BF16 or
AVX512-BF16), else the FMA peak: without bf16 units the bf16 rows run on the fp32 units.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import resource
from dataclasses import dataclass, field

import numpy as np

import gradfuse as gf
from .. import memory
from .._ext import _core
from ..table import KERNELS
from . import _harness as H

HELP = "batch norm, dropout, dense + ReLU and GEMM against the NumPy twins and torch"

BN_SHAPES = [(256, 4096), (4096, 1024), (64, 64, 32, 32)]
BN_SHAPES_QUICK = [(64, 256), (16, 8, 8, 8)]
BN_SHAPES_BF16 = [(4096, 1024)]
BN_SHAPES_BF16_QUICK = [(64, 256)]
DROPOUT_N = 16 * 2**20
DROPOUT_N_QUICK = 2**18
DENSE_SHAPES = [(256, 784, 1024), (256, 1024, 1024), (1024, 4096, 4096)]
DENSE_SHAPES_QUICK = [(64, 128, 96)]
LOSS_SHAPE = (4096, 1024)  # softmax cross-entropy: logits (N, K)
LOSS_SHAPE_QUICK = (64, 100)
CLIP_N = 16 * 2**20
CLIP_N_QUICK = 2**18


@dataclass
class Case:
    workload: str
    kind: str  # "batchnorm", "dropout", "dense", "gemm", "loss", "clip", "dense bf16", "gemm bf16", "layer"
    passes: str  # "forward", "forward+backward", "C = A @ B"
    unit: str  # "GB/s" or "GFLOP/s"
    work: float  # bytes or flops per call
    impls: dict = field(default_factory=dict)
    target: str = ""
    bf16: bool = False  # a bf16 row: its limit is the bf16 peak where the CPU has bf16 units


# ---- the cases ------------------------------------------------------------------------------------------
def _data(rng, shape, bf16: bool) -> np.ndarray:
    x = rng.standard_normal(shape, dtype=np.float32)
    return x.astype(_bfloat16()) if bf16 else x


def _bfloat16():
    import ml_dtypes

    return ml_dtypes.bfloat16


def _to_torch(torch, a: np.ndarray):
    """A torch tensor of a's data (bfloat16: a's bits viewed as torch.bfloat16, no copy)."""
    if a.dtype.kind == "V":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _bytes(kernel: str, bf16: bool) -> float:
    return (
        KERNELS[kernel].bytes_per_element(itemsize=2, wide_itemsize=4) if bf16 else KERNELS[kernel].bytes_per_element()
    )


def batchnorm_cases(shape, torch, rng, bf16: bool = False) -> list[Case]:
    """bf16: x, y, dy, dx in bfloat16 (the per-channel arrays float32), with gradfuse's float32 call
    as the "fp32" cell."""
    c = shape[1]
    x, dy = _data(rng, shape, bf16), _data(rng, shape, bf16)
    w, b = np.ones(c, np.float32), np.zeros(c, np.float32)
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    y, dx = np.empty_like(x), np.empty_like(x)
    sm, si, dw, db = (np.empty(c, np.float32) for _ in range(4))
    x32, dy32 = (x.astype(np.float32), dy.astype(np.float32)) if bf16 else (x, dy)  # the "fp32" cell's data
    y32, dx32 = (np.empty_like(x32), np.empty_like(x32)) if bf16 else (y, dx)

    def forward(x=x, y=y):
        gf.ops.batchnorm_forward(x, w, b, rm, rv, y, sm, si, training=True, momentum=0.1, eps=1e-5)

    def both(x=x, y=y, dy=dy, dx=dx):
        forward(x, y)
        gf.ops.batchnorm_backward(dy, x, w, sm, si, dx, dw, db, training=True)

    def twin(fn):
        def run():
            with gf.use_backend("numpy"):
                fn()

        return run

    n = x.size
    name = f"batchnorm {shape}" + (" bf16" if bf16 else "")
    fwd_bytes = _bytes("batchnorm_forward", bf16) * n
    fwd = Case(name, "batchnorm", "forward", "GB/s", fwd_bytes, {"gradfuse": forward, "numpy": twin(forward)})
    fb = Case(
        name,
        "batchnorm",
        "forward+backward",
        "GB/s",
        fwd_bytes + _bytes("batchnorm_backward", bf16) * n,
        {"gradfuse": both, "numpy": twin(both)},
        target="torch >= 2x",
    )
    if bf16:
        fwd.impls["fp32"] = lambda: forward(x32, y32)
        fb.impls["fp32"] = lambda: both(x32, y32, dy32, dx32)
    if torch is not None:
        tx, tdy = _to_torch(torch, x), _to_torch(torch, dy)
        tw, tb = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
        trm, trv = torch.zeros(c), torch.ones(c)
        F = torch.nn.functional

        def t_forward():
            with torch.no_grad():
                F.batch_norm(tx, trm, trv, tw, tb, training=True, momentum=0.1, eps=1e-5)

        tx_grad = tx.clone().requires_grad_(True)

        def t_both():
            tx_grad.grad = tw.grad = tb.grad = None
            F.batch_norm(tx_grad, trm, trv, tw, tb, training=True, momentum=0.1, eps=1e-5).backward(tdy)

        fwd.impls["torch"], fb.impls["torch"] = t_forward, t_both
    return [fwd, fb]


def dropout_cases(n, torch, rng, bf16: bool = False) -> list[Case]:
    """bf16: x, y, dy, dx in bfloat16, with gradfuse's float32 call as the "fp32" cell."""
    x, dy = _data(rng, n, bf16), _data(rng, n, bf16)
    y, dx = np.empty_like(x), np.empty_like(x)
    mask = np.empty(gf.ops.dropout_mask_bytes(n), np.uint8)
    counter = itertools.count()
    x32, dy32 = (x.astype(np.float32), dy.astype(np.float32)) if bf16 else (x, dy)  # the "fp32" cell's data
    y32, dx32 = (np.empty_like(x32), np.empty_like(x32)) if bf16 else (y, dx)

    def forward(x=x, y=y):
        gf.ops.dropout_forward(x, y, mask, p=0.5, seed=1234, counter=next(counter))

    def both(x=x, y=y, dy=dy, dx=dx):
        forward(x, y)
        gf.ops.dropout_backward(dy, mask, dx, p=0.5)

    def twin(fn):
        def run():
            with gf.use_backend("numpy"):
                fn()

        return run

    name = f"dropout p=0.5, {n / 2**20:g}M" + (" bf16" if bf16 else "")
    # the mask's 1/8 B per element does not scale with the itemsize: 4.125 B in bf16, not 8.125 / 2
    fwd_bytes = (_bytes("dropout_forward", bf16) + (1 / 16 if bf16 else 0)) * n
    fwd = Case(name, "dropout", "forward", "GB/s", fwd_bytes, {"gradfuse": forward, "numpy": twin(forward)})
    fb = Case(
        name,
        "dropout",
        "forward+backward",
        "GB/s",
        fwd_bytes + (_bytes("dropout_backward", bf16) + (1 / 16 if bf16 else 0)) * n,
        {"gradfuse": both, "numpy": twin(both)},
        target="torch >= 25x",
    )
    if bf16:
        fwd.impls["fp32"] = lambda: forward(x32, y32)
        fb.impls["fp32"] = lambda: both(x32, y32, dy32, dx32)
    if torch is not None:
        tx, tdy = _to_torch(torch, x), _to_torch(torch, dy)
        tx_grad = tx.clone().requires_grad_(True)

        def t_forward():
            with torch.no_grad():
                torch.nn.functional.dropout(tx, 0.5, training=True)

        def t_both():
            tx_grad.grad = None
            torch.nn.functional.dropout(tx_grad, 0.5, training=True).backward(tdy)

        fwd.impls["torch"], fb.impls["torch"] = t_forward, t_both
    return [fwd, fb]


def _bf16_torch(torch, a: np.ndarray):
    """A bfloat16 array as a torch bfloat16 tensor (torch has no NumPy bf16 interop: by the bits)."""
    return torch.from_numpy(a.view(np.uint16).astype(np.int16)).view(torch.bfloat16).clone()


def loss_cases(shape, torch, rng) -> list[Case]:
    """Softmax cross-entropy, the loss value and d loss / d logits, in float32 and in bf16 (logits
    and gradient bf16; memory-bound: 8 B/element in float32, 4 in bf16). torch: F.cross_entropy
    forward + backward on float32 logits, and on bf16 logits (its own bf16 kernels)."""
    import ml_dtypes

    n, k = shape
    labels = rng.integers(0, k, n)
    cases = []
    for dtype, itemsize in ((np.float32, 4), (ml_dtypes.bfloat16, 2)):
        x = (rng.standard_normal(shape) * 2).astype(dtype)
        grad = np.empty_like(x)

        def both(x=x, grad=grad):
            gf.ops.softmax_cross_entropy(x, labels, grad)

        def twin(x=x, grad=grad):
            with gf.use_backend("numpy"):
                gf.ops.softmax_cross_entropy(x, labels, grad)

        name = np.dtype(dtype).name
        work = KERNELS["softmax_cross_entropy"].bytes_per_element(itemsize, wide_itemsize=4) * n * k
        case = Case(f"cross-entropy {n}x{k} {name}", "loss", "loss + grad", "GB/s", work)
        case.impls.update(gradfuse=both, numpy=twin)
        if torch is not None:
            tx = (torch.from_numpy(x) if itemsize == 4 else _bf16_torch(torch, x)).requires_grad_(True)
            tl = torch.from_numpy(labels)

            def t_both(tx=tx):
                tx.grad = None
                torch.nn.functional.cross_entropy(tx, tl).backward()

            case.impls["torch"] = t_both
        cases.append(case)
    return cases


def clip_cases(n, torch, rng) -> list[Case]:
    """clip_grad_norm over one gradient of n elements that needs clipping (read for the norm, then
    read and written: 12 B/element in float32, 6 in bf16), float32 and bf16. torch:
    clip_grad_norm_ on a tensor of the same dtype (its bf16 path keeps a bf16 norm)."""
    import ml_dtypes

    cases = []
    for dtype, itemsize in ((np.float32, 4), (ml_dtypes.bfloat16, 2)):
        g = rng.standard_normal(n, dtype=np.float32).astype(dtype)

        def both(g=g):
            gf.ops.clip_grad_norm([g], max_norm=1.0)  # scales by ~1 / sqrt(n) each call: stays finite

        def twin(g=g):
            with gf.use_backend("numpy"):
                gf.ops.clip_grad_norm([g], max_norm=1.0)

        name = np.dtype(dtype).name
        work = KERNELS["clip_grad_norm"].bytes_per_element(itemsize, wide_itemsize=4) * n
        case = Case(f"clip_grad_norm {n / 2**20:g}M {name}", "clip", "norm + scale", "GB/s", work)
        case.impls.update(gradfuse=both, numpy=twin)
        if torch is not None:
            p = torch.nn.Parameter(torch.zeros(n, dtype=torch.float32 if itemsize == 4 else torch.bfloat16))
            p.grad = torch.from_numpy(g) if itemsize == 4 else _bf16_torch(torch, g)

            def t_both(p=p):
                torch.nn.utils.clip_grad_norm_([p], 1.0)

            case.impls["torch"] = t_both
        cases.append(case)
    return cases


def dense_cases(shape, torch, rng) -> list[Case]:
    n, n_in, n_out = shape
    x = rng.standard_normal((n, n_in), dtype=np.float32)
    w = (rng.standard_normal((n_in, n_out), dtype=np.float32) / np.sqrt(n_in)).astype(np.float32)
    b = rng.standard_normal(n_out, dtype=np.float32)
    dy = rng.standard_normal((n, n_out), dtype=np.float32)
    y = np.empty((n, n_out), np.float32)
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    dz = np.empty_like(y)

    def forward():
        gf.ops.dense_forward(x, w, b, y, activation="relu")

    def both():
        forward()
        gf.ops.dense_backward(dy, x, w, dx, dw, db, activation="relu", y=y, dz=dz)

    def twin(fn):
        def run():
            with gf.use_backend("numpy"):
                fn()

        return run

    def gemm():
        gf.ops.matmul(x, w, y)

    dims = {"N": n, "IN": n_in, "OUT": n_out}
    flops = float(KERNELS["dense_forward"].flops(dims))
    name = f"dense+relu {n}x{n_in}x{n_out}"
    fwd = Case(name, "dense", "forward", "GFLOP/s", flops, {"gradfuse": forward, "numpy": twin(forward)})
    fb = Case(
        name,
        "dense",
        "forward+backward",
        "GFLOP/s",
        flops + KERNELS["dense_backward"].flops(dims),
        {"gradfuse": both, "numpy": twin(both)},
        target="torch >= 1x",
    )
    mm = Case(
        f"gemm {n}x{n_in}x{n_out}",
        "gemm",
        "C = A @ B",
        "GFLOP/s",
        float(KERNELS["matmul"].flops({"M": n, "K": n_in, "N": n_out})),
        {"gradfuse": gemm, "numpy": lambda: np.matmul(x, w, out=y)},
        target=">= 0.9x best peer",
    )
    if torch is not None:
        tx, tdy, tw = torch.from_numpy(x), torch.from_numpy(dy), torch.from_numpy(w)
        lin = torch.nn.Linear(n_in, n_out)
        with torch.no_grad():
            lin.weight.copy_(tw.T)
            lin.bias.copy_(torch.from_numpy(b))

        def t_forward():
            with torch.no_grad():
                torch.relu(lin(tx))

        tx_grad = tx.clone().requires_grad_(True)

        def t_both():
            tx_grad.grad = lin.weight.grad = lin.bias.grad = None
            torch.relu(lin(tx_grad)).backward(tdy)

        fwd.impls["torch"], fb.impls["torch"] = t_forward, t_both
        mm.impls["torch"] = lambda: torch.mm(tx, tw)
    return [fwd, fb, mm]


def _with_bf16_path(path: str, fn):
    """fn with the bf16 GEMMs on `path` ("onednn" or "fallback"), the default path restored after."""

    def run():
        saved = _core._get_gemm_bf16()
        _core._set_gemm_bf16(path)
        try:
            fn()
        finally:
            _core._set_gemm_bf16(saved)

    return run


def _bf16_path_variants(fn) -> dict:
    """The bf16 GEMM path gradfuse does NOT use by default, as an extra column (both paths measured)."""
    if not _core._build_info()["onednn"]:
        return {}
    other = "fallback" if _core._get_gemm_bf16() == "onednn" else "onednn"
    return {f"gradfuse-{other}": _with_bf16_path(other, fn)}


def bf16_dense_cases(shape, torch, rng, gemm_row: bool = True) -> list[Case]:
    """bf16 rows (issue 12): dense + ReLU forward+backward with bf16 activations and weights and
    float32 bias and weight gradients, against torch autocast bf16 (float32 master weights, as a torch
    user trains); and C = A @ B with bf16 A, B and a float32 C, against torch.mm in bf16 and oneDNN's
    own matmul (one call, its own threading: the _onednn_matmul probe). gradfuse runs on its default bf16
    GEMM path (gf.config()["gemm_bf16"]); gradfuse-<other> is the other path."""
    import ml_dtypes

    bf16 = ml_dtypes.bfloat16
    n, n_in, n_out = shape
    x32 = rng.standard_normal((n, n_in), dtype=np.float32)
    w32 = (rng.standard_normal((n_in, n_out), dtype=np.float32) / np.sqrt(n_in)).astype(np.float32)
    b = rng.standard_normal(n_out, dtype=np.float32)
    dy32 = rng.standard_normal((n, n_out), dtype=np.float32)
    x, w, dy = x32.astype(bf16), w32.astype(bf16), dy32.astype(bf16)
    y, dz, dx = np.empty((n, n_out), bf16), np.empty((n, n_out), bf16), np.empty_like(x)
    dw, db, c = np.empty_like(w32), np.empty_like(b), np.empty((n, n_out), np.float32)

    def both():
        gf.ops.dense_forward(x, w, b, y, activation="relu")
        gf.ops.dense_backward(dy, x, w, dx, dw, db, activation="relu", y=y, dz=dz)

    def gemm():
        gf.ops.matmul(x, w, c)

    def twin(fn):  # the NumPy twins in bf16: widen, the float32 math, round once
        def run():
            with gf.use_backend("numpy"):
                fn()

        return run

    dims = {"N": n, "IN": n_in, "OUT": n_out}
    flops = float(KERNELS["dense_forward"].flops(dims))
    fb = Case(
        f"dense+relu bf16 {n}x{n_in}x{n_out}",
        "dense bf16",
        "forward+backward",
        "GFLOP/s",
        flops + KERNELS["dense_backward"].flops(dims),
        {"gradfuse": both, "numpy": twin(both), **_bf16_path_variants(both)},
        target="torch >= 1x",
        bf16=True,
    )
    mm = Case(
        f"gemm bf16 {n}x{n_in}x{n_out}",
        "gemm bf16",
        "C = A @ B",
        "GFLOP/s",
        flops,
        {"gradfuse": gemm, "numpy": twin(gemm), **_bf16_path_variants(gemm)},
        target="onednn >= 0.9x, torch >= 1.2x",
        bf16=True,
    )
    if _core._build_info()["onednn"]:
        mm.impls["onednn"] = lambda: _core._onednn_matmul(x, w, c)
    if torch is not None:
        tx, tdy = torch.from_numpy(x32), torch.from_numpy(dy32)
        lin = torch.nn.Linear(n_in, n_out)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w32).T)
            lin.bias.copy_(torch.from_numpy(b))
        tx_grad = tx.clone().requires_grad_(True)

        def t_both():
            tx_grad.grad = lin.weight.grad = lin.bias.grad = None
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = torch.relu(lin(tx_grad))
            out.backward(tdy)

        tx_b, tw_b = tx.to(torch.bfloat16), torch.from_numpy(w32).to(torch.bfloat16)
        fb.impls["torch"] = t_both
        mm.impls["torch"] = lambda: torch.mm(tx_b, tw_b)
    return [fb, mm] if gemm_row else [fb]


def call_overhead_cases(torch) -> list[Case]:
    """The fixed cost of a call: a 16x16x16 bf16 matmul through gf.ops.matmul (the table's checks,
    the tiling, the GEMM path) against oneDNN's own matmul called directly and torch.mm bf16."""
    import ml_dtypes

    a = np.ones((16, 16), ml_dtypes.bfloat16)
    c = np.empty((16, 16), np.float32)
    case = Case(
        "gemm bf16 16x16x16 (call overhead)",
        "gemm bf16",
        "C = A @ B",
        "GFLOP/s",
        2.0 * 16**3,
        {
            "gradfuse": lambda: gf.ops.matmul(a, a, c),
            "gradfuse-core": lambda: _core.matmul(a, a, c),
            "numpy": lambda: gf.ops.matmul.numpy(a, a, c),
        },
        bf16=True,
    )
    if _core._build_info()["onednn"]:
        case.impls["onednn"] = lambda: _core._onednn_matmul(a, a, c)
    if torch is not None:
        t = torch.ones((16, 16), dtype=torch.bfloat16)
        case.impls["torch"] = lambda: torch.mm(t, t)
    return [case]


def _layer_case(name, unit, work, layer, x, dy, kernels) -> Case:
    """A layer's forward+backward (fresh outputs each call, dropped at once as in a training step)
    against its kernels alone, and against itself on NumPy's allocator."""

    def call():
        layer.forward(x, training=True)
        layer.backward(dy, need_input_grad=True)

    def numpy_alloc():
        with memory._switched(False):
            call()

    impls = {"gradfuse": call, "kernels": kernels, "numpy-alloc": numpy_alloc}
    return Case(f"layer {name}", "layer", "forward+backward", unit, work, impls, target="kernels <= 1.2x")


def layer_dropout_case(n, rng) -> Case:
    """gf.nn.Dropout(0.5) against dropout_forward + dropout_backward."""
    x, dy = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
    y, dx, mask = np.empty_like(x), np.empty_like(x), np.empty(gf.ops.dropout_mask_bytes(n), np.uint8)
    counter = itertools.count()

    def kernels():
        gf.ops.dropout_forward(x, y, mask, p=0.5, seed=1234, counter=next(counter))
        gf.ops.dropout_backward(dy, mask, dx, p=0.5)

    work = (KERNELS["dropout_forward"].bytes_per_element() + KERNELS["dropout_backward"].bytes_per_element()) * n
    layer = gf.nn.Dropout(0.5, seed=1234)
    return _layer_case(f"Dropout p=0.5, {n / 2**20:g}M", "GB/s", work, layer, x, dy, kernels)


def layer_batchnorm_case(shape, rng) -> Case:
    """gf.nn.BatchNorm in training against batchnorm_forward + batchnorm_backward."""
    c = shape[1]
    x, dy = rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32)
    layer = gf.nn.BatchNorm(c)
    w, b, rm, rv = layer.weight.data.copy(), layer.bias.data.copy(), np.zeros(c, np.float32), np.ones(c, np.float32)
    y, dx = np.empty_like(x), np.empty_like(x)
    sm, si, dw, db = (np.empty(c, np.float32) for _ in range(4))

    def kernels():
        gf.ops.batchnorm_forward(x, w, b, rm, rv, y, sm, si, training=True, momentum=0.1, eps=1e-5)
        gf.ops.batchnorm_backward(dy, x, w, sm, si, dx, dw, db, training=True)

    per_element = KERNELS["batchnorm_forward"].bytes_per_element() + KERNELS["batchnorm_backward"].bytes_per_element()
    return _layer_case(f"BatchNorm {shape}", "GB/s", per_element * x.size, layer, x, dy, kernels)


def layer_dense_case(shape, rng) -> Case:
    """gf.nn.Dense(activation="relu") against dense_forward + dense_backward (dx included)."""
    n, n_in, n_out = shape
    x = rng.standard_normal((n, n_in), dtype=np.float32)
    dy = rng.standard_normal((n, n_out), dtype=np.float32)
    layer = gf.nn.Dense(n_in, n_out, activation="relu", seed=0)
    w, b = layer.weight.data.copy(), layer.bias.data.copy()
    y, dz = np.empty((n, n_out), np.float32), np.empty((n, n_out), np.float32)
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)

    def kernels():
        gf.ops.dense_forward(x, w, b, y, activation="relu")
        gf.ops.dense_backward(dy, x, w, dx, dw, db, activation="relu", y=y, dz=dz)

    dims = {"N": n, "IN": n_in, "OUT": n_out}
    flops = float(KERNELS["dense_forward"].flops(dims) + KERNELS["dense_backward"].flops(dims))
    return _layer_case(f"Dense relu {n}x{n_in}x{n_out}", "GFLOP/s", flops, layer, x, dy, kernels)


# ---- machine limits -------------------------------------------------------------------------------------
def machine_limits(quick: bool) -> dict:
    """Read-modify-write bandwidth (_touch on p, g: 12 B/element) and FMA peak, measured here."""
    n = 2**20 if quick else 16 * 2**20
    p, g = np.ones(n, np.float32), np.ones(n, np.float32)
    m = H.measure_interleaved(
        {"touch": lambda: _core._touch(p, g)}, repeats=5 if quick else 9, warmup=3, min_sample_s=0.02
    )
    rmw = 12 * n / m.timings["touch"].median / 1e9
    threads = gf.get_num_threads()
    best = {}
    for t in sorted({1, threads}):
        rates = []
        for _ in range(3 if quick else 7):
            seconds, flops = _core._fma_peak(200_000 if quick else 2_000_000, t)
            rates.append(flops / seconds / 1e9)
        best[t] = max(rates)
    return {
        "rmw_gb_per_s": rmw,
        "fma_gflops_1_thread": best[1],
        "fma_gflops_all": best[threads],
        "threads": threads,
        **bf16_peak(quick, threads),
    }


def bf16_peak(quick: bool, threads: int) -> dict:
    """The bf16 units' peak, where the CPU has them (AMX-BF16, else AVX512-BF16) and oneDNN loaded:
    the best rate of oneDNN's own bf16 matmul on a square shape whose operands stay in the caches
    (its AMX or VDPBF16PS kernels at full speed), all threads. gradfuse issues no tile instructions
    itself, so oneDNN's best kernel is the probe. None, with the reason, elsewhere: there the bf16
    rows run on the fp32 units and their limit is the FMA peak."""
    features = _core._build_info()["cpu_features"]
    unit = "AMX-BF16" if features["amx_bf16"] else "AVX512-BF16" if features["avx512_bf16"] else None
    if unit is None or not _core._build_info()["onednn"]:
        why = "no AMX-BF16 or AVX512-BF16 on this CPU" if unit is None else "oneDNN is not loaded"
        return {"bf16_peak_gflops": None, "bf16_peak": f"not measured: {why}"}
    import ml_dtypes

    k = 512 if quick else 1024
    a = np.ones((k, k), ml_dtypes.bfloat16)
    c = np.empty((k, k), np.float32)
    isa = _core._onednn_matmul(a, a, c, threads)  # warm-up, and the kernel oneDNN picked
    m = H.measure_interleaved(
        {"peak": lambda: _core._onednn_matmul(a, a, c, threads)}, repeats=3 if quick else 9, warmup=2
    )
    rate = 2.0 * k**3 / m.timings["peak"].min / 1e9  # the best sample: a peak
    return {"bf16_peak_gflops": rate, "bf16_peak": f"{unit}: oneDNN bf16 matmul {k}^3 ({isa})"}


def _page_faults(fn, calls: int = 5) -> float:
    """Minor page faults per call of fn (after two calls of warm-up): what fresh memory costs."""
    fn(), fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


# ---- running and reporting ------------------------------------------------------------------------------
def run(args, limits: dict | None = None) -> dict:
    """limits: machine_limits() measured by the caller (the whole suite measures them once)."""
    torch, torch_missing = H.import_torch(args.no_torch)
    H.set_threads(args.threads, torch)
    if torch is not None and args.threads is None:
        torch.set_num_threads(gf.get_num_threads())
    quick = args.quick
    repeats = args.repeats or (3 if quick else 7)
    rng = np.random.default_rng(0)
    limits = limits or machine_limits(quick)
    dropout_n = DROPOUT_N_QUICK if quick else DROPOUT_N
    bn_shapes = BN_SHAPES_QUICK if quick else BN_SHAPES
    dense_shapes = DENSE_SHAPES_QUICK if quick else DENSE_SHAPES
    bf16 = getattr(args, "bf16", True)
    builders = (  # (the kinds of rows it gives, the builder)
        [({"batchnorm"}, lambda s=s: batchnorm_cases(s, torch, rng)) for s in bn_shapes]
        + [({"dropout"}, lambda: dropout_cases(dropout_n, torch, rng))]
        + [
            ({"batchnorm"}, lambda s=s: batchnorm_cases(s, torch, rng, bf16=True))
            for s in (BN_SHAPES_BF16_QUICK if quick else BN_SHAPES_BF16)
            if bf16
        ]
        + ([({"dropout"}, lambda: dropout_cases(dropout_n, torch, rng, bf16=True))] if bf16 else [])
        + [({"dense", "gemm"}, lambda s=s: dense_cases(s, torch, rng)) for s in dense_shapes]
        + [({"loss"}, lambda: loss_cases(LOSS_SHAPE_QUICK if quick else LOSS_SHAPE, torch, rng))]
        + [({"clip"}, lambda: clip_cases(CLIP_N_QUICK if quick else CLIP_N, torch, rng))]
        + [({"dense bf16", "gemm bf16"}, lambda s=s: bf16_dense_cases(s, torch, rng)) for s in dense_shapes if bf16]
        + ([({"gemm bf16"}, lambda: call_overhead_cases(torch))] if bf16 else [])
        + [({"layer"}, lambda: [layer_dropout_case(dropout_n, rng)])]
        + [({"layer"}, lambda s=s: [layer_batchnorm_case(s, rng)]) for s in bn_shapes]
        + [({"layer"}, lambda s=s: [layer_dense_case(s, rng)]) for s in dense_shapes]
    )
    only = set(getattr(args, "only", None) or ())
    rows = []
    for kinds, build in builders:
        if only and not kinds & only:
            continue
        for case in build():
            if only and case.kind not in only:
                continue
            m = H.measure_interleaved(
                case.impls,
                repeats=repeats,
                warmup=2,
                min_sample_s=0.0 if quick else 0.05,
                sleep_s=args.sleep_ms / 1e3,
                required=("gradfuse",),
            )
            row = {
                "workload": case.workload,
                "kind": case.kind,
                "pass": case.passes,
                "unit": case.unit,
                "work": case.work,
                "target": case.target,
                "cells": {},
                "errors": m.errors,
            }
            for name, timing in m.timings.items():
                cell = timing.as_ms()
                cell["rate"] = case.work / timing.median / 1e9
                row["cells"][name] = cell
            g = row["cells"]["gradfuse"]
            limit = limits["rmw_gb_per_s"] if case.unit == "GB/s" else limits["fma_gflops_all"]
            row["limit_name"] = "read-modify-write bandwidth" if case.unit == "GB/s" else "FMA peak, all threads"
            if case.bf16 and limits.get("bf16_peak_gflops"):
                limit, row["limit_name"] = limits["bf16_peak_gflops"], f"bf16 peak ({limits['bf16_peak']})"
            row["limit"] = limit
            g["frac_of_limit"] = g["rate"] / limit
            row["speedup_vs"] = {k: v["ms"] / g["ms"] for k, v in row["cells"].items() if k != "gradfuse"}
            if case.kind == "layer":  # a count that a busy machine does not blur, unlike the times
                row["page_faults_per_call"] = {name: _page_faults(fn) for name, fn in case.impls.items()}
            rows.append(row)
        gc.collect()
    return {
        "suite": "layers",
        "machine": H.machine_info(torch, torch_missing),
        "limits": limits,
        "settings": {
            "quick": quick,
            "repeats": repeats,
            "sleep_ms": args.sleep_ms,
            "OPENBLAS_THREAD_TIMEOUT": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
        },
        "rows": rows,
    }


def _target_met(row) -> str:
    cells, target = row["cells"], row["target"]
    if not target:
        return ""
    g = cells["gradfuse"]["ms"]
    if target == "kernels <= 1.2x":
        if "kernels" not in cells:
            return ""
        ratio = g / cells["kernels"]["ms"]
        return f"{ratio:.2f}x kernels (need <= 1.2x): {'met' if ratio <= 1.2 else 'NOT met'}"
    if target == ">= 0.9x best peer":
        peers = [c["rate"] for k, c in cells.items() if k != "gradfuse"]
        if not peers:
            return ""
        ratio = cells["gradfuse"]["rate"] / max(peers)
        return f"{ratio:.2f}x best: {'met' if ratio >= 0.9 else 'NOT met'}"
    out = []
    for part in target.split(","):  # "peer >= Nx": the peer's time / gradfuse's
        peer, need = part.split(">=")
        peer, need = peer.strip(), float(need.strip().rstrip("x"))
        if peer in cells:
            ratio = cells[peer]["ms"] / g
            out.append(f"{ratio:.2f}x vs {peer} (need {need:g}x): {'met' if ratio >= need else 'NOT met'}")
    return "; ".join(out)


def report(result) -> str:
    lim = result["limits"]
    head = [
        f"limits measured here: read-modify-write {lim['rmw_gb_per_s']:.1f} GB/s ({lim['threads']} threads); "
        f"FMA peak {lim['fma_gflops_1_thread']:.0f} GFLOP/s on 1 thread, {lim['fma_gflops_all']:.0f} on "
        f"{lim['threads']}; bf16 peak: "
        + (
            f"{lim['bf16_peak_gflops']:.0f} GFLOP/s ({lim['bf16_peak']})"
            if lim.get("bf16_peak_gflops")
            else str(lim.get("bf16_peak"))
        ),
        f"median of {result['settings']['repeats']} interleaved repeats; (x) = that time / gradfuse's; "
        f"OPENBLAS_THREAD_TIMEOUT={result['settings']['OPENBLAS_THREAD_TIMEOUT']} (numpy's BLAS threads sleep "
        "after each call instead of spinning)",
        "",
    ]
    extra = sorted({k for r in result["rows"] for k in r["cells"]} - {"gradfuse", "numpy", "torch"})
    headers = ["workload", "pass", "gradfuse ms", "rate", "of limit", "numpy ms (x)", "torch ms (x)"]
    headers += [f"{k} ms (x)" for k in extra] + ["target"]
    rows = []
    for r in result["rows"]:
        if r["kind"] == "layer":
            continue
        g = r["cells"]["gradfuse"]
        cells = [
            r["workload"],
            r["pass"],
            f"{g['ms']:.3g}",
            f"{g['rate']:.3g} {r['unit']}",
            f"{100 * g['frac_of_limit']:.0f}%",
        ]
        for peer in ("numpy", "torch", *extra):
            c = r["cells"].get(peer)
            cells.append(f"{c['ms']:.3g} ({c['ms'] / g['ms']:.3g}x)" if c else "-")
        cells.append(_target_met(r))
        rows.append(cells)
    text = "\n".join(head) + (H.format_table(headers, rows, right=set(range(2, len(headers) - 1))) if rows else "")
    layers = [r for r in result["rows"] if r["kind"] == "layer"]
    if layers:
        headers = ["layer (forward+backward)", "layer ms", "rate", "kernels ms", "numpy-alloc ms", "faults", "target"]
        rows = []
        for r in layers:
            g, k, a = (r["cells"].get(name) for name in ("gradfuse", "kernels", "numpy-alloc"))
            rows.append(
                [
                    r["workload"].removeprefix("layer "),
                    f"{g['ms']:.3g}",
                    f"{g['rate']:.3g} {r['unit']}",
                    f"{k['ms']:.3g}" if k else "-",
                    f"{a['ms']:.3g} ({a['ms'] / k['ms']:.2f}x kernels)" if a and k else "-",
                    " / ".join(f"{r['page_faults_per_call'].get(name, 0):.0f}" for name in ("gradfuse", "numpy-alloc")),
                    _target_met(r),
                ]
            )
        text += (
            "\n\nA layer call against its kernels alone (preallocated outputs), and the layer on NumPy's own "
            "allocator (gf.memory off); faults: minor page faults per call, layer / numpy-alloc:\n"
            + H.format_table(headers, rows, right={1, 2, 3, 4, 5})
        )
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n", 2)[2]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--quick", action="store_true", help="small shapes, 3 repeats (smoke test, seconds)")
    parser.add_argument("--repeats", type=int, default=None, metavar="N", help="timed repeats (default 7; quick 3)")
    parser.add_argument("--out", metavar="DIR", help="write DIR/layers.json (the table is always printed)")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="threads for gradfuse and torch")
    parser.add_argument("--no-torch", action="store_true", help="leave out the torch columns")
    parser.add_argument(
        "--no-bf16", dest="bf16", action="store_false", help="leave out the bf16 rows (GEMM, dense, call overhead)"
    )
    parser.add_argument(
        "--only",
        type=lambda text: text.split(","),
        metavar="KINDS",
        help="run only these kinds of rows (comma-separated): batchnorm, dropout, dense, gemm, loss, clip, "
        "dense bf16, gemm bf16, layer",
    )
    parser.add_argument(
        "--sleep-ms", type=float, default=2.0, metavar="MS", help="pause before each timed sample (default 2)"
    )
    parser.set_defaults(func=main)


def main(args) -> int:
    return H.run_suite("layers", args, run, report)
