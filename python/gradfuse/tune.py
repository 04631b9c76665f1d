"""Hyperparameter search as the seeds teach it: random search on a log scale, coarse to fine, and
successive halving on epochs; trials in parallel processes.

    import gradfuse as gf
    space = {"lr": gf.tune.loguniform(1e-4, 1), "weight_decay": gf.tune.loguniform(1e-6, 1e-2),
             "hidden": gf.tune.lograndint(16, 513), "dropout": gf.tune.uniform(0.0, 0.5),
             "optimizer": gf.tune.choice(["Adam", "SGD"]), "batch_size": 64}   # plain values are fixed
    objective = gf.tune.fit_objective(build, x_train, y_train, validation_data=(x_val, y_val),
                                      metric="val_accuracy", epochs=10)      # build(params) -> (model, opt)
    result = gf.tune.coarse_to_fine(objective, space, n_trials=16, rounds=3, seed=0, n_jobs=2)
    result = gf.tune.successive_halving(objective, space, n_trials=27, min_budget=1, max_budget=16)
    print(result.table())          # one row per trial, best first; result.to_pandas() with pandas
    result.best_params, result.best_score
    result.plot("scores.png")      # the score against each hyperparameter (log axes for log ranges)

The objective is any function `objective(params, budget) -> score` (or `objective(params)`); say
whether higher scores are better with mode="max" (accuracy) or lower with mode="min" (a loss); an
objective with a `mode` attribute (fit_objective's) gives its own. The budget is what successive
halving hands out (epochs for fit_objective). An objective with a `state` parameter,
`objective(params, budget, state=None) -> (score, state)`, is resumable: successive halving hands a
survivor its own state back and it continues training from there instead of starting again.

A trial whose objective raises, or returns NaN, Inf or something that is not a number, is recorded
as failed (its error in the table) and is never the best; a warning says how many failed, and a
search where every trial fails raises with the first error.

Determinism: every trial's parameters are drawn in the calling process from (seed, round, trial
number), so they do not depend on n_jobs nor on the number of trials; with a deterministic objective
(gradfuse's kernels are, for every thread count) the scores are bitwise the same for any n_jobs.

n_jobs > 1 runs trials in that many processes (started by a "forkserver", "spawn" where there is
none: never a fork of the caller; the objective must be picklable, i.e. a module-level function
or a fit_objective of one, and a script guards its search with `if __name__ == "__main__":`), each with
gf.set_num_threads(cores // n_jobs), so that their threads do not fight over the cores.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import math
import multiprocessing
import numbers
import os
import pickle
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import data, nn, optim, train, viz
from ._config import set_num_threads

__all__ = [
    "Distribution",
    "Uniform",
    "LogUniform",
    "IntUniform",
    "Choice",
    "uniform",
    "loguniform",
    "randint",
    "lograndint",
    "choice",
    "sample",
    "narrow",
    "Trial",
    "Table",
    "TuneResult",
    "random_search",
    "coarse_to_fine",
    "successive_halving",
    "fit_objective",
    "FitObjective",
    "optuna_suggest",
    "OptunaPruning",
    "optuna_objective",
]


# ---- search spaces ----------------------------------------------------------------------------------------
def _real(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


class Distribution:
    """A range to draw one hyperparameter from. Subclasses: Uniform, LogUniform, IntUniform, Choice."""

    log = False

    def sample(self, rng: np.random.Generator):
        raise NotImplementedError


class Uniform(Distribution):
    """A float drawn uniformly from [low, high)."""

    def __init__(self, low, high):
        self.low, self.high = _real(low, f"{self._name}: low"), _real(high, f"{self._name}: high")
        if not self.low < self.high:
            raise ValueError(f"{self._name}: low must be < high, got low={low!r}, high={high!r}")
        if self.log and self.low <= 0:
            raise ValueError(f"{self._name}: a log range needs low > 0, got low={low!r}")

    _name = "uniform"

    # the axis coarse-to-fine narrows on and the plots draw: log(x) for log ranges
    def _to_axis(self, x):
        return math.log(x) if self.log else float(x)

    def _from_axis(self, t):
        return math.exp(t) if self.log else t

    def sample(self, rng):
        return self._from_axis(rng.uniform(self._to_axis(self.low), self._to_axis(self.high)))

    def _narrowed(self, lo, hi):
        return type(self)(max(self.low, self._from_axis(lo)), min(self.high, self._from_axis(hi)))

    def __repr__(self):
        return f"{self._name}({self.low:g}, {self.high:g})"

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)


class LogUniform(Uniform):
    """A float whose log is uniform in [log low, log high): each decade as likely as the next (0 < low)."""

    log = True
    _name = "loguniform"


class IntUniform(Distribution):
    """An integer in [low, high) (high excluded, as numpy's and Ray Tune's randint); log=True draws
    it log-uniformly (units per layer: 16..512 as likely as 256..512)."""

    def __init__(self, low, high, log=False):
        for name, v in (("low", low), ("high", high)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ValueError(f"{self._name}: {name} must be an integer, got {v!r}")
        self.low, self.high, self.log = int(low), int(high), bool(log)
        if not self.low < self.high:
            raise ValueError(f"{self._name}: low must be < high (high is excluded), got low={low}, high={high}")
        if self.log and self.low <= 0:
            raise ValueError(f"{self._name}: a log range needs low > 0, got low={low}")

    @property
    def _name(self):
        return "lograndint" if getattr(self, "log", False) else "randint"

    def _to_axis(self, x):
        return math.log(x) if self.log else float(x)

    def _from_axis(self, t):
        return math.exp(t) if self.log else t

    def sample(self, rng):
        if not self.log:
            return int(rng.integers(self.low, self.high))
        value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return min(int(math.floor(value)), self.high - 1)

    def _narrowed(self, lo, hi):
        low = max(self.low, int(math.floor(self._from_axis(lo) + 1e-9)))
        high = min(self.high, int(math.floor(self._from_axis(hi) + 1e-9)) + 1)
        return IntUniform(low, max(high, low + 1), log=self.log)

    def __repr__(self):
        return f"{self._name}({self.low}, {self.high})"

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)


class Choice(Distribution):
    """One of the given options, each equally likely (any values: names, tuples of layer sizes)."""

    def __init__(self, options):
        if isinstance(options, (str, bytes)) or not hasattr(options, "__iter__"):
            raise ValueError(f"choice: options must be a list of values, got {options!r}")
        self.options = list(options)
        if not self.options:
            raise ValueError("choice: options is empty: give at least one value")

    def sample(self, rng):
        return self.options[int(rng.integers(len(self.options)))]

    def __repr__(self):
        return f"choice({self.options!r})"

    def __eq__(self, other):
        return type(self) is type(other) and self.options == other.options


def uniform(low, high) -> Uniform:
    """A float uniform in [low, high): dropout rates, momentum."""
    return Uniform(low, high)


def loguniform(low, high) -> LogUniform:
    """A float log-uniform in [low, high), 0 < low: learning rates (1e-4..1), weight decay."""
    return LogUniform(low, high)


def randint(low, high) -> IntUniform:
    """An integer uniform in [low, high) (high excluded): number of layers."""
    return IntUniform(low, high)


def lograndint(low, high) -> IntUniform:
    """An integer log-uniform in [low, high) (high excluded), 0 < low: units per layer, batch size."""
    return IntUniform(low, high, log=True)


def choice(options) -> Choice:
    """One of the options: optimizer names, activations, architectures."""
    return Choice(options)


def _check_space(space, fn: str) -> dict:
    if not isinstance(space, dict):
        raise TypeError(f"{fn}: space must be a dict name -> distribution (or fixed value), got {type(space).__name__}")
    if not any(isinstance(d, Distribution) for d in space.values()):
        raise ValueError(
            f"{fn}: the space has nothing to search (it is empty or holds only fixed values): give at least "
            f"one range, e.g. {{'lr': gf.tune.loguniform(1e-4, 1)}}"
        )
    for name, value in space.items():
        if not isinstance(name, str):
            raise TypeError(f"{fn}: space keys must be strings (parameter names), got {name!r}")
        # what other libraries' users put in a space would otherwise be taken as a fixed value
        if isinstance(value, list):
            raise TypeError(
                f"{fn}: space[{name!r}] is a list: write gf.tune.choice({value!r}) to search over its values "
                f"(scikit-learn's meaning), or a tuple for one fixed value"
            )
        if hasattr(value, "rvs") or type(value).__module__.startswith("optuna"):
            raise TypeError(
                f"{fn}: space[{name!r}] is a {type(value).__name__} from another library: use gf.tune's "
                f"uniform / loguniform / randint / lograndint / choice"
            )
    return space


def _trial_rng(seed: int, round_: int, number: int) -> np.random.Generator:
    # a stream per (seed, round, trial): a trial's parameters depend on nothing else
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(round_), int(number)]))


def sample(space: dict, rng) -> dict:
    """One draw of every distribution in the space (fixed values copied); rng: a numpy Generator or
    a seed."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return {name: d.sample(rng) if isinstance(d, Distribution) else d for name, d in space.items()}


