"""gradfuse.sklearn (issue 13, item 2): MLPClassifier / MLPRegressor as scikit-learn estimators.

sklearn's own estimator checks (every one of them, none skipped or expected to fail), the training
trajectory against sklearn.neural_network's estimators from the same weights (loss_curve_ equal to
1e-9 in float64 for sgd), the fitted attributes, partial_fit, warm_start, early stopping, pickling,
and the tools users put estimators in (Pipeline, GridSearchCV, RandomizedSearchCV,
HalvingRandomSearchCV). Everything runs on one thread: the data are tiny, and on a shared machine
two OpenMP threads spend more time waiting for each other than computing.
"""

from __future__ import annotations

import io
import pickle
import warnings
from contextlib import redirect_stdout

import numpy as np
import pytest

import gradfuse as gf

sklearn = pytest.importorskip("sklearn")
from sklearn import datasets  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.experimental import enable_halving_search_cv  # noqa: E402, F401
from sklearn.model_selection import (  # noqa: E402
    GridSearchCV,
    HalvingRandomSearchCV,
    RandomizedSearchCV,
    train_test_split,
)
from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from gradfuse.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    before = gf.get_num_threads()
    gf.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield
    gf.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    x, y = datasets.load_digits(return_X_y=True)
    return train_test_split(x / 16.0, y, test_size=0.25, random_state=0, stratify=y)


# ---- sklearn's estimator checks: all of them pass (small nets and max_iter keep them quick) --------------
@parametrize_with_checks(
    [
        MLPClassifier(hidden_layer_sizes=(16,), max_iter=100, learning_rate_init=0.01, random_state=0),
        MLPRegressor(hidden_layer_sizes=(16,), max_iter=100, learning_rate_init=0.01, random_state=0),
    ]
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---- the same trajectory as sklearn's estimators from the same weights ---------------------------------------
def _from_same_weights(ours, theirs, x, y, epochs):
    """Fit both for one epoch, give sklearn's ours weights, then warm-start both (fresh optimizer
    state on both sides, as sklearn's warm start does) for `epochs` more: their loss_curve_ tails."""
    ours.fit(x, y)
    theirs.fit(x, y)
    theirs.coefs_ = [w.astype(np.float64) for w in ours.coefs_]
    theirs.intercepts_ = [b.astype(np.float64) for b in ours.intercepts_]
    ours.set_params(warm_start=True, max_iter=epochs).fit(x, y)
    theirs.set_params(warm_start=True, max_iter=epochs).fit(x, y)
    return np.array(ours.loss_curve_[1:]), np.array(theirs.loss_curve_[1:])


COMMON = dict(batch_size=20, shuffle=False, max_iter=1, n_iter_no_change=1000, random_state=0)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel", "regression"])
def test_loss_curve_matches_sklearn_from_the_same_weights(task, solver):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 6))
    if task == "multiclass":
        y = rng.integers(0, 3, 120)
    elif task == "binary":
        y = np.where(rng.random(120) > 0.5, "yes", "no")
    elif task == "multilabel":
        y = (rng.random((120, 3)) > 0.5).astype(np.int64)
    else:
        y = rng.standard_normal((120, 2))
    kw = dict(COMMON, hidden_layer_sizes=(8, 5), activation="tanh", alpha=0.01, solver=solver, learning_rate_init=0.05)
    if task == "regression":
        ours, theirs = MLPRegressor(dtype="float64", **kw), SkRegressor(**kw)
    else:
        ours, theirs = MLPClassifier(dtype="float64", **kw), SkClassifier(**kw)
    got, want = _from_same_weights(ours, theirs, x, y, epochs=6)
    assert len(got) == len(want) == 6
    # sgd: the same update exactly; adam: sklearn adds eps to sqrt(v_hat) * sqrt(1 - beta2^t) (torch's
    # and gradfuse's: to sqrt(v_hat)), a difference of ~eps in each step
    np.testing.assert_allclose(got, want, rtol=1e-9 if solver == "sgd" else 1e-5)
    assert ours.n_outputs_ == theirs.n_outputs_ and ours.out_activation_ == theirs.out_activation_
    assert ours.t_ == theirs.t_ and ours.n_layers_ == theirs.n_layers_
    atol = 1e-7 if solver == "sgd" else 1e-3
    if task == "regression":
        np.testing.assert_allclose(ours.predict(x), theirs.predict(x), rtol=0, atol=atol)
    else:
        np.testing.assert_allclose(ours.predict_proba(x), theirs.predict_proba(x), rtol=0, atol=atol)
        if solver == "sgd":
            np.testing.assert_array_equal(ours.predict(x), theirs.predict(x))
        np.testing.assert_array_equal(ours.classes_, theirs.classes_)


