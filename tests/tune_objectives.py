"""Objectives for tests/test_tune.py, in a module of their own: n_jobs > 1 runs trials in worker
processes, which import the objective's module; this one imports only gradfuse (not pytest, not
scikit-learn), so a worker starts in about a second."""

from __future__ import annotations

import functools
import math

import gradfuse as gf


def bowl(params, budget):
    """A known optimum: lr = 10^-2.5, x = 0.3 (higher is better, at most 0)."""
    return -((math.log10(params["lr"]) + 2.5) ** 2) - (params["x"] - 0.3) ** 2


def by_x(params, budget):
    """The score is x whatever the budget: the best x must survive every rung."""
    return params["x"]


class Counting:
    """Resumable: the state is the number of epochs trained so far; the score is x."""

    def __init__(self):
        self.calls = []

    def __call__(self, params, budget, state=None):
        trained = 0 if state is None else state
        self.calls.append((params["x"], trained, budget))
        return params["x"], budget


def flaky(params, budget):
    """Raises for x > 0.8, returns NaN for x < 0.2, else x."""
    if params["x"] > 0.8:
        raise ZeroDivisionError("boom")
    if params["x"] < 0.2:
        return float("nan")
    return params["x"]


@functools.cache
def digits():
    """(x_train, y_train, x_val, y_val) of scikit-learn's digits, pixels scaled to [0, 1] (needs
    scikit-learn; the workers get the arrays, so they do not import it)."""
    x, y, xv, yv, _, _ = gf.data.load_digits_split(0)
    return x / 16, y, xv / 16, yv


def build_mlp(params):
    """64 -> hidden (ReLU) -> 10, Adam at params["lr"]: the same initial weights for every trial."""
    model = gf.nn.Sequential(
        [
            gf.nn.Dense(64, params["hidden"], activation="relu", init="he_normal", seed=1),
            gf.nn.Dense(params["hidden"], 10, seed=2),
        ],
        seed=0,
    )
    return model, gf.optim.Adam(model.parameters(), lr=params["lr"])
