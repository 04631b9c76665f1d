"""The gradfuse command line.

    python -m gradfuse config                  # the build and runtime configuration (gf.show_config())
    python -m gradfuse bench optim [options]   # the optimizer benchmark (see: bench optim --help)
    python -m gradfuse bench layers [options]  # batch norm, dropout, dense layers, GEMM

Commands are argparse sub-commands: a new one is a parser added in build_parser() whose `func`
takes the parsed arguments and returns the exit code.
"""
from __future__ import annotations

import argparse
import sys


def _config(args) -> int:
    import gradfuse as gf
    gf.show_config()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gradfuse",
                                     description="gradfuse: fused SIMD + OpenMP CPU kernels for training "
                                                 "neural networks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    config = commands.add_parser("config", help="print the build and runtime configuration")
    config.set_defaults(func=_config)
    bench = commands.add_parser("bench", help="run a benchmark suite (optim, layers)",
                                description="Benchmark suites: each runs its implementations interleaved "
                                            "in one process and reports medians.")
    from .bench import add_subcommands
    add_subcommands(bench)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