def test_alpha_and_loss_are_sklearns_in_float32_too():
    """The default dtype (float32) follows the float64 trajectory to float32 accuracy."""
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((100, 5)), rng.integers(0, 4, 100)
    kw = dict(COMMON, hidden_layer_sizes=(7,), alpha=0.1, solver="sgd", learning_rate_init=0.05)
    got, want = _from_same_weights(MLPClassifier(**kw), SkClassifier(**kw), x, y, epochs=4)
    np.testing.assert_allclose(got, want, rtol=2e-5)


# ---- what users do with a classifier -----------------------------------------------------------------------
def test_digits_accuracy_proba_and_attributes(digits):
    x_train, x_test, y_train, y_test = digits
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=30, learning_rate_init=0.01, random_state=0)
    clf.fit(x_train, y_train)
    assert clf.score(x_test, y_test) >= 0.96
    proba = clf.predict_proba(x_test)
    assert proba.shape == (len(x_test), 10) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(clf.predict(x_test), clf.classes_[proba.argmax(axis=1)])
    np.testing.assert_allclose(clf.predict_log_proba(x_test), np.log(proba))
    np.testing.assert_array_equal(clf.classes_, np.arange(10))
    assert clf.n_features_in_ == 64 and clf.n_outputs_ == 10 and clf.out_activation_ == "softmax"
    assert clf.n_iter_ == 30 == len(clf.loss_curve_) and clf.t_ == 30 * len(x_train)
    assert clf.loss_ == clf.loss_curve_[-1] and clf.best_loss_ == min(clf.loss_curve_)
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    assert [w.shape for w in clf.coefs_] == [(64, 64), (64, 10)] and [b.shape for b in clf.intercepts_] == [
        (64,),
        (10,),
    ]
    assert clf.coefs_[0].dtype == np.float32  # the documented default
    assert isinstance(clf.model_, gf.nn.Sequential) and isinstance(clf.optimizer_, gf.optim.Adam)


def test_coefs_are_views_of_the_weights(digits):
    x_train, x_test, y_train, _ = digits
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0).fit(x_train, y_train)
    clf.coefs_[-1][:] = 0
    clf.intercepts_[-1][:] = np.arange(10)  # every sample's largest logit is now class 9
    assert (clf.predict(x_test) == 9).all()


def test_string_labels_binary_and_one_column_y():
    x, y = datasets.load_breast_cancer(return_X_y=True)
    names = np.array(["benign", "malignant"])[y]
    clf = make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(16,), max_iter=40, learning_rate_init=0.01, random_state=0)
    )
    clf.fit(x, names)
    mlp = clf[-1]
    assert mlp.n_outputs_ == 1 and mlp.out_activation_ == "logistic" and list(mlp.classes_) == ["benign", "malignant"]
    assert clf.predict(x).dtype.kind == "U" and clf.score(x, names) > 0.97
    proba = clf.predict_proba(x)
    assert proba.shape == (len(x), 2)
    np.testing.assert_array_equal(clf.predict(x), mlp.classes_[(proba[:, 1] > 0.5).astype(int)])
    with pytest.warns(sklearn.exceptions.DataConversionWarning):  # a (n, 1) y, as sklearn warns
        MLPClassifier(max_iter=1).fit(x[:50], y[:50, None])


def test_multilabel():
    x, y = datasets.make_multilabel_classification(200, n_features=10, n_classes=4, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=200, learning_rate_init=0.01, random_state=0).fit(x, y)
    pred, proba = clf.predict(x), clf.predict_proba(x)
    assert pred.shape == proba.shape == (200, 4) and set(np.unique(pred)) <= {0, 1}
    np.testing.assert_array_equal(pred, (proba > 0.5).astype(int))
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 4 and (clf.classes_ == np.arange(4)).all()

    # as good as sklearn's, over three seeds (one seed's training accuracy varies by +-0.05)
    def accuracy(cls, seed):
        return (
            cls(hidden_layer_sizes=(32,), max_iter=200, learning_rate_init=0.01, random_state=seed).fit(x, y).predict(x)
            == y
        ).mean()

    assert (
        np.mean([accuracy(MLPClassifier, s) for s in range(3)])
        >= np.mean([accuracy(SkClassifier, s) for s in range(3)]) - 0.02
    )


