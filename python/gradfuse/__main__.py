"""The gradfuse command line.

    python -m gradfuse config                  # the build and runtime configuration (gf.show_config())
    python -m gradfuse demo [--backend numpy]  # train an MLP on scikit-learn's digits, plot the curves
    python -m gradfuse bench [options]         # every part, one report and charts (see: bench --help)
    python -m gradfuse bench optim [options]   # the optimizer benchmark (see: bench optim --help)
    python -m gradfuse bench layers [options]  # batch norm, dropout, dense layers, GEMM
    python -m gradfuse viz [--out DIR]         # optimizer paths on 2-D surfaces, schedules, fit curves (PNGs)
    python -m gradfuse tune [options]          # hyperparameter search on the digits (see: tune --help)

Commands are argparse sub-commands: a new one is a parser added in build_parser() whose `func`
takes the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import demo, tune, viz
from ._config import show_config
from .bench import add_subcommands, suite


def _config(args) -> int:
    show_config()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gradfuse", description="gradfuse: fused SIMD + OpenMP CPU kernels for training neural networks"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    config = commands.add_parser("config", help="print the build and runtime configuration")
    config.set_defaults(func=_config)
    demo.add_arguments(commands.add_parser("demo", help=demo.HELP))
    viz.add_arguments(commands.add_parser("viz", help=viz.HELP))
    tune.add_arguments(commands.add_parser("tune", help=tune.HELP))
    bench = commands.add_parser(
        "bench",
        help="run the benchmark (every part, or one: optim, layers, train)",
        description="Benchmark suites: each runs its implementations interleaved "
        "and reports medians. Without a suite name: every part, one "
        "report, charts.\n\n" + suite.__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_subcommands(bench)
    return parser


# NumPy's bundled OpenBLAS keeps its worker threads spinning for ~2^28 cycles (~0.1 s) after each
# call, taking the cores from whatever runs next: measured on 2 cores, a gradfuse GEMM right after
# numpy.matmul ran at 84 instead of 250 GFLOP/s, torch.mm at 43 instead of 244. With a timeout of
# 2^4 cycles they sleep at once, and numpy itself loses nothing (240 vs 234 GFLOP/s). OpenBLAS
# reads the variable when it loads, so a benchmark run sets it and starts afresh.
BENCH_ENV = {"OPENBLAS_THREAD_TIMEOUT": "4"}


def _bench_environment_ready(argv) -> bool:
    if not argv or argv[0] != "bench" or all(os.environ.get(k) == v for k, v in BENCH_ENV.items()):
        return True
    os.environ.update(BENCH_ENV)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "gradfuse", *argv])
    return False  # not reached


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if __name__ == "__main__":
        _bench_environment_ready(argv)
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
