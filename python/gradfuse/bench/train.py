"""bench train: one training step of an MLP, gradfuse against its NumPy backend and torch eager.

    python -m gradfuse bench train [--quick] [--repeats N] [--out DIR] [--threads N] [--no-torch]

The model (the training issue's): 784-1024-1024-10, each hidden layer Dense -> BatchNorm -> ReLU
-> Dropout(0.5), softmax cross-entropy, Adam, batch 256, float32. A step is forward, loss,
backward and the optimizer step. The implementations run in this process, interleaved, medians of
the repeats; torch is the same model in eager mode (its default Adam, and fused=True), and with the
one line a torch user adds for bf16 (torch.autocast("cpu", dtype=torch.bfloat16)); gradfuse-bf16
is the same model with precision="bf16" (issue 12's target: >= 2x torch autocast bf16).

Where the time goes: gradfuse steps are also run with each layer's forward/backward, the loss and
the optimizer step timed separately (GEMM = the Dense layers, then batch norm, ReLU, dropout, the
loss kernel, the optimizer); "Python and the rest" is the step time minus those.
Targets (the training issue): at least 2x faster than torch, at least 10x faster than the NumPy
backend.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

import numpy as np

import gradfuse as gf
from . import _harness as H

HELP = "one MLP training step (784-1024-1024-10, BN, ReLU, Dropout, Adam, batch 256) vs NumPy backend and torch"

FULL = dict(sizes=(784, 1024, 1024, 10), batch=256)
QUICK = dict(sizes=(64, 128, 128, 10), batch=64)


def build_gradfuse(sizes, seed=0):
    nn = gf.nn
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        layers.append(nn.Dense(a, b, init="he_normal" if not last else "glorot_uniform", seed=seed + i))
        if not last:
            layers += [nn.BatchNorm(b), nn.ReLU(), nn.Dropout(0.5)]
    return nn.Sequential(layers, seed=seed)


def gradfuse_step(model, opt, loss_fn):
    def step(x, y):
        out = model.forward(x, training=True)
        _, dout = loss_fn(out, y)
        model.backward(dout)
        opt.step()

    return step


def build_torch(torch, model):
    """The same network in torch (weights copied from the gradfuse model)."""
    mods = []
    for layer in model.layers:
        if isinstance(layer, gf.nn.Dense):
            lin = torch.nn.Linear(layer.in_features, layer.out_features)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(layer.weight.data.T.copy()))
                lin.bias.copy_(torch.from_numpy(layer.bias.data.copy()))
            mods.append(lin)
        elif isinstance(layer, gf.nn.BatchNorm):
            mods.append(torch.nn.BatchNorm1d(layer.num_features))
        elif isinstance(layer, gf.nn.ReLU):
            mods.append(torch.nn.ReLU())
        elif isinstance(layer, gf.nn.Dropout):
            mods.append(torch.nn.Dropout(layer.p))
    return torch.nn.Sequential(*mods)


def torch_step(torch, tmodel, topt, autocast: bool = False):
    """One torch step; autocast: the one line a torch user adds for bf16 on a CPU
    (torch.autocast("cpu", dtype=torch.bfloat16) around the forward and the loss)."""

    def step(x, y):
        topt.zero_grad(set_to_none=True)
        if autocast:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(tmodel(x), y)
        else:
            loss = torch.nn.functional.cross_entropy(tmodel(x), y)
        loss.backward()
        topt.step()

    return step


class _Timed:
    """Wraps callables and accumulates their wall time per category."""

    def __init__(self):
        self.seconds = defaultdict(float)

    def wrap(self, category, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[category] += time.perf_counter() - t0

        return timed


def breakdown(model, opt, loss_fn, x, y, steps: int) -> dict:
    """Milliseconds per step by component, from `steps` instrumented steps."""
    timer = _Timed()
    categories = {
        gf.nn.Dense: "GEMM (dense layers)",
        gf.nn.BatchNorm: "batch norm",
        gf.nn.ReLU: "ReLU",
        gf.nn.Dropout: "dropout",
    }
    saved = []
    for layer in model.layers:
        cat = categories.get(type(layer), type(layer).__name__)
        saved.append((layer, layer.forward, layer.backward))
        layer.forward = timer.wrap(cat, layer.forward)
        layer.backward = timer.wrap(cat, layer.backward)
    timed_loss = timer.wrap("loss (softmax cross-entropy)", loss_fn)
    timed_opt = timer.wrap("optimizer (Adam)", opt.step)
    total = 0.0
    try:
        for _ in range(steps):
            t0 = time.perf_counter()
            out = model.forward(x, training=True)
            _, dout = timed_loss(out, y)
            model.backward(dout)
            timed_opt()
            total += time.perf_counter() - t0
    finally:
        for layer, fwd, bwd in saved:
            layer.forward, layer.backward = fwd, bwd
    parts = {k: v / steps * 1e3 for k, v in timer.seconds.items()}
    parts["Python and the rest"] = total / steps * 1e3 - sum(parts.values())
    parts["total"] = total / steps * 1e3
    return parts


def run(args) -> dict:
    torch, torch_missing = H.import_torch(args.no_torch)
    H.set_threads(args.threads, torch)
    if torch is not None and args.threads is None:
        torch.set_num_threads(gf.get_num_threads())
    cfg = QUICK if args.quick else FULL
    sizes, batch = cfg["sizes"], cfg["batch"]
    repeats = args.repeats or (3 if args.quick else 9)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], batch)
    loss_fn = gf.losses.CrossEntropyLoss()

    models = {}
    impls = {}
    model = build_gradfuse(sizes)
    opt = gf.optim.Adam(model.parameters(), lr=1e-4)
    impls["gradfuse"] = lambda s=gradfuse_step(model, opt, loss_fn): s(x, y)
    bf16_model = build_gradfuse(sizes).set_precision("bf16")  # mixed precision: bf16 GEMMs and activations
    bf16_opt = gf.optim.Adam(bf16_model.parameters(), lr=1e-4)
    impls["gradfuse-bf16"] = lambda s=gradfuse_step(bf16_model, bf16_opt, loss_fn): s(x, y)
    np_model = build_gradfuse(sizes)
    np_opt = gf.optim.Adam(np_model.parameters(), lr=1e-4)
    np_step = gradfuse_step(np_model, np_opt, loss_fn)

    def numpy_backend():
        with gf.use_backend("numpy"):
            np_step(x, y)

    impls["numpy"] = numpy_backend
    if torch is not None:
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        for name, kwargs, autocast in (
            ("torch", {}, False),
            ("torch-fused-adam", {"fused": True}, False),
            ("torch-autocast-bf16", {"fused": True}, True),
        ):
            tmodel = build_torch(torch, model)
            try:
                topt = torch.optim.Adam(tmodel.parameters(), lr=1e-4, **kwargs)
            except (TypeError, RuntimeError, ValueError):
                continue
            models[name] = (tmodel, topt)
            impls[name] = lambda s=torch_step(torch, tmodel, topt, autocast): s(tx, ty)
    m = H.measure_interleaved(
        impls,
        repeats=repeats,
        warmup=3,
        min_sample_s=0.0 if args.quick else 0.1,
        sleep_s=args.sleep_ms / 1e3,
        required=("gradfuse",),
    )
    cells = {name: t.as_ms() for name, t in m.timings.items()}
    g = cells["gradfuse"]["ms"]
    speedup = {name: c["ms"] / g for name, c in cells.items() if name != "gradfuse"}
    parts = breakdown(model, opt, loss_fn, x, y, steps=5 if args.quick else 30)
    flops = 3 * 2 * batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) - 2 * batch * sizes[0] * sizes[1]
    return {
        "suite": "train",
        "machine": H.machine_info(torch, torch_missing),
        "settings": {
            "sizes": list(sizes),
            "batch": batch,
            "repeats": repeats,
            "quick": args.quick,
            "OPENBLAS_THREAD_TIMEOUT": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
        },
        "cells": cells,
        "speedup_vs": speedup,
        "breakdown_ms": parts,
        "errors": m.errors,
        "gemm_gflops_per_step": flops / 1e9,
    }


def report(result) -> str:
    s = result["settings"]
    cells, g = result["cells"], result["cells"]["gradfuse"]["ms"]
    lines = [
        f"MLP {'-'.join(map(str, s['sizes']))}, BatchNorm + ReLU + Dropout(0.5), Adam, batch {s['batch']}, "
        f"float32; median of {s['repeats']} interleaved repeats",
        "",
    ]
    rows = [[name, f"{c['ms']:.2f}", "1" if name == "gradfuse" else f"{c['ms'] / g:.2f}x"] for name, c in cells.items()]
    lines.append(H.format_table(["implementation", "ms per step", "gradfuse speedup"], rows, right={1, 2}))
    for peer, need in (("torch", 2.0), ("numpy", 10.0)):
        if peer in result["speedup_vs"]:
            got = result["speedup_vs"][peer]
            lines.append(f"target vs {peer}: {need:g}x, measured {got:.2f}x: {'met' if got >= need else 'NOT met'}")
    if "gradfuse-bf16" in cells and "torch-autocast-bf16" in cells:
        got = cells["torch-autocast-bf16"]["ms"] / cells["gradfuse-bf16"]["ms"]
        lines.append(
            f"target gradfuse-bf16 vs torch-autocast-bf16: 2x, measured {got:.2f}x: {'met' if got >= 2 else 'NOT met'}"
            f" (bf16 GEMM path: {gf.config()['gemm_bf16']})"
        )
    parts = result["breakdown_ms"]
    total = parts["total"]
    gemm_ms = parts.get("GEMM (dense layers)", 0)
    lines += [
        "",
        f"where a gradfuse step goes (instrumented, {total:.2f} ms per step; the dense layers do "
        f"{result['gemm_gflops_per_step']:.2f} GFLOP: {result['gemm_gflops_per_step'] / max(gemm_ms / 1e3, 1e-12):.0f} "
        "GFLOP/s in them):",
    ]
    rows = [[k, f"{v:.3f}", f"{100 * v / total:.0f}%"] for k, v in parts.items() if k != "total"]
    lines.append(H.format_table(["component", "ms", "share"], rows, right={1, 2}))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n", 2)[2]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--quick", action="store_true", help="a small MLP (64-128-128-10, batch 64): a smoke test")
    parser.add_argument("--repeats", type=int, default=None, metavar="N", help="timed repeats (default 9; quick 3)")
    parser.add_argument("--out", metavar="DIR", help="write DIR/train.json (the table is always printed)")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="threads for gradfuse and torch")
    parser.add_argument("--no-torch", action="store_true", help="leave out torch")
    parser.add_argument("--sleep-ms", type=float, default=2.0, metavar="MS", help="pause before each timed sample")
    parser.set_defaults(func=main)


def main(args) -> int:
    return H.run_suite("train", args, run, report)