def test_regressor_multi_output_and_float64_data():
    x, y = datasets.make_regression(300, 8, n_targets=3, noise=1.0, random_state=0)
    y = y / y.std()
    reg = MLPRegressor(hidden_layer_sizes=(32,), max_iter=200, learning_rate_init=0.01, random_state=0).fit(x, y)
    assert reg.predict(x).shape == (300, 3) and reg.predict(x).dtype == np.float64
    assert reg.score(x, y) > 0.95 and reg.n_outputs_ == 3 and reg.out_activation_ == "identity"
    one = MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(x, y[:, 0])
    assert one.predict(x).shape == (300,)
    # half the mean squared error, as sklearn's loss_ (L2 penalty off)
    plain = MLPRegressor(hidden_layer_sizes=(8,), max_iter=1, alpha=0, batch_size=300, random_state=0)
    plain.fit(x, y[:, 0])
    before = MLPRegressor(hidden_layer_sizes=(8,), max_iter=1, alpha=0, random_state=0)
    before._check_params()
    model = before._build_model(8, 1, plain._seed)  # the weights plain started from
    start = model.predict(x.astype(np.float32)).ravel()
    np.testing.assert_allclose(plain.loss_, 0.5 * np.mean((start - y[:, 0]) ** 2), rtol=1e-5)


def test_dtype_float64_keeps_float64_weights():
    x, y = datasets.make_classification(100, 6, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, dtype="float64", random_state=0).fit(x, y)
    assert all(w.dtype == np.float64 for w in clf.coefs_ + clf.intercepts_)


def test_feature_names():
    pd = pytest.importorskip("pandas")
    x, y = datasets.load_iris(return_X_y=True, as_frame=True)
    assert isinstance(x, pd.DataFrame)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0).fit(x, y)
    np.testing.assert_array_equal(clf.feature_names_in_, x.columns)
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(x.rename(columns=lambda c: c + "!"))


# ---- gradfuse's own parameters -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra",
    [
        dict(batch_norm=True),
        dict(dropout=0.2),
        dict(batch_norm=True, dropout=0.1, activation="gelu"),
        dict(solver="AdamW"),
        dict(solver="nadam"),
        dict(solver="sgd", learning_rate_init=0.1),
        dict(schedule="cosine"),
        dict(precision="bf16"),
    ],
    ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()),
)
def test_gradfuse_options_train(digits, extra):
    x_train, x_test, y_train, y_test = digits
    clf = MLPClassifier(
        **dict(dict(hidden_layer_sizes=(64,), max_iter=15, learning_rate_init=0.01, random_state=0), **extra)
    )
    clf.fit(x_train, y_train)
    assert clf.score(x_test, y_test) > 0.9
    kinds = [type(layer).__name__ for layer in clf.model_.layers]
    assert ("BatchNorm" in kinds) == bool(extra.get("batch_norm")) and ("Dropout" in kinds) == bool(
        extra.get("dropout")
    )
    assert type(clf.optimizer_).__name__.lower() == extra.get("solver", "adam").lower()
    assert clf.model_.precision == extra.get("precision", "fp32")
    if "schedule" in extra:  # cosine annealing over max_iter epochs: at the end, lr 0
        assert clf.optimizer_.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_sgd_learning_rate_rules():
    x, y = datasets.make_classification(100, 6, random_state=0)
    inv = MLPClassifier(solver="sgd", learning_rate="invscaling", power_t=0.5, max_iter=3, random_state=0).fit(x, y)
    assert inv.optimizer_.param_groups[0]["lr"] == pytest.approx(0.001 / (300 + 1) ** 0.5)
    assert inv.optimizer_.param_groups[0]["momentum"] == 0.9 and inv.optimizer_.param_groups[0]["nesterov"]
    # adaptive: tol so large that no epoch after the first improves: lr / 5 after epochs 4 and 7
    ada = MLPClassifier(solver="sgd", learning_rate="adaptive", tol=1e9, n_iter_no_change=2, max_iter=9, random_state=0)
    ada.fit(x, y)
    assert ada.n_iter_ == 9 and ada.optimizer_.param_groups[0]["lr"] == pytest.approx(0.001 / 5**2)
    # any other solver stops there instead
    stop = MLPClassifier(tol=1e9, n_iter_no_change=2, max_iter=9, random_state=0).fit(x, y)
    assert stop.n_iter_ == 4


def test_early_stopping_keeps_the_best_validation_weights():
    x, y = datasets.load_digits(return_X_y=True)
    clf = MLPClassifier(
        hidden_layer_sizes=(32,), early_stopping=True, n_iter_no_change=3, max_iter=60, random_state=0
    ).fit(x / 16, y)
    assert clf.best_loss_ is None and len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_) > 0.9
    # sklearn's split, not stratified: its n_outputs_ is the number of classes here
    _, x_val, _, y_val = train_test_split(x / 16, y, random_state=clf._seed, test_size=0.1)
    assert clf.score(x_val, y_val) == pytest.approx(clf.best_validation_score_)


