"""python -m gradfuse demo: train an MLP on scikit-learn's bundled digits (no download).

    pip install ".[demo]" && python -m gradfuse demo [--backend numpy] [--out curves.png]

8x8 images of the digits 0-9 (1797 samples, 64 features; 70/10/20 train/validation/test),
standardized by the model's first layer with statistics of the training set only (saved with the
model); an MLP 64-512-256-10 with batch norm, ReLU and dropout 0.2; cross-entropy with label
smoothing 0.1; Adam (weight decay 5e-4 on the weights only) with a 5-epoch linear warmup in front of
a cosine decay, stepped per batch; early stopping on the validation loss (patience 30), restoring
the best weights. Over 12 seeds the test accuracy was 97.8-99.4% (mean 98.7%). Prints the test
accuracy and writes the loss / accuracy / learning-rate curves as a PNG. `--backend numpy` runs the
same code on the NumPy twins.

Any --epochs from 0 works: a run shorter than 10 epochs warms up for half of its steps. The folder
of --out is created when it is missing, before training; one that cannot be made or written is
reported at once (exit status 2).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from . import losses, nn, optim, train
from ._backend import use_backend
from .data import load_digits_split
from .viz import plot_history

HELP = "train an MLP on scikit-learn's digits (cpp or numpy backend), print test accuracy, plot curves"


def build_model(seed: int, x_train):
    """The MLP; its first layer standardizes with statistics of x_train (saved with the model)."""
    return nn.Sequential(
        [
            nn.Standardize("zscore").adapt(x_train),
            nn.Dense(64, 512, init="he_normal", seed=seed),
            nn.BatchNorm(512),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Dense(512, 256, init="he_normal", seed=seed + 1),
            nn.BatchNorm(256),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Dense(256, 10, init="glorot_uniform", seed=seed + 2),
        ],
        seed=seed,
    )


def prepare_out(out: str) -> None:
    """Create the folder of the PNG `out` when it is missing and check that it can be written: run
    before training, so that a bad path is not found only after it. Raises OSError."""
    if os.path.isdir(out):
        raise IsADirectoryError(f"{out} is a folder; give a file name such as {os.path.join(out, 'curves.png')}")
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"the folder {folder} is not writable")


def run(
    backend: str = "cpp",
    epochs: int = 100,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    out: str | None = "gradfuse-demo.png",
    verbose: int = 1,
) -> dict:
    if out:
        prepare_out(out)
    x_train, y_train, x_val, y_val, x_test, y_test = load_digits_split(seed)
    with use_backend(backend):
        model = build_model(seed, x_train)
        opt = optim.Adam(model.parameter_groups(weight_decay=5e-4), lr=lr)
        steps_per_epoch = -(-len(x_train) // batch_size)
        steps = epochs * steps_per_epoch
        warmup = min(5 * steps_per_epoch, steps // 2)  # 5 epochs; half of a run shorter than 10
        decay = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps - warmup, 1), eta_min=lr * 1e-3)
        schedule = optim.lr_scheduler.warmup(decay, warmup, start_factor=0.05)
        stopper = train.EarlyStopping(monitor="val_loss", patience=30, restore_best_weights=True)
        loss = losses.CrossEntropyLoss(label_smoothing=0.1)
        start = time.perf_counter()
        history = train.fit(
            model,
            loss,
            opt,
            x_train,
            y_train,
            epochs=epochs,
            batch_size=batch_size,
            validation_data=(x_val, y_val),
            schedule=schedule,
            schedule_per="batch",
            callbacks=[stopper],
            seed=seed,
            verbose=verbose,
        )
        seconds = time.perf_counter() - start
        test = train.evaluate(model, "cross_entropy", x_test, y_test)
    result = {
        "backend": backend,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "epochs_run": len(history.epoch),
        "best_epoch": stopper.best_epoch,
        "seconds": seconds,
        "history": history,
        "model": model,
    }
    if out and history.epoch:  # 0 epochs: no curves
        plot_history(
            history, out, title=f"gradfuse demo: digits MLP ({backend} backend), test accuracy {test['accuracy']:.2%}"
        )
        result["plot"] = out
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--backend", choices=("cpp", "numpy"), default="cpp", help="kernels to run on (default cpp)")
    parser.add_argument("--epochs", type=int, default=100, help="at most this many epochs (early stopping)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default="gradfuse-demo.png", help="PNG of the curves ('' to skip); a missing folder is created"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=main)


def main(args) -> int:
    try:
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as exc:
        print(f'the demo needs scikit-learn and matplotlib: pip install ".[demo]" ({exc})', file=sys.stderr)
        return 2
    if args.epochs < 0:
        print(f"demo: --epochs must be 0 or more, got {args.epochs}", file=sys.stderr)
        return 2
    if args.out:
        try:
            prepare_out(args.out)
        except OSError as exc:
            print(f"demo: cannot write --out {args.out}: {exc}", file=sys.stderr)
            return 2
    result = run(
        backend=args.backend, epochs=args.epochs, seed=args.seed, out=args.out or None, verbose=0 if args.quiet else 1
    )
    model = result["model"]
    print(model.summary())
    restored = (
        ""
        if result["best_epoch"] is None
        else f" (the weights of epoch {result['best_epoch'] + 1}, the best validation loss, restored)"
    )
    print(f"backend {result['backend']}: {result['epochs_run']} epochs in {result['seconds']:.1f} s{restored}")
    print(f"test accuracy: {result['test_accuracy']:.2%} (test loss {result['test_loss']:.4f})")
    if "plot" in result:
        print(f"wrote {result['plot']}")
    elif args.out:
        print("no epochs were run: no curves to plot")
    return 0
