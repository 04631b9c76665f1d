"""gradfuse's benchmark suites, run from the command line:

    python -m gradfuse bench [--quick | --full | --smoke] [--out DIR] [--peers ...] [--peer-python PYTHON]
                                                # every part, one report, charts (suite.py)
    python -m gradfuse bench optim [--quick | --full] [--repeats N] [--out DIR] [--threads N] [--no-torch]
    python -m gradfuse bench layers [--quick] [--repeats N] [--out DIR] [--threads N] [--no-torch]
    python -m gradfuse bench train [--quick] [--repeats N] [--out DIR] [--threads N] [--no-torch]
    python -m gradfuse bench mnist [--epochs N] [--seeds N] [--quick] [--out DIR] [--threads N] [--no-torch]
    python -m gradfuse bench shaped [--quick] [--repeats N] [--history N] [--out DIR] [--threads N] [--no-torch]
    python -m gradfuse bench sklearn [--epochs N] [--seeds N] [--quick] [--out DIR] [--threads N]
    python -m gradfuse bench torch [--quick] [--repeats N] [--out DIR] [--threads N] [--no-deepspeed]

Each suite is a module with HELP (one line), add_arguments(parser) and main(args) -> exit code;
SUITES names them, so `python -m gradfuse bench <name>` finds them. The shared timing rules (one
process, interleaved, medians; never asserted in tests) live in _harness.py.
"""

from __future__ import annotations

import argparse

from . import layers, mnist, optim, shaped, sklearn_mlp, suite, torchfront, train

# name -> module (the suites import torch only when they run)
SUITES = {
    "optim": optim,
    "layers": layers,
    "train": train,
    "mnist": mnist,
    "shaped": shaped,
    "sklearn": sklearn_mlp,
    "torch": torchfront,
}


def add_subcommands(parser: argparse.ArgumentParser) -> None:
    """Add one sub-command per suite to the `bench` parser; without one, `bench` runs them all."""
    suite.add_arguments(parser)
    sub = parser.add_subparsers(dest="suite", metavar="SUITE")
    for name, module in SUITES.items():
        module.add_arguments(sub.add_parser(name, help=module.HELP))