def test_verbose_prints_sklearns_lines():
    x, y = datasets.make_classification(60, 4, random_state=0)
    out = io.StringIO()
    with redirect_stdout(out):
        MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, verbose=True, random_state=0).fit(x, y)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("Iteration 1, loss = ")


def test_convergence_warning_at_max_iter():
    x, y = datasets.make_classification(60, 4, random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(x, y)
    assert any(issubclass(w.category, ConvergenceWarning) for w in caught)


# ---- partial_fit, warm_start, pickling ------------------------------------------------------------------------
def test_partial_fit_needs_classes_first_and_continues(digits):
    x_train, x_test, y_train, y_test = digits
    clf = MLPClassifier(hidden_layer_sizes=(32,), learning_rate_init=0.01, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(x_train, y_train)
    halves = np.array_split(np.arange(len(x_train)), 2)
    clf.partial_fit(x_train[halves[0]], y_train[halves[0]], classes=np.arange(10))
    assert clf.n_iter_ == 1 and clf.t_ == len(halves[0])
    for _ in range(8):
        for part in halves:
            clf.partial_fit(x_train[part], y_train[part])
    assert clf.n_iter_ == 17 and len(clf.loss_curve_) == 17 and clf.score(x_test, y_test) > 0.9
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    with pytest.raises(ValueError, match="classes not in"):
        clf.partial_fit(x_train[:5], np.full(5, 11))
    with pytest.raises(ValueError, match="early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(x_train, y_train, classes=np.arange(10))


def test_partial_fit_labels_missing_from_a_batch():
    x, y = datasets.make_classification(90, 5, n_informative=3, n_classes=3, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
    clf.partial_fit(x[y != 2], y[y != 2], classes=[0, 1, 2])  # class 2 not in this batch
    assert clf.predict_proba(x).shape == (90, 3) and clf.out_activation_ == "softmax"


def test_warm_start_continues_and_refuses_new_classes():
    x, y = datasets.make_classification(100, 5, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, warm_start=True, random_state=0).fit(x, y)
    weights = clf.coefs_[0].copy()
    clf.fit(x, y)
    assert len(clf.loss_curve_) == 6 and clf.n_iter_ == 6 and not np.array_equal(weights, clf.coefs_[0])
    with pytest.raises(ValueError, match="warm_start can only be used"):
        clf.fit(x, np.where(y == 1, 2, y))
    cold = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    first = cold.fit(x, y).coefs_[0].copy()
    np.testing.assert_array_equal(cold.fit(x, y).coefs_[0], first)  # refitting starts afresh, reproducibly


def test_pickle_round_trip_predicts_and_continues_bitwise(digits):
    x_train, x_test, y_train, _ = digits
    clf = MLPClassifier(hidden_layer_sizes=(16,), batch_norm=True, dropout=0.1, schedule="cosine", random_state=0)
    clf.set_params(max_iter=3).fit(x_train, y_train)
    copy = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(copy.predict_proba(x_test), clf.predict_proba(x_test))
    assert copy.get_params() == clf.get_params() and copy.loss_curve_ == clf.loss_curve_
    for est in (clf, copy):  # the optimizer's and schedule's state travel along: the same next epochs
        est.partial_fit(x_train, y_train)
        est.partial_fit(x_train, y_train)
    np.testing.assert_array_equal(copy.coefs_[0], clf.coefs_[0])
    assert copy.loss_curve_ == clf.loss_curve_
    reg = MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(x_train, y_train.astype(float))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(reg)).predict(x_test), reg.predict(x_test))


def test_clone_get_params_set_params():
    clf = MLPClassifier(hidden_layer_sizes=(5, 3), solver="sgd", batch_norm=True, precision="bf16", random_state=3)
    params = clf.get_params()
    assert params["hidden_layer_sizes"] == (5, 3) and params["batch_norm"] is True and params["precision"] == "bf16"
    twin = clone(clf)
    assert twin is not clf and twin.get_params() == params
    assert twin.set_params(alpha=0.5, dropout=0.3) is twin and twin.alpha == 0.5 and clf.alpha == 0.0001
    for name in ("hidden_layer_sizes", "activation", "solver", "alpha", "batch_size", "learning_rate",
                 "learning_rate_init", "power_t", "max_iter", "shuffle", "random_state", "tol", "verbose",
                 "warm_start", "momentum", "nesterovs_momentum", "early_stopping", "validation_fraction",
                 "beta_1", "beta_2", "epsilon", "n_iter_no_change", "max_fun"):  # fmt: skip
        assert params[name] == SkClassifier().get_params()[name] or name in (
            "hidden_layer_sizes",
            "solver",
            "random_state",
        )
    assert MLPRegressor().get_params()["loss"] == "squared_error"


def test_unfitted_and_refused():
    x, y = datasets.make_classification(40, 4, random_state=0)
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(x)
    with pytest.raises(ValueError, match="lbfgs"):
        MLPClassifier(solver="lbfgs").fit(x, y)
    with pytest.raises(ValueError, match="'solver' parameter"):
        MLPClassifier(solver="nope").fit(x, y)
    with pytest.raises(ValueError, match="poisson|squared_error"):
        MLPRegressor(loss="poisson").fit(x, y)
    with pytest.raises(ValueError, match="'activation'"):
        MLPClassifier(activation="softplus").fit(x, y)
    with pytest.raises(ValueError, match="'hidden_layer_sizes'"):
        MLPClassifier(hidden_layer_sizes=(4, 0)).fit(x, y)
    with pytest.raises(ValueError, match="bf16"):
        MLPClassifier(precision="bf16", dtype="float64").fit(x, y)
    with pytest.raises(ValueError, match="schedule"):
        MLPClassifier(solver="sgd", learning_rate="adaptive", schedule="cosine").fit(x, y)
    clf = MLPClassifier(hidden_layer_sizes=(3,), max_iter=1).fit(x, y)
    with pytest.raises(ValueError, match="features"):
        clf.predict(x[:, :3])


# ---- inside sklearn's tools ---------------------------------------------------------------------------------
SMALL = dict(hidden_layer_sizes=(16,), max_iter=20, learning_rate_init=0.01, random_state=0)


def test_pipeline_and_grid_search(digits):
    x_train, x_test, y_train, y_test = digits
    pipe = make_pipeline(StandardScaler(), MLPClassifier(**SMALL))
    grid = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-1], "mlpclassifier__batch_norm": [False, True]}, cv=2)
    grid.fit(x_train, y_train)
    assert len(grid.cv_results_["params"]) == 4 and grid.best_score_ > 0.9
    assert grid.score(x_test, y_test) > 0.9


