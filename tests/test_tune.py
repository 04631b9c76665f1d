"""gf.tune: the distributions (ranges, log-uniformity), determinism by seed and for any n_jobs,
coarse to fine narrowing around a known optimum, successive halving (who survives, the budget it
spends, resumed survivors), real fits on the digits, failed trials, bad inputs, the table and the
plot, and the optuna adapter (when optuna is installed)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import gradfuse as gf
from tune_objectives import Counting, bowl, build_mlp, by_x, digits, flaky

tune = gf.tune
DIGITS_SPACE = {"lr": tune.loguniform(1e-3, 3e-2), "hidden": tune.lograndint(16, 65)}


def digits_objective(**kwargs):
    pytest.importorskip("sklearn")
    x, y, xv, yv = digits()
    return tune.fit_objective(build_mlp, x, y, validation_data=(xv, yv), metric="val_accuracy", batch_size=64, **kwargs)


# ---- distributions -----------------------------------------------------------------------------------------
def draws(dist, n=4000, seed=0):
    rng = np.random.default_rng(seed)
    return np.array([dist.sample(rng) for _ in range(n)])


def test_uniform_and_loguniform_ranges_and_log_uniformity():
    u = draws(tune.uniform(-1.0, 3.0))
    assert u.min() >= -1 and u.max() < 3 and abs(u.mean() - 1.0) < 0.1
    lr = draws(tune.loguniform(1e-4, 1))
    assert lr.min() >= 1e-4 and lr.max() < 1
    per_decade = np.histogram(np.log10(lr), bins=[-4, -3, -2, -1, 0])[0] / len(lr)
    np.testing.assert_allclose(per_decade, 0.25, atol=0.03)  # each decade as likely: not 90% in [0.1, 1)
    assert repr(tune.loguniform(1e-4, 1)) == "loguniform(0.0001, 1)"


def test_integer_ranges_exclude_high_and_lograndint_is_log_uniform():
    r = draws(tune.randint(2, 6))
    assert set(r.tolist()) == {2, 3, 4, 5} and r.dtype.kind == "i"
    h = draws(tune.lograndint(16, 1024))
    assert h.min() >= 16 and h.max() <= 1023 and all(isinstance(v, int) for v in h[:10].tolist())
    # log-uniform: as many in [16, 128) as in [128, 1024)
    assert abs(np.mean(h < 128) - 0.5) < 0.03
    rng = np.random.default_rng(0)
    c = [tune.choice(["Adam", "SGD", (64, 32)]).sample(rng) for _ in range(600)]
    assert {c.count(o) > 150 for o in ("Adam", "SGD", (64, 32))} == {True}  # each about a third


def test_sample_keeps_fixed_values_and_bad_spaces_are_refused():
    params = tune.sample({"lr": tune.loguniform(1e-3, 1), "batch_size": 64}, 0)
    assert params["batch_size"] == 64 and 1e-3 <= params["lr"] < 1
    with pytest.raises(ValueError, match="low must be < high"):
        tune.uniform(1.0, 1.0)
    with pytest.raises(ValueError, match="low must be < high"):
        tune.randint(5, 3)
    with pytest.raises(ValueError, match="log range needs low > 0"):
        tune.loguniform(0.0, 1.0)
    with pytest.raises(ValueError, match="log range needs low > 0"):
        tune.lograndint(-1, 8)
    with pytest.raises(ValueError, match="finite number"):
        tune.uniform(float("nan"), 1.0)
    with pytest.raises(ValueError, match="integer"):
        tune.randint(0.5, 3)
    with pytest.raises(ValueError, match="empty"):
        tune.choice([])
    with pytest.raises(ValueError, match="list of values"):
        tune.choice("abc")
    for space in ({}, {"batch_size": 64}):
        with pytest.raises(ValueError, match="nothing to search"):
            tune.random_search(bowl, space, 4, mode="max")
    with pytest.raises(TypeError, match="dict"):
        tune.random_search(bowl, [tune.uniform(0, 1)], 4, mode="max")
    # scikit-learn's habits: a list of values, a scipy.stats distribution; never a silent fixed value
    with pytest.raises(TypeError, match=r"gf.tune.choice\(\[16, 32\]\)"):
        tune.random_search(bowl, {"lr": tune.loguniform(1e-4, 1), "hidden": [16, 32]}, 4, mode="max")
    stats = pytest.importorskip("scipy.stats")
    with pytest.raises(TypeError, match="another library"):
        tune.random_search(bowl, {"lr": stats.loguniform(1e-4, 1), "x": tune.uniform(0, 1)}, 4, mode="max")


def test_bad_search_arguments_are_refused():
    space = {"lr": tune.loguniform(1e-4, 1), "x": tune.uniform(0, 1)}
    with pytest.raises(ValueError, match="mode='max'"):
        tune.random_search(bowl, space, 4)  # higher or lower better: never guessed
    with pytest.raises(ValueError, match="mode"):
        tune.random_search(bowl, space, 4, mode="maximize")
    with pytest.raises(ValueError, match="n_trials"):
        tune.random_search(bowl, space, 0, mode="max")
    with pytest.raises(ValueError, match="n_jobs"):
        tune.random_search(bowl, space, 4, mode="max", n_jobs=0)
    with pytest.raises(TypeError, match="picklable"):
        tune.random_search(lambda p, b: 0.0, space, 4, mode="max", n_jobs=2)
    with pytest.raises(ValueError, match="eta"):
        tune.successive_halving(by_x, space, 4, mode="max", eta=1)
    with pytest.raises(ValueError, match="max_budget"):
        tune.successive_halving(by_x, space, 4, mode="max", min_budget=4, max_budget=2)
    with pytest.raises(TypeError, match="budget"):
        tune.successive_halving(lambda p: 0.0, space, 4, mode="max")
    with pytest.raises(TypeError, match="callable"):
        tune.random_search("bowl", space, 4, mode="max")


# ---- random search and determinism -------------------------------------------------------------------------
SPACE = {"lr": tune.loguniform(1e-4, 1), "x": tune.uniform(0, 1), "n": tune.randint(1, 4), "fixed": "a"}


def test_random_search_is_deterministic_by_seed_and_finds_the_best():
    a = tune.random_search(bowl, SPACE, 12, mode="max", seed=3)
    b = tune.random_search(bowl, SPACE, 12, mode="max", seed=3)
    c = tune.random_search(bowl, SPACE, 12, mode="max", seed=4)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.params for t in a.trials] != [t.params for t in c.trials]
    # a trial's parameters depend on (seed, trial) only: more trials keep the first ones
    more = tune.random_search(bowl, SPACE, 20, mode="max", seed=3)
    assert [t.params for t in more.trials[:12]] == [t.params for t in a.trials]
    scores = [bowl(t.params, None) for t in a.trials]
    assert a.best_score == max(scores) and a.best_params == a.trials[int(np.argmax(scores))].params
    assert all(t.params["fixed"] == "a" for t in a.trials)
    low = tune.random_search(bowl, SPACE, 12, mode="min", seed=3)  # same trials, the other end wins
    assert low.best_score == min(scores)
    # the one-argument objective works too
    one = tune.random_search(lambda p: bowl(p, None), SPACE, 12, mode="max", seed=3)
    assert one.best_score == a.best_score


def test_objective_habits_edited_params_and_array_scores():
    def pops(params, budget):
        return params.pop("x")  # edits its own copy: the recorded params keep x

    result = tune.random_search(pops, SPACE, 4, mode="max", seed=0)
    assert all("x" in t.params and t.score == t.params["x"] for t in result.trials)
    arrays = tune.random_search(lambda p: np.array([p["x"]], np.float32), SPACE, 4, mode="max", seed=0)
    assert [t.score for t in arrays.trials] == [float(np.float32(t.params["x"])) for t in arrays.trials]
    with pytest.warns(RuntimeWarning, match="failed"):
        mixed = tune.random_search(lambda p: np.ones(2) if p["x"] > 0.5 else 1.0, SPACE, 8, mode="max", seed=0)
    assert {t.ok for t in mixed.trials} == {True, False} and mixed.best_score == 1.0


# ---- coarse to fine ----------------------------------------------------------------------------------------
def test_coarse_to_fine_narrows_around_the_known_optimum():
    space = {"lr": tune.loguniform(1e-5, 1), "x": tune.uniform(-2, 2), "opt": tune.choice(["a", "b"])}
    result = tune.coarse_to_fine(bowl, space, 24, rounds=3, seed=0, mode="max")
    assert len(result.trials) == 72 and [t.round for t in result.trials] == [0] * 24 + [1] * 24 + [2] * 24
    widths = [(math.log10(s["lr"].high / s["lr"].low), s["x"].high - s["x"].low) for s in result.spaces]
    for (lr0, x0), (lr1, x1) in zip(widths, widths[1:]):
        assert lr1 < 0.75 * lr0 and x1 < 0.75 * x0  # each round narrower
    final = result.spaces[-1]
    assert final["lr"].low < 10**-2.5 < final["lr"].high and final["x"].low < 0.3 < final["x"].high
    assert widths[-1][0] < 0.4 * widths[0][0] and widths[-1][1] < 0.4 * widths[0][1]
    # the later rounds find better trials than the coarse one
    best_by_round = [max(t.score for t in result.trials if t.round == r) for r in range(3)]
    assert best_by_round[2] > best_by_round[0] and result.best_score > -0.02
    assert abs(math.log10(result.best_params["lr"]) + 2.5) < 0.15 and abs(result.best_params["x"] - 0.3) < 0.1
    # nested: each round inside the previous one (log ranges narrowed on the log axis)
    for outer, inner in zip(result.spaces, result.spaces[1:]):
        assert outer["lr"].low <= inner["lr"].low < inner["lr"].high <= outer["lr"].high


def test_narrow_integers_and_choices():
    space = {"n": tune.lograndint(1, 1025), "opt": tune.choice(["a", "b", "c"]), "k": 7}
    trials = [
        tune.Trial(i, {"n": n, "opt": o, "k": 7}, score=s, status="ok")
        for i, (n, o, s) in enumerate([(64, "b", 1.0), (128, "c", 0.9), (2, "a", 0.1), (1000, "a", 0.0)])
    ]
    finer = tune.narrow(space, trials, mode="max", keep=0.5)
    assert finer["k"] == 7 and finer["opt"].options == ["b", "c"]
    n = finer["n"]
    assert n.log and n.low <= 64 and n.high > 128 and n.low > 1 and n.high < 1025
    # [64, 128] widened by 0.1 of the log width on each side (a factor 1025 ** 0.1 ~ 2)
    assert n.low == math.floor(64 / 1025**0.1) and n.high == math.floor(128 * 1025**0.1) + 1


# ---- successive halving -----------------------------------------------------------------------------------
def test_successive_halving_keeps_the_best_and_spends_the_right_budget():
    space = {"x": tune.uniform(0, 1)}
    result = tune.successive_halving(by_x, space, 8, min_budget=1, eta=2, mode="max", seed=0)
    xs = sorted((t.params["x"] for t in result.trials), reverse=True)
    reached = {t.params["x"]: t.budget for t in result.trials}
    # 8 trials get 1 epoch, the best 4 get 2, the best 2 get 4, the best gets 8
    assert [reached[x] for x in xs] == [8, 4, 2, 2, 1, 1, 1, 1]
    assert result.best_params["x"] == xs[0] and result.best.scores == {1: xs[0], 2: xs[0], 4: xs[0], 8: xs[0]}
    assert result.budget_spent == 8 * 1 + 4 * 2 + 2 * 4 + 1 * 8  # not resumable: each rung from scratch
    # max_budget caps the last rung; eta=3 keeps a third
    capped = tune.successive_halving(by_x, space, 9, min_budget=1, max_budget=9, eta=3, mode="max", seed=0)
    assert sorted(t.budget for t in capped.trials) == [1] * 6 + [3] * 2 + [9]
    assert capped.budget_spent == 9 + 3 * 3 + 9
    # a lone survivor still goes on to max_budget
    lone = tune.successive_halving(by_x, space, 2, min_budget=1, max_budget=8, mode="max", seed=0)
    assert lone.best.budget == 8 and list(lone.best.scores) == [1, 2, 4, 8] and lone.budget_spent == 2 + 2 + 4 + 8
    # lower is better: the smallest x survives
    low = tune.successive_halving(by_x, space, 8, mode="min", seed=0)
    assert low.best_params["x"] == xs[-1] and low.best.budget == 8


def test_successive_halving_resumes_survivors_from_their_state():
    counting = Counting()
    result = tune.successive_halving(counting, {"x": tune.uniform(0, 1)}, 8, min_budget=1, mode="max", seed=0)
    best_x = result.best_params["x"]
    assert [(trained, budget) for x, trained, budget in counting.calls if x == best_x] == [
        (0, 1),
        (1, 2),
        (2, 4),
        (4, 8),
    ]
    assert result.budget_spent == 8 * 1 + 4 * 1 + 2 * 2 + 1 * 4  # only the epochs added


# ---- failed trials -----------------------------------------------------------------------------------------
def test_failed_trials_are_recorded_never_best():
    space = {"x": tune.uniform(0, 1)}
    with pytest.warns(RuntimeWarning, match="trials failed"):
        result = tune.random_search(flaky, space, 30, mode="max", seed=0)
    failed = [t for t in result.trials if not t.ok]
    assert {t.params["x"] > 0.8 or t.params["x"] < 0.2 for t in failed} == {True}
    assert any("ZeroDivisionError: boom" in t.error for t in failed)
    assert any("returned nan" in t.error for t in failed)
    ok_xs = [t.params["x"] for t in result.trials if t.ok]
    assert result.best_params["x"] == max(ok_xs) and math.isfinite(result.best_score)
    assert all(math.isnan(t.score) for t in failed)
    table = result.table()
    assert [row["status"] for row in table[-len(failed) :]] == ["failed"] * len(failed)  # last in the table
    with pytest.warns(RuntimeWarning):
        low = tune.random_search(flaky, space, 30, mode="min", seed=0)  # NaN is not the lowest either
    assert low.best_params["x"] == min(ok_xs)
    with pytest.raises(RuntimeError, match="every trial failed"):
        tune.random_search(lambda p: 1 / 0, space, 3, mode="max")
    with pytest.raises(RuntimeError, match="not a number"):
        tune.random_search(lambda p: "0.9", space, 2, mode="max")
    with pytest.warns(RuntimeWarning):  # a failing trial is never promoted by successive halving
        halving = tune.successive_halving(flaky, space, 16, mode="max", seed=0)
    assert halving.best.ok and 0.2 <= halving.best_params["x"] <= 0.8


# ---- results: table, pandas, plot --------------------------------------------------------------------------
def test_table_text_and_plot(tmp_path):
    result = tune.coarse_to_fine(bowl, {**SPACE, "opt": tune.choice(["adam", "sgd"])}, 8, rounds=2, mode="max")
    table = result.table()
    assert isinstance(table, list) and len(table) == 16 and table[0]["score"] == result.best_score
    assert list(table[0])[:6] == ["number", "round", "budget", "score", "status", "seconds"]
    text = str(table)
    assert text.splitlines()[0].split() == [
        "number",
        "round",
        "budget",
        "score",
        "status",
        "seconds",
        "lr",
        "x",
        "n",
        "fixed",
        "opt",
    ]
    assert len(text.splitlines()) == 17 and f"{result.best_score:.4g}" in text.splitlines()[1]
    assert "TuneResult(coarse_to_fine" in repr(result)
    split = [line.split() for line in text.splitlines()]
    assert [line.split() for line in str(table[:3]).splitlines()] == split[:4]  # a slice prints as a table too
    pytest.importorskip("matplotlib")
    import matplotlib.image

    path = result.plot(tmp_path / "scores.png")
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 600 and image[..., :3].std() > 0.05


def test_to_pandas():
    pd = pytest.importorskip("pandas")
    result = tune.random_search(bowl, SPACE, 4, mode="max")
    frame = result.to_pandas()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 4 and frame["score"].iloc[0] == result.best_score


# ---- real fits on the digits -------------------------------------------------------------------------------
def test_random_search_on_digits_matches_a_refit():
    objective = digits_objective(epochs=3)
    assert objective.mode == "max"
    result = tune.random_search(objective, DIGITS_SPACE, 4, seed=0)
    assert result.best_score > 0.85 and result.budget_spent == 4 * 3 and result.best.budget == 3
    # the best score is what a plain fit of the best params gives
    model, opt = build_mlp(result.best_params)
    x, y, xv, yv = digits()
    gf.train.fit(model, "cross_entropy", opt, x, y, epochs=3, batch_size=64, verbose=0)
    assert gf.train.evaluate(model, "cross_entropy", xv, yv)["accuracy"] == result.best_score


def test_successive_halving_on_digits_resumes_bitwise_for_any_n_jobs():
    objective = digits_objective()
    serial = tune.successive_halving(objective, DIGITS_SPACE, 4, min_budget=1, max_budget=4, seed=0)
    best = serial.best
    assert best.budget == 4 and serial.budget_spent == 4 + 2 * 1 + 1 * 2
    score, _ = objective(best.params, 4)  # from scratch: 4 epochs in one go
    assert score == best.score and score > 0.85
    # in 2 processes of 1 thread each, the survivors' states crossing between processes: bitwise the same
    parallel = tune.successive_halving(objective, DIGITS_SPACE, 4, min_budget=1, max_budget=4, seed=0, n_jobs=2)
    assert [t.scores for t in parallel.trials] == [t.scores for t in serial.trials]
    assert parallel.budget_spent == serial.budget_spent


def test_fit_objective_refuses_training_metrics_and_fit_arguments():
    pytest.importorskip("sklearn")
    x, y, xv, yv = digits()
    with pytest.raises(ValueError, match="overfitting"):
        tune.fit_objective(build_mlp, x, y, validation_data=(xv, yv), metric="accuracy")
    with pytest.raises(ValueError, match="validation_data"):
        tune.fit_objective(build_mlp, x, y, metric="val_loss")
    with pytest.raises(TypeError, match="callbacks is set by the search"):
        tune.fit_objective(build_mlp, x, y, validation_data=(xv, yv), callbacks=[])
    bad = tune.fit_objective(lambda p: "model", x, y, validation_data=(xv, yv))
    with pytest.raises(RuntimeError, match="must return"):
        tune.random_search(bad, DIGITS_SPACE, 1)


# ---- optuna ------------------------------------------------------------------------------------------------
def test_optuna_suggest_and_pruning():
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {
        "lr": tune.loguniform(1e-4, 1),
        "n": tune.lograndint(16, 65),
        "arch": tune.choice([(8,), (8, 8)]),
        "act": tune.choice(["relu", "tanh"]),
        "fixed": 3,
    }
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    study.optimize(lambda trial: seen.append(tune.optuna_suggest(trial, space)) or 0.0, n_trials=30)
    assert all(1e-4 <= p["lr"] <= 1 and 16 <= p["n"] <= 64 and p["fixed"] == 3 for p in seen)
    assert {p["arch"] for p in seen} == {(8,), (8, 8)} and {p["act"] for p in seen} == {"relu", "tanh"}
    dist = study.trials[0].distributions
    assert dist["lr"].log and dist["n"].log and dist["n"].high == 64

    # a fit_objective through optuna: every epoch is reported; a pruner that always prunes stops it
    objective = digits_objective(epochs=3)
    pruned = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.01))
    pruned.optimize(tune.optuna_objective(objective, DIGITS_SPACE), n_trials=2)
    assert [t.state for t in pruned.trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert [list(t.intermediate_values) for t in pruned.trials] == [[0], [0]]
    kept = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    kept.optimize(tune.optuna_objective(objective, DIGITS_SPACE), n_trials=2)
    assert [list(t.intermediate_values) for t in kept.trials] == [[0, 1, 2]] * 2
    assert kept.best_value == pytest.approx(kept.best_trial.intermediate_values[2]) and kept.best_value > 0.8


def test_gf_tune_is_lazy_and_exported():
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, gradfuse as gf; a = 'gradfuse.tune' in sys.modules; "
            "gf.tune.loguniform(1e-4, 1); print(a, 'gradfuse.tune' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["False", "True"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "tune" in gf.__all__


def test_tune_command(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from gradfuse.__main__ import main

    path = tmp_path / "tune.png"
    assert main(["tune", "--method", "halving", "--trials", "4", "--epochs", "2", "--plot", str(path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["number", "round", "budget", "score", "status", "seconds"]
    # 4 trials of 1 epoch, then the best 2 resumed for 1 more
    assert "4 trials, 6 epochs" in out and "best val_accuracy 0." in out and path.stat().st_size > 10_000
    # the two trials that reached 2 epochs first, the best of them on top
    assert [line.split()[2] for line in lines[1:5]] == ["2", "2", "1", "1"]
    assert float(lines[1].split()[3]) >= float(lines[2].split()[3])


def test_an_objective_the_workers_cannot_import_says_what_to_do():
    # a notebook's habit: the objective lives in __main__ without a file; n_jobs=2 cannot run it there
    import subprocess
    import sys

    code = (
        "import gradfuse as gf\n"
        "def f(p, b):\n    return p['x']\n"
        "try:\n    gf.tune.random_search(f, {'x': gf.tune.uniform(0, 1)}, 4, mode='max', n_jobs=2)\n"
        "except RuntimeError as e:\n    print('raised:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "raised: random_search: a worker process died" in out.stdout and "define it in a module" in out.stdout