# ---- trials and results -----------------------------------------------------------------------------------
@dataclass
class Trial:
    """One configuration: its parameters, its score at the largest budget it reached (NaN if it
    failed), the scores at every budget (successive halving), the round (coarse to fine) or rung
    (successive halving) it reached, its run time and, for a failed trial, the error."""

    number: int
    params: dict
    round: int = 0
    budget: float | None = None
    score: float = math.nan
    status: str = "pending"  # "ok" or "failed"
    scores: dict = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _format(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Table(list):
    """A list of dicts (one per trial, best first) that prints as a text table; a slice
    (table[:5]) is a Table too."""

    def __getitem__(self, index):
        item = super().__getitem__(index)
        return Table(item) if isinstance(index, slice) else item

    def __str__(self):
        if not self:
            return "(no trials)"
        columns = list(dict.fromkeys(k for row in self for k in row if k != "error"))
        cells = [[_format(row.get(c, "")) for c in columns] for row in self]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
        lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
        return "\n".join(lines)


class TuneResult:
    """What a search found: .trials (every Trial), .best, .best_params, .best_score, .table(),
    .to_pandas(), .plot(path); .spaces: the space of each round (coarse to fine narrows it);
    .metric: what the score measures; .budget_spent: the budget the objective was asked to spend
    in all (epochs for fit_objective: a resumed trial counts only the epochs it added)."""

    def __init__(self, method: str, mode: str, space: dict, trials, spaces=None, budget_spent=0.0, metric="score"):
        self.method, self.mode, self.space, self.trials = method, mode, space, list(trials)
        self.metric = metric  # what the score is (fit_objective's metric), for the plot
        self.spaces = spaces or [space]
        self.budget_spent = budget_spent

    def _key(self, trial):
        # the best first: the largest budget reached, then the score (failed trials last)
        score = trial.score if self.mode == "min" else -trial.score
        budget = trial.budget if trial.budget is not None else 0
        return (not trial.ok, -budget, score, trial.number)

    def ranked(self) -> list:
        return sorted(self.trials, key=self._key)

    @property
    def best(self) -> Trial:
        ranked = self.ranked()
        if not ranked or not ranked[0].ok:
            raise ValueError(f"{self.method}: no trial finished (every one failed): there is no best")
        return ranked[0]

    @property
    def best_params(self) -> dict:
        return dict(self.best.params)

    @property
    def best_score(self) -> float:
        return self.best.score

    def table(self, sort: bool = True) -> Table:
        """One dict per trial (best first unless sort=False): number, round, budget, score, status,
        seconds, then the parameters, and the error of a failed trial."""
        rows = Table()
        for t in self.ranked() if sort else self.trials:
            row = {"number": t.number, "round": t.round, "budget": t.budget, "score": t.score, "status": t.status}
            row["seconds"] = round(t.seconds, 3)
            row.update(t.params)
            if t.error is not None:
                row["error"] = t.error
            rows.append(row)
        return rows

    def to_pandas(self):
        """The table as a pandas DataFrame (pandas is not a dependency: pip install pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("TuneResult.to_pandas needs pandas: pip install pandas (or use .table())") from exc
        return pd.DataFrame(list(self.table()))

    def plot(self, path, title: str | None = None, dpi: int = 100) -> str:
        """Write a PNG: the score against each searched hyperparameter, one panel each (log x axis
        for log ranges, the options side by side for a choice), coloured by round / rung, the best
        trial starred. Failed trials are left out (the title counts them). Needs matplotlib."""
        plt = viz._pyplot()
        names = [n for n, d in self.space.items() if isinstance(d, Distribution)]
        done = [t for t in self.trials if t.ok]
        if not done:
            raise ValueError("plot: no trial finished (every one failed): there is nothing to draw")
        cols = min(3, len(names))
        rows = -(-len(names) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows + 0.5), squeeze=False)
        rounds = sorted({t.round for t in done})
        colors = dict(zip(rounds, viz._colors(len(rounds))))
        best = self.best
        label = "rung" if self.method == "successive_halving" else "round"
        for ax, name in zip(axes.flat, names):
            dist = self.space[name]
            if isinstance(dist, Choice):
                position = {repr(o): i for i, o in enumerate(dist.options)}
                to_x = lambda v, position=position: position.get(repr(v), -1)  # noqa: E731
                ax.set_xticks(range(len(dist.options)), [str(o) for o in dist.options], rotation=20)
                ax.set_xlim(-0.5, len(dist.options) - 0.5)
            else:
                to_x = float
                if dist.log:
                    ax.set_xscale("log")
                if dist.log and isinstance(dist, IntUniform):  # widths: powers of two, not 3x10^1
                    powers = [2**k for k in range(dist.high.bit_length() + 1) if dist.low <= 2**k <= dist.high]
                    ax.set_xticks(powers, [str(v) for v in powers])
                    ax.set_xticks([], minor=True)
            for r in rounds:
                group = [t for t in done if t.round == r]
                ax.scatter(
                    [to_x(t.params[name]) for t in group],
                    [t.score for t in group],
                    s=22,
                    color=colors[r],
                    alpha=0.8,
                    label=f"{label} {r}" + (f" (budget {group[0].budget:g})" if group[0].budget is not None else ""),
                )
            ax.scatter([to_x(best.params[name])], [best.score], marker="*", s=220, color="gold", edgecolor="black")
            ax.set(xlabel=name + (" (log)" if dist.log else ""), ylabel=self.metric)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(names) :]:
            ax.axis("off")
        if len(rounds) > 1:
            axes.flat[0].legend(fontsize=7)
        failed = len(self.trials) - len(done)
        fig.suptitle(
            title
            or f"{self.method}: {len(self.trials)} trials ({'higher' if self.mode == 'max' else 'lower'} is better"
            f"{f', {failed} failed' if failed else ''}), best {best.score:.4g}"
        )
        fig.tight_layout()
        return viz._save(fig, path, dpi)

    def __repr__(self):
        ok = sum(t.ok for t in self.trials)
        best = f", best_score={self.best_score:.6g}, best_params={self.best_params}" if ok else ""
        return f"TuneResult({self.method}, mode={self.mode!r}, {len(self.trials)} trials, {ok} ok{best})"


# ---- running trials ---------------------------------------------------------------------------------------
def _call_style(objective, fn: str) -> str:
    """How to call the objective: "state" (resumable), "budget" or "params" (one argument)."""
    if not callable(objective):
        raise TypeError(f"{fn}: objective must be callable as objective(params, budget), got {objective!r}")
    try:
        parameters = inspect.signature(objective).parameters
    except (TypeError, ValueError):  # a builtin: assume the documented form
        return "budget"
    if "state" in parameters:
        return "state"
    positional = [p for p in parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in parameters.values())
    return "budget" if len(positional) >= 2 or varargs else "params"


def _mode(objective, mode, fn: str) -> str:
    mode = getattr(objective, "mode", None) if mode is None else mode
    if mode not in ("min", "max"):
        raise ValueError(
            f"{fn}: say which scores are better: mode='max' (accuracy) or mode='min' (a loss), got {mode!r}"
        )
    return mode


def _run_trial(objective, style, params, budget, state):
    """(score or None, state, seconds, error or None): an exception or a non-finite score is an
    error, recorded, never raised."""
    began = time.perf_counter()
    new_state, score = None, None
    params = dict(params)  # an objective that pops or edits a key changes its own copy, not the record
    try:
        if style == "state":
            out = objective(params, budget, state=state)
            value, new_state = out if isinstance(out, tuple) and len(out) == 2 else (out, None)
        elif style == "budget":
            value = objective(params, budget)
        else:
            value = objective(params)
        if not isinstance(value, numbers.Real) and hasattr(value, "item"):
            value = value.item()  # a one-element array or tensor (torch's loss.item() forgotten)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            error = f"the objective returned {type(value).__name__} {value!r}, not a number"
        elif not math.isfinite(value):
            error, new_state = f"the objective returned {value}", None
        else:
            score, error = float(value), None
    except Exception as exc:  # noqa: BLE001 - a failed trial is recorded, the search goes on
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        error += "\n" + "".join(traceback.format_tb(exc.__traceback__))
    return score, new_state, time.perf_counter() - began, error


_worker = {}  # in a worker process: the objective and how to call it


def _worker_init(payload: bytes, threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)  # for libraries the objective loads later (torch, ...)
    set_num_threads(threads)
    _worker["objective"], _worker["style"] = pickle.loads(payload)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _worker_run(params, budget, state):
    return _run_trial(_worker["objective"], _worker["style"], params, budget, state)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _pool_context():
    """forkserver where there is one (Linux, macOS): its server imports gradfuse once and every
    worker is a fork of it, so a pool starts in 0.2 s (1.4 s the first time) against 2.8 s for
    spawn, measured on 2 busy cores; spawn elsewhere. Neither forks the caller, whose threads
    (OpenMP, BLAS) a fork would copy in an unknown state."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


class _Runner:
    """Runs batches of trials: in this process (n_jobs=1) or in a pool of worker processes."""

    def __init__(self, objective, style, n_jobs, fn: str):
        if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral) or n_jobs == 0 or n_jobs < -1:
            raise ValueError(f"{fn}: n_jobs must be a positive integer or -1 (every core), got {n_jobs!r}")
        self.n_jobs = _cores() if n_jobs == -1 else int(n_jobs)
        self.objective, self.style, self.fn, self.pool = objective, style, fn, None
        if self.n_jobs > 1:
            try:
                self.payload = pickle.dumps((objective, style))
            except Exception as exc:  # noqa: BLE001 - said again with what to do
                raise TypeError(
                    f"{fn}: n_jobs={self.n_jobs} runs trials in separate processes, so the objective must be "
                    f"picklable (a function defined at a module's top level, not a lambda or a local function; "
                    f"fit_objective's build function too): {exc}"
                ) from exc

    def __enter__(self):
        if self.n_jobs > 1:
            self.pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.n_jobs,
                mp_context=_pool_context(),
                initializer=_worker_init,
                initargs=(self.payload, max(1, _cores() // self.n_jobs)),
            )
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def run(self, tasks) -> list:
        """tasks: [(params, budget, state)] -> [(score, state, seconds, error)] in the same order."""
        if self.pool is None:
            return [_run_trial(self.objective, self.style, *task) for task in tasks]
        try:
            return list(self.pool.map(_worker_run, *zip(*tasks))) if tasks else []
        except concurrent.futures.process.BrokenProcessPool as exc:
            raise RuntimeError(
                f"{self.fn}: a worker process died. If the objective is defined in an interactive session or "
                f"a notebook, the workers cannot import it: define it in a module (or use n_jobs=1)"
            ) from exc


def _record(trial: Trial, outcome, budget, round_) -> object:
    score, state, seconds, error = outcome
    trial.seconds += seconds
    trial.round, trial.budget = round_, budget
    if error is None:
        trial.status, trial.score, trial.error = "ok", score, None
        trial.scores[budget] = score
    else:
        trial.status, trial.score, trial.error = "failed", math.nan, error
    return state


def _check_failures(trials, fn: str) -> None:
    failed = [t for t in trials if not t.ok]
    if not failed:
        return
    if len(failed) == len(trials):
        raise RuntimeError(f"{fn}: every trial failed; the first (params {failed[0].params}):\n{failed[0].error}")
    first = failed[0].error.splitlines()[0]
    warnings.warn(
        f"{fn}: {len(failed)} of {len(trials)} trials failed (recorded in the table, never the best); "
        f"the first: {first}",
        RuntimeWarning,
        stacklevel=3,
    )


def _check_count(n, what: str, fn: str, minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < minimum:
        raise ValueError(f"{fn}: {what} must be an integer >= {minimum}, got {n!r}")
    return int(n)


# ---- the searches -----------------------------------------------------------------------------------------
def random_search(objective, space, n_trials, *, budget=None, mode=None, seed=0, n_jobs=1) -> TuneResult:
    """Evaluate n_trials configurations drawn at random from `space`, each as objective(params,
    budget) (budget None: the objective's default_budget if it has one, fit_objective's epochs).

    mode: "max" when higher scores are better, "min" when lower are (None: the objective's .mode).
    n_jobs: processes (-1: one per core). Returns a TuneResult."""
    fn = "random_search"
    space, n_trials = _check_space(space, fn), _check_count(n_trials, "n_trials", fn)
    budget = getattr(objective, "default_budget", None) if budget is None else budget
    style, mode = _call_style(objective, fn), _mode(objective, mode, fn)
    trials = [Trial(i, sample(space, _trial_rng(seed, 0, i))) for i in range(n_trials)]
    with _Runner(objective, style, n_jobs, fn) as runner:
        for trial, outcome in zip(trials, runner.run([(t.params, budget, None) for t in trials])):
            _record(trial, outcome, budget, 0)
    _check_failures(trials, fn)
    return TuneResult(
        fn, mode, space, trials, budget_spent=(budget or 0) * n_trials, metric=getattr(objective, "metric", "score")
    )


def narrow(space: dict, trials, mode: str, keep: float = 0.25, shrink: float = 0.5, margin: float = 0.1) -> dict:
    """The next, finer space: each range narrowed to the span of the best `keep` fraction of the
    finished trials (at least 2), widened by `margin` of the current width on each side; where that
    is wider than `shrink` times the current width, a window of that width centred on the best
    trial. Never beyond the current range (a window at an edge is shifted inside). Log ranges are
    narrowed on the log axis. A choice keeps the options the best trials used; fixed values stay.
    trials: Trials or a TuneResult."""
    trials = trials.trials if isinstance(trials, TuneResult) else trials
    for name, value in (("keep", keep), ("shrink", shrink)):
        if not 0 < value <= 1:
            raise ValueError(f"narrow: {name} must be in (0, 1], got {value}")
    done = sorted((t for t in trials if t.ok), key=lambda t: t.score if mode == "min" else -t.score)
    if not done:
        raise ValueError("narrow: no trial finished: there is nothing to narrow around")
    top = done[: max(2, math.ceil(keep * len(done)))]
    finer = {}
    for name, dist in space.items():
        if isinstance(dist, Choice):
            used = {repr(t.params[name]) for t in top}
            finer[name] = Choice([o for o in dist.options if repr(o) in used] or dist.options)
        elif isinstance(dist, Distribution):
            low, high = dist._to_axis(dist.low), dist._to_axis(dist.high)
            axis = [dist._to_axis(t.params[name]) for t in top]
            lo, hi = min(axis) - margin * (high - low), max(axis) + margin * (high - low)
            if hi - lo > shrink * (high - low):  # the best trials are spread out: zoom on the best one
                half = shrink * (high - low) / 2
                centre = min(max(axis[0], low + half), high - half)
                lo, hi = centre - half, centre + half
            finer[name] = dist._narrowed(lo, hi)
        else:
            finer[name] = dist
    return finer


def coarse_to_fine(
    objective, space, n_trials, *, rounds=3, keep=0.25, shrink=0.5, budget=None, mode=None, seed=0, n_jobs=1
) -> TuneResult:
    """Random search in `rounds` rounds of n_trials each: the first over `space`, each next one over
    the space narrowed around the best trials so far (narrow(): at least by `shrink`, log ranges on
    the log axis), as
    the seeds teach: search the initial range, find the values that do best, search again around
    them. result.spaces holds each round's space; each trial's round is in the table."""
    fn = "coarse_to_fine"
    space, n_trials = _check_space(space, fn), _check_count(n_trials, "n_trials", fn)
    rounds = _check_count(rounds, "rounds", fn)
    budget = getattr(objective, "default_budget", None) if budget is None else budget
    style, mode = _call_style(objective, fn), _mode(objective, mode, fn)
    trials, spaces = [], [space]
    with _Runner(objective, style, n_jobs, fn) as runner:
        for r in range(rounds):
            if r:
                spaces.append(narrow(spaces[-1], trials, mode, keep, shrink))
            batch = [
                Trial(len(trials) + i, sample(spaces[-1], _trial_rng(seed, r, i)), round=r) for i in range(n_trials)
            ]
            for trial, outcome in zip(batch, runner.run([(t.params, budget, None) for t in batch])):
                _record(trial, outcome, budget, r)
            trials += batch
            if not any(t.ok for t in trials):
                break  # nothing to narrow around: reported below
    _check_failures(trials, fn)
    return TuneResult(
        fn,
        mode,
        space,
        trials,
        spaces=spaces,
        budget_spent=(budget or 0) * len(trials),
        metric=getattr(objective, "metric", "score"),
    )


def successive_halving(
    objective, space, n_trials, *, min_budget=1, max_budget=None, eta=2, mode=None, seed=0, n_jobs=1
) -> TuneResult:
    """Successive halving on the budget (epochs): all n_trials configurations get min_budget, the
    best 1/eta of them (at least 1) get eta times as much, and so on until max_budget (the last
    survivor too), or, when max_budget is None, until one is left. eta=2 halves the field and
    doubles the budget at each rung (Hyperband uses 3). A resumable objective (a `state`
    parameter, as fit_objective's) continues each survivor from the state it returned, so a rung
    costs only the added epochs; any other objective is run again from scratch with the larger
    budget. result.budget_spent adds them up;
    each trial's budget and round (rung) say how far it got, its scores every rung's score."""
    fn = "successive_halving"
    space, n_trials = _check_space(space, fn), _check_count(n_trials, "n_trials", fn)
    eta = _check_count(eta, "eta", fn, minimum=2)
    min_budget = _real(min_budget, f"{fn}: min_budget")
    if min_budget <= 0:
        raise ValueError(f"{fn}: min_budget must be > 0, got {min_budget}")
    if max_budget is not None and _real(max_budget, f"{fn}: max_budget") < min_budget:
        raise ValueError(f"{fn}: max_budget ({max_budget}) must be >= min_budget ({min_budget})")
    style, mode = _call_style(objective, fn), _mode(objective, mode, fn)
    if style == "params":
        raise TypeError(f"{fn}: the objective must take the budget: objective(params, budget) (epochs to train)")
    as_int = float(min_budget).is_integer() and (max_budget is None or float(max_budget).is_integer())
    trials = [Trial(i, sample(space, _trial_rng(seed, 0, i))) for i in range(n_trials)]
    alive, states, spent, budget, previous, rung = trials, {}, 0.0, min_budget, 0.0, 0
    with _Runner(objective, style, n_jobs, fn) as runner:
        while True:
            b = int(budget) if as_int else budget
            tasks = [(t.params, b, states.get(t.number)) for t in alive]
            spent += sum(b - previous if s is not None else b for _, _, s in tasks)
            for trial, outcome in zip(alive, runner.run(tasks)):
                states[trial.number] = _record(trial, outcome, b, rung)
            ranked = sorted((t for t in alive if t.ok), key=lambda t: t.score if mode == "min" else -t.score)
            # with a max_budget the last survivor goes on to it; without, the last survivor is the end
            done = budget >= max_budget if max_budget is not None else len(ranked) <= 1
            if done or not ranked:
                break
            alive = ranked[: max(1, len(alive) // eta)]
            states = {t.number: states[t.number] for t in alive}  # the others' states are dropped
            previous, budget, rung = b, budget * eta, rung + 1
            if max_budget is not None:
                budget = min(budget, max_budget)
    _check_failures(trials, fn)
    return TuneResult(fn, mode, space, trials, budget_spent=spent, metric=getattr(objective, "metric", "score"))


# ---- an objective from a model factory --------------------------------------------------------------------
class _KeepState(train.Callback):
    """Keeps what fit needs to continue this run (train.resume_state) when it ends."""

    state = None

    def on_train_end(self, logs=None):
        self.state = train.resume_state(self.trainer, len(self.trainer.history.epoch))


class FitObjective:
    """objective(params, budget=None, state=None) -> (score, state): build(params) -> (model,
    optimizer) or (model, optimizer, fit_kwargs) (a schedule on that optimizer, say), then
    gf.train.fit for `budget` epochs (None: `epochs`), scored by the last epoch's `metric`. Given the
    state of an earlier call with the same params, fit resumes it (bitwise as one longer run)."""

    def __init__(self, build, x, y, *, loss, validation_data, metric, epochs, fit_kwargs):
        self.build, self.x, self.y, self.loss = build, x, y, loss
        self.validation_data, self.metric, self.epochs = validation_data, metric, epochs
        self.fit_kwargs = fit_kwargs
        self.mode = train._monitor_mode(metric, "auto")

    @property
    def default_budget(self) -> int:
        return self.epochs

    def run(self, params, budget=None, state=None, callbacks=()):
        built = self.build(params)
        if not isinstance(built, tuple) or len(built) not in (2, 3):
            raise TypeError(
                f"fit_objective: build(params) must return (model, optimizer) or (model, optimizer, fit_kwargs), "
                f"got {type(built).__name__}"
            )
        model, optimizer, extra = built if len(built) == 3 else (*built, {})
        keeper = _KeepState()
        history = train.fit(
            model,
            self.loss,
            optimizer,
            self.x,
            self.y,
            epochs=self.epochs if budget is None else int(budget),
            validation_data=self.validation_data,
            callbacks=[keeper, *callbacks],
            resume=state,
            verbose=0,
            **{**self.fit_kwargs, **extra},
        )
        if self.metric not in history:
            raise KeyError(f"fit_objective: fit logged no {self.metric!r}; it logged {sorted(history.keys())}")
        return history[self.metric][-1], keeper.state

    def __call__(self, params, budget=None, state=None):
        return self.run(params, budget, state)


def fit_objective(
    build, x, y, *, loss="cross_entropy", validation_data=None, metric="val_loss", epochs=10, **fit_kwargs
) -> FitObjective:
    """An objective that trains build(params)'s model with gf.train.fit on (x, y) and scores it on
    validation_data by `metric` ("val_loss": mode "min"; "val_accuracy": mode "max"). budget =
    epochs; resumable, so successive halving continues survivors instead of retraining them.
    fit_kwargs (batch_size, seed, clip_norm, ...) go to fit; build(params) may return a third item,
    a dict of fit arguments chosen by the params (a schedule on its optimizer, a batch size).
    A metric on the training data is refused: a search would pick the configuration that overfits."""
    if not callable(build):
        raise TypeError(f"fit_objective: build must be a function params -> (model, optimizer), got {build!r}")
    if not metric.startswith("val_"):
        raise ValueError(
            f"fit_objective: metric {metric!r} is measured on the training data, where the search would reward "
            f"overfitting: use a validation metric ('val_loss', 'val_accuracy') and pass validation_data"
        )
    if validation_data is None:
        raise ValueError("fit_objective: validation_data=(x_val, y_val) is needed to score the trials")
    for key in ("epochs", "validation_data", "validation_split", "callbacks", "resume", "verbose"):
        if key in fit_kwargs:
            raise TypeError(f"fit_objective: {key} is set by the search, not a fit argument here")
    return FitObjective(
        build, x, y, loss=loss, validation_data=validation_data, metric=metric, epochs=epochs, fit_kwargs=fit_kwargs
    )


# ---- optuna (optional: pip install optuna) ----------------------------------------------------------------
def _optuna():
    try:
        import optuna
    except ImportError as exc:
        raise ImportError("this needs optuna, which gradfuse does not require: pip install optuna") from exc
    return optuna


def optuna_suggest(trial, space: dict) -> dict:
    """Draw a gf.tune space through an optuna trial (suggest_float / suggest_int with log=... /
    suggest_categorical), so optuna's samplers (TPE, ...) search it. Options that optuna cannot
    store (tuples, objects) are suggested by their index."""
    _check_space(space, "optuna_suggest")
    params = {}
    for name, d in space.items():
        if isinstance(d, Uniform):
            params[name] = trial.suggest_float(name, d.low, d.high, log=d.log)
        elif isinstance(d, IntUniform):
            params[name] = trial.suggest_int(name, d.low, d.high - 1, log=d.log)  # optuna's high is included
        elif isinstance(d, Choice):
            if all(o is None or isinstance(o, (bool, int, float, str)) for o in d.options):
                params[name] = trial.suggest_categorical(name, d.options)
            else:
                params[name] = d.options[trial.suggest_categorical(name, list(range(len(d.options))))]
        else:
            params[name] = d
    return params


class OptunaPruning(train.Callback):
    """A gf.train.fit callback: reports `monitor` to the optuna trial after every epoch and raises
    optuna.TrialPruned when the study's pruner says the trial is hopeless."""

    def __init__(self, trial, monitor="val_loss"):
        self.optuna, self.trial, self.monitor = _optuna(), trial, monitor

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self.monitor not in logs:
            raise KeyError(f"OptunaPruning: fit logged no {self.monitor!r} (pass validation data to fit)")
        self.trial.report(float(logs[self.monitor]), epoch)
        if self.trial.should_prune():
            raise self.optuna.TrialPruned(f"pruned after epoch {epoch + 1}: {self.monitor}={logs[self.monitor]:.6g}")


def optuna_objective(objective, space: dict, budget=None):
    """An optuna objective (trial -> score) from a gf.tune objective and space: the params come from
    optuna_suggest; a fit_objective also reports every epoch and is pruned (OptunaPruning).
    study = optuna.create_study(direction="maximize" if objective.mode == "max" else "minimize")."""
    _optuna()
    _check_space(space, "optuna_objective")

    def run(trial):
        params = optuna_suggest(trial, space)
        if isinstance(objective, FitObjective):
            return objective.run(params, budget, callbacks=[OptunaPruning(trial, objective.metric)])[0]
        style = _call_style(objective, "optuna_objective")
        value = objective(params) if style == "params" else objective(params, budget)
        return value[0] if style == "state" and isinstance(value, tuple) else value

    return run


# ---- python -m gradfuse tune ------------------------------------------------------------------------------
HELP = "search an MLP's lr, weight decay and width on scikit-learn's digits (coarse to fine or halving)"

DIGITS_SPACE = {
    "lr": loguniform(1e-4, 1),
    "weight_decay": loguniform(1e-6, 1e-1),
    "hidden": lograndint(16, 257),
    "batch_size": 64,
}


def digits_mlp(params):
    """The command's model: 64 -> hidden (ReLU) -> 10 with AdamW (no decay on biases); the same
    seeds for every trial, so that trials differ by their hyperparameters only."""
    model = nn.Sequential(
        [nn.Dense(64, params["hidden"], activation="relu", init="he_normal"), nn.Dense(params["hidden"], 10)], seed=0
    )
    groups = model.parameter_groups(weight_decay=params["weight_decay"])
    return model, optim.AdamW(groups, lr=params["lr"]), {"batch_size": params["batch_size"]}


def add_arguments(parser) -> None:
    parser.description = (
        "Search the learning rate (log-uniform 1e-4..1), AdamW's weight decay (1e-6..0.1) and the hidden "
        "width (16..256, log) of a one-hidden-layer MLP on scikit-learn's digits (train / validation split "
        "70/10; the test part is not used), print the table of trials and the best, and write the scatter "
        "plot of the validation accuracy against each hyperparameter."
    )
    parser.add_argument("--method", choices=("random", "coarse-to-fine", "halving"), default="coarse-to-fine")
    parser.add_argument("--trials", type=int, default=12, help="trials (per round for coarse-to-fine)")
    parser.add_argument("--rounds", type=int, default=3, help="coarse-to-fine rounds (default 3)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per trial (halving: the largest budget)")
    parser.add_argument("--jobs", type=int, default=1, help="processes (-1: one per core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top", type=int, default=10, help="rows of the table to print (default 10)")
    parser.add_argument("--plot", default=None, help="write the scatter plot to this PNG (needs matplotlib)")
    parser.set_defaults(func=main)


def main(args) -> int:
    x, y, xv, yv, _, _ = data.load_digits_split(args.seed)
    scaler = data.Standardizer("zscore")
    x, xv = scaler.fit_transform(x), scaler.transform(xv)
    objective = fit_objective(digits_mlp, x, y, validation_data=(xv, yv), metric="val_accuracy", epochs=args.epochs)
    began = time.perf_counter()
    common = dict(seed=args.seed, n_jobs=args.jobs)
    if args.method == "random":
        result = random_search(objective, DIGITS_SPACE, args.trials, **common)
    elif args.method == "coarse-to-fine":
        result = coarse_to_fine(objective, DIGITS_SPACE, args.trials, rounds=args.rounds, **common)
    else:
        result = successive_halving(objective, DIGITS_SPACE, args.trials, max_budget=args.epochs, **common)
    seconds = time.perf_counter() - began
    rows = result.table()[: args.top]
    print(rows)
    print(
        f"{len(result.trials)} trials, {result.budget_spent:g} epochs in {seconds:.1f} s ({args.jobs} job(s)); "
        f"best val_accuracy {result.best_score:.4f} with "
        + ", ".join(f"{k}={_format(v)}" for k, v in result.best_params.items())
    )
    if args.method == "coarse-to-fine":
        print("last round's space:", result.spaces[-1])
    if args.plot:
        print(f"wrote {result.plot(args.plot)}")
    return 0