def test_randomized_search_log_uniform(digits):
    from scipy.stats import loguniform

    x_train, _, y_train, _ = digits
    search = RandomizedSearchCV(
        MLPClassifier(**SMALL),
        {"learning_rate_init": loguniform(1e-3, 1e-1), "alpha": loguniform(1e-5, 1e-1)},
        n_iter=3,
        cv=2,
        random_state=0,
    ).fit(x_train, y_train)
    assert len(search.cv_results_["params"]) == 3 and search.best_score_ > 0.85


def test_halving_random_search_on_epochs():
    x, y = datasets.make_regression(200, 6, noise=0.5, random_state=0)
    search = HalvingRandomSearchCV(
        MLPRegressor(hidden_layer_sizes=(16,), learning_rate_init=0.01, random_state=0),
        {"alpha": [1e-4, 1e-2, 1e-1], "hidden_layer_sizes": [(8,), (16,), (16, 8)]},
        resource="max_iter",
        min_resources=10,
        max_resources=40,
        n_candidates=4,
        factor=2,
        cv=2,
        random_state=0,
    ).fit(x, y / y.std())
    assert set(search.cv_results_["param_max_iter"]) == {10, 20, 40}
    assert search.best_estimator_.n_iter_ <= 40 and search.best_score_ > 0.5


# ---- the benchmark suite runs (its numbers are the README's, never asserted) ----------------------------------
def test_bench_sklearn_runs_on_a_small_folder(tmp_path):
    import argparse

    from gradfuse.bench import SUITES
    from test_datasets import fake_mnist

    fake_mnist(tmp_path, n_train=200, n_test=40)
    parser = argparse.ArgumentParser()
    SUITES["sklearn"].add_arguments(parser)
    args = parser.parse_args(["--quick", "--epochs", "1", "--data", str(tmp_path), "--threads", "1"])
    result = SUITES["sklearn"].run(args)
    assert set(result["sets"]) == {"mnist", "digits"}
    for s in result["sets"].values():
        assert set(s["cells"]) == {"gradfuse", "sklearn", "sklearn float32"}
        assert all(c["s_per_epoch"] > 0 and 0 <= c["accuracy"] <= 1 for c in s["cells"].values())
    assert "target: >= 5x" in SUITES["sklearn"].report(result)
