"""scikit-learn estimators trained by gradfuse: MLPClassifier and MLPRegressor.

    from gradfuse.sklearn import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=(512, 512), max_iter=20, random_state=0).fit(X, y)
    clf.predict(X); clf.predict_proba(X); clf.score(X, y)

Drop-in for sklearn.neural_network's estimators of the same names: the same parameters with the
same defaults and meanings, the same fitted attributes, the same stopping rules (tol /
n_iter_no_change on the training loss, or on the validation score with early_stopping), the same
losses (log-loss; half the squared error for the regressor, averaged over the outputs in loss_
and, as sklearn's gradient, summed over them in training) and L2 penalty (alpha / (2 batch) *
sum of squared weights, biases left out). Underneath, the model is a gf.nn.Sequential of fused
Dense layers trained by gf.train.fit with a gradfuse optimizer.

gradfuse's own parameters, after sklearn's:

- solver: sklearn's "adam" and "sgd", or the name of any gradfuse optimizer ("adamw", "nadam",
  "radam", "rmsprop", "adagrad", "lion", ...; case does not matter), built with lr=learning_rate_init
  (and betas=(beta_1, beta_2), eps=epsilon where it takes them). "lbfgs" (and gradfuse's other
  closure-driven methods) is refused: sklearn's full-batch L-BFGS is not mapped onto gf.optim.LBFGS
  yet; max_fun, which only L-BFGS uses, is accepted and ignored.
- batch_norm: a BatchNorm between each hidden Dense layer and its activation.
- dropout: the drop probability of a Dropout after each hidden activation (0: none).
- schedule: None, "cosine" (cosine annealing to 0 over max_iter epochs), or a callable
  (optimizer) -> gf.optim.lr_scheduler scheduler, stepped once per epoch. learning_rate
  ("constant", "invscaling", "adaptive") keeps sklearn's meaning and, as in sklearn, only acts with
  solver="sgd"; a schedule other than None needs learning_rate="constant".
- precision: "fp32" or "bf16" (mixed precision: float32 weights, bf16 activations and GEMMs).
- dtype: "float32" (default) or "float64", the dtype of the weights and of the computation. Input of
  any numeric dtype (sklearn's float64 included) is converted to it once per fit / predict;
  coefs_ and intercepts_ have it. predict_proba and the regressor's predict return float64, as
  sklearn's estimators give for float64 input.

Needs scikit-learn >= 1.6 (sklearn.utils.validation.validate_data, __sklearn_tags__); scikit-learn
is imported by this module only, never by `import gradfuse`.

Other differences from sklearn: no sample_weight; the regressor's loss="poisson" is refused; the
weights are drawn by gf.nn.init's glorot_uniform (sklearn's uniform bound sqrt(6 / (fan_in +
fan_out)); sklearn draws biases from the same range where gradfuse starts them at 0, and uses
sqrt(2 / ...) for activation="logistic"). Sparse X is accepted and converted to a dense array.
activation takes gradfuse's "leaky_relu", "gelu", "gelu_tanh" besides sklearn's four.

Fitted attributes, sklearn's: classes_ (classifier), n_features_in_, feature_names_in_ (for X
with string column names), n_iter_, t_, loss_, loss_curve_, best_loss_, validation_scores_,
best_validation_score_, n_layers_, n_outputs_, out_activation_, coefs_ and intercepts_ (views of
the weights: writing into them changes the model); and gradfuse's model_ (the gf.nn.Sequential)
and optimizer_. A fitted estimator pickles (its model as architecture + state_dict, its optimizer
state with it), so partial_fit and warm_start continue exactly after a round trip.

sklearn.utils.estimator_checks: both estimators pass every check of check_estimator (sklearn 1.9;
tests/test_sklearn_estimators.py runs them with parametrize_with_checks), none skipped or marked as
an expected failure by gradfuse. sklearn itself skips two: check_array_api_input (unless
SCIPY_ARRAY_API=1 is set) and the decision_function output check of multilabel classifiers (these
have no decision_function, as sklearn's MLPClassifier has none).
"""

from __future__ import annotations

import inspect
import numbers
import warnings

import numpy as np
import scipy.sparse
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.multiclass import _check_partial_fit_first_call, type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted, check_random_state, column_or_1d, validate_data

from . import losses, nn, optim, train
from .nn.module import architecture, build
from .regularizers import L2

__all__ = ["MLPClassifier", "MLPRegressor"]

# sklearn's activation names -> gradfuse's (the fused Dense activation); gradfuse's own pass through
_ACTIVATIONS = {
    "identity": None,
    "logistic": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "leaky_relu": "leaky_relu",
    "gelu": "gelu",
    "gelu_tanh": "gelu_tanh",
}
# the same activations as layers, for the place after a BatchNorm
_ACTIVATION_LAYERS = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU("tanh"),
}
# closure-driven optimizers: sklearn's full-batch lbfgs (max_iter iterations, max_fun evaluations,
# n_iter_ from the solver, no loss_curve_) is not mapped onto them yet
_CLOSURE_SOLVERS = {"lbfgs", "conjugategradient", "newton", "hessianfree"}
_SPARSE = ["csr", "csc", "coo"]


class _Scaled(losses.Loss):
    """A gradfuse loss with its value and its gradient each times a constant: sklearn's losses are
    gradfuse's scaled (binary log-loss summed over the outputs and averaged over samples; half the
    mean squared error, whose gradient sklearn takes as that of half the squared error summed over
    the outputs, so the trajectory of a multi-output regressor is sklearn's too)."""

    def __init__(self, loss: losses.Loss, value_factor: float, grad_factor: float):
        self.loss, self.value_factor, self.grad_factor = loss, float(value_factor), float(grad_factor)
        for key in ("classification", "takes", "activation", "counterpart", "target_kind", "unit_targets"):
            setattr(self, key, getattr(loss, key))

    def __call__(self, pred, target):
        value, grad = self.loss(pred, target)
        grad *= grad.dtype.type(self.grad_factor)
        return value * self.value_factor, grad

    def predictions(self, pred):
        return self.loss.predictions(pred)

    def labels(self, target):
        return self.loss.labels(target)


class _SklearnRules(train.Callback):
    """sklearn's end-of-epoch bookkeeping and stopping rules, run inside gf.train.fit: n_iter_, t_,
    loss_curve_; the no-improvement count on the training loss (or the validation score with
    early_stopping, keeping the best weights); the sgd learning-rate rules (invscaling after every
    epoch, adaptive: divide by 5 instead of stopping while lr > 1e-6)."""

    def __init__(self, estimator, n_samples: int, validation):
        self.est, self.n_samples, self.validation = estimator, n_samples, validation
        self.converged = False
        self.best_state = None

    def _set_lr(self, lr: float) -> None:
        for group in self.trainer.optimizer.param_groups:
            group["lr"] = lr

    def on_epoch_end(self, epoch, logs=None):
        est = self.est
        est.n_iter_ += 1
        est.t_ += self.n_samples
        est.loss_ = float(logs["loss"])
        est.loss_curve_.append(est.loss_)
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {est.loss_:.8f}")
        if self.validation is not None:
            score = est._score_output(est.model_.predict(self.validation[0]), self.validation[1])
            est.validation_scores_.append(score)
            if est.verbose:
                print(f"Validation score: {score:f}")
            worse = score < est.best_validation_score_ + est.tol
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                self.best_state = est.model_.state_dict()
        else:
            worse = est.loss_ > est.best_loss_ - est.tol
            est.best_loss_ = min(est.best_loss_, est.loss_)
        est._no_improvement_count = est._no_improvement_count + 1 if worse else 0
        sgd = est.solver == "sgd"
        if sgd and est.learning_rate == "invscaling":
            self._set_lr(float(est.learning_rate_init) / (est.t_ + 1) ** est.power_t)
        if est._no_improvement_count > est.n_iter_no_change:
            lr = float(self.trainer.optimizer.param_groups[0]["lr"])
            if sgd and est.learning_rate == "adaptive" and lr > 1e-6:
                self._set_lr(lr / 5.0)
                est._no_improvement_count = 0
                if est.verbose:
                    print(f"Setting learning rate to {lr / 5.0:f}")
                return
            if est.verbose:
                what = "Validation score" if self.validation is not None else "Training loss"
                print(
                    f"{what} did not improve more than tol={est.tol:f} for {est.n_iter_no_change} consecutive epochs."
                )
                if sgd and est.learning_rate == "adaptive":
                    print("Learning rate too small. Stopping.")
            self.converged = True
            self.trainer.stop_training = True


def _check(condition: bool, name: str, value, what: str) -> None:
    if not condition:
        raise ValueError(f"The '{name}' parameter must be {what}. Got {value!r} instead.")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, the model, the training loop."""

    def _set_params(self, kwargs: dict) -> None:
        for key, value in kwargs.items():
            setattr(self, key, value)

    # ---- parameters -------------------------------------------------------------------------------------
    def _hidden_sizes(self) -> list[int]:
        sizes = self.hidden_layer_sizes
        sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
        _check(all(_is_int(s) and s > 0 for s in sizes), "hidden_layer_sizes", self.hidden_layer_sizes, "positive ints")
        return [int(s) for s in sizes]

    def _np_dtype(self) -> np.dtype:
        try:
            dtype = np.dtype(self.dtype)
        except TypeError:
            dtype = None
        _check(dtype in (np.float32, np.float64), "dtype", self.dtype, "'float32' or 'float64'")
        return dtype

    def _optimizer_class(self):
        solver = self.solver
        _check(isinstance(solver, str), "solver", solver, "a string")
        if solver.lower() in _CLOSURE_SOLVERS:
            raise ValueError(
                f"solver={solver!r} is not supported by gradfuse.sklearn yet: use 'adam' or 'sgd' (or another "
                f"gradfuse optimizer's name, one of {sorted(optim.optimizers.__all__)})"
            )
        names = {name.lower(): name for name in optim.optimizers.__all__}
        _check(
            solver.lower() in names, "solver", solver, f"'adam', 'sgd' or a gradfuse optimizer, one of {sorted(names)}"
        )
        return getattr(optim, names[solver.lower()])

    def _check_params(self) -> None:
        self._hidden_sizes()
        self._np_dtype()
        self._optimizer_class()
        _check(self.activation in _ACTIVATIONS, "activation", self.activation, f"one of {sorted(_ACTIVATIONS)}")
        _check(isinstance(self.alpha, numbers.Real) and self.alpha >= 0, "alpha", self.alpha, "a float >= 0")
        _check(
            self.batch_size == "auto" or (_is_int(self.batch_size) and self.batch_size >= 1),
            "batch_size",
            self.batch_size,
            "'auto' or an int >= 1",
        )
        _check(
            self.learning_rate in ("constant", "invscaling", "adaptive"),
            "learning_rate",
            self.learning_rate,
            "'constant', 'invscaling' or 'adaptive'",
        )
        lr = self.learning_rate_init
        _check(isinstance(lr, numbers.Real) and lr > 0, "learning_rate_init", lr, "a float > 0")
        _check(isinstance(self.power_t, numbers.Real) and self.power_t >= 0, "power_t", self.power_t, "a float >= 0")
        _check(_is_int(self.max_iter) and self.max_iter >= 1, "max_iter", self.max_iter, "an int >= 1")
        _check(isinstance(self.tol, numbers.Real) and self.tol >= 0, "tol", self.tol, "a float >= 0")
        _check(0 <= self.momentum <= 1, "momentum", self.momentum, "in [0, 1]")
        _check(0 <= self.validation_fraction < 1, "validation_fraction", self.validation_fraction, "in [0, 1)")
        _check(0 <= self.beta_1 < 1, "beta_1", self.beta_1, "in [0, 1)")
        _check(0 <= self.beta_2 < 1, "beta_2", self.beta_2, "in [0, 1)")
        _check(self.epsilon > 0, "epsilon", self.epsilon, "> 0")
        n = self.n_iter_no_change
        _check((_is_int(n) and n >= 1) or n == np.inf, "n_iter_no_change", n, "an int >= 1 or np.inf")
        _check(0 <= self.dropout < 1, "dropout", self.dropout, "a probability in [0, 1)")
        _check(self.precision in ("fp32", "bf16"), "precision", self.precision, "'fp32' or 'bf16'")
        if self.precision == "bf16" and self._np_dtype() != np.float32:
            raise ValueError("precision='bf16' keeps float32 weights: it needs dtype='float32'")
        _check(
            self.schedule is None or self.schedule == "cosine" or callable(self.schedule),
            "schedule",
            self.schedule,
            "None, 'cosine' or a callable(optimizer) -> scheduler",
        )
        if self.schedule is not None and self.learning_rate != "constant" and self.solver == "sgd":
            raise ValueError(
                f"schedule={self.schedule!r} and learning_rate={self.learning_rate!r} would both set the "
                f"learning rate: give one of them (learning_rate='constant' with a schedule)"
            )

    # ---- the model, its loss and optimizer ----------------------------------------------------------------
    def _build_model(self, n_features: int, n_outputs: int, seed: int):
        dtype, act = self._np_dtype(), _ACTIVATIONS[self.activation]
        layers, width = [], n_features
        for size in self._hidden_sizes():
            if self.batch_norm:
                layers += [nn.Dense(width, size, dtype=dtype), nn.BatchNorm(size, dtype=dtype)]
                if act is not None:
                    layers.append(_ACTIVATION_LAYERS[act]())
            else:
                layers.append(nn.Dense(width, size, activation=act, dtype=dtype))
            if self.dropout:
                layers.append(nn.Dropout(self.dropout))
            width = size
        layers.append(nn.Dense(width, n_outputs, dtype=dtype))
        return nn.Sequential(layers, seed=seed, precision=self.precision)

    def _make_optimizer(self):
        cls = self._optimizer_class()
        takes = inspect.signature(cls).parameters
        kwargs = {"lr": float(self.learning_rate_init)}
        if cls is optim.SGD:
            kwargs.update(momentum=float(self.momentum), nesterov=bool(self.nesterovs_momentum and self.momentum > 0))
        if "betas" in takes:
            kwargs["betas"] = (float(self.beta_1), float(self.beta_2))
        if "eps" in takes:
            kwargs["eps"] = float(self.epsilon)
        self.optimizer_ = cls(self.model_.parameters(), **kwargs)
        if self.schedule is None:
            self._schedule = None
        elif self.schedule == "cosine":
            self._schedule = optim.lr_scheduler.CosineAnnealingLR(self.optimizer_, T_max=self.max_iter)
        else:
            self._schedule = self.schedule(self.optimizer_)

    def _initialize(self, n_features: int, n_outputs: int) -> None:
        self._seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        self.model_ = self._build_model(n_features, n_outputs, self._seed)
        self.n_iter_, self.t_ = 0, 0
        self.n_outputs_, self.n_layers_ = n_outputs, len(self._hidden_sizes()) + 2
        self.loss_curve_, self._no_improvement_count = [], 0
        if self.early_stopping:
            self.validation_scores_, self.best_validation_score_, self.best_loss_ = [], -np.inf, None
        else:
            self.validation_scores_, self.best_validation_score_, self.best_loss_ = None, None, np.inf

    def _dense_layers(self) -> list:
        return [layer for layer in self.model_.layers if isinstance(layer, nn.Dense)]

    @property
    def coefs_(self) -> list[np.ndarray]:
        """The weight of each Dense layer, (n_in, n_out) as sklearn's: views of the model's arena."""
        return [layer.weight.data for layer in self._dense_layers()]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """The bias of each Dense layer: views of the model's arena."""
        return [layer.bias.data for layer in self._dense_layers()]

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # ---- data ----------------------------------------------------------------------------------------------
    def _dense(self, X):
        return X.toarray() if scipy.sparse.issparse(X) else X

    def _features(self, X):
        """X checked against the fit (feature count and names) in the model's dtype."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse=_SPARSE, dtype=self._np_dtype(), reset=False)
        return np.ascontiguousarray(self._dense(X))

    def _output(self, X) -> np.ndarray:
        X = self._features(X)  # first: it raises NotFittedError before fit
        return self.model_.predict(X)

    def _score_output(self, output, y) -> float:
        """The validation score of early_stopping (accuracy, R^2) from the model's raw output."""
        if not np.isfinite(output).all():
            return np.nan
        return float(self._score_function(y, self._from_output(output)))

    # ---- training ------------------------------------------------------------------------------------------
    def fit(self, X, y):
        """Fit the model to X (n_samples, n_features) and y, from fresh weights (or, with
        warm_start, from the last fit's) for up to max_iter epochs. Returns self."""
        return self._fit(X, y, incremental=False)

    def _fit(self, X, y, incremental: bool):
        self._check_params()
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        first = not hasattr(self, "model_") or (not self.warm_start and not incremental)
        X, target, y_labels, n_outputs = self._validate_input(X, y, incremental, reset=first)
        X = np.ascontiguousarray(self._dense(X))
        if first:
            self._initialize(X.shape[1], n_outputs)
        elif n_outputs != self.n_outputs_:
            raise ValueError(f"y has {n_outputs} outputs, but the model was fitted with {self.n_outputs_}")
        if first or not incremental:
            self._make_optimizer()
        validation = None
        if self.early_stopping:
            stratify = y_labels if is_classifier(self) and self.n_outputs_ == 1 else None
            X, X_val, target, _, y_labels, y_val = train_test_split(
                X, target, y_labels, random_state=self._seed, test_size=self.validation_fraction, stratify=stratify
            )
            if len(X_val) < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' or the size of your dataset."
                )
            validation = (X_val, y_val)
        n = len(X)
        if self.batch_size == "auto":
            batch = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped")
            batch = int(np.clip(self.batch_size, 1, n))
        rules = _SklearnRules(self, n, validation)
        train.fit(
            self.model_,
            self._training_loss(),
            self.optimizer_,
            X,
            target,
            epochs=1 if incremental else self.max_iter,
            batch_size=batch,
            shuffle=bool(self.shuffle),
            seed=(self._seed + self.t_) % (2**31),  # a new order for every partial_fit / warm start
            regularizer=L2(self.alpha / batch) if self.alpha else None,
            schedule=self._schedule,
            callbacks=[rules],
            verbose=0,
        )
        if rules.best_state is not None:  # early_stopping: the weights of the best validation score
            self.model_.load_state_dict(rules.best_state)
        if not all(np.isfinite(w).all() for w in self.coefs_ + self.intercepts_):
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may contain large values "
                "and need to be preprocessed."
            )
        if not incremental and not rules.converged and self.n_iter_ == self.max_iter:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the optimization "
                f"hasn't converged yet.",
                ConvergenceWarning,
            )
        return self

    # ---- pickling: the model as architecture + state_dict, the optimizer as its state_dict --------------------
    def __getstate__(self):
        state = dict(super().__getstate__())  # object's __getstate__ gives __dict__ itself: never change it
        if "model_" in state:
            state["model_"] = {"architecture": architecture(state["model_"]), "state": state["model_"].state_dict()}
            state["optimizer_"] = state["optimizer_"].state_dict()
            schedule = state.pop("_schedule", None)
            state["_schedule"] = None if schedule is None else schedule.state_dict()
        return state

    def __setstate__(self, state):
        model, optimizer_state = state.get("model_"), state.get("optimizer_")
        schedule_state = state.pop("_schedule", None)
        super().__setstate__(state)
        if isinstance(model, dict):
            self.model_ = build(model["architecture"])
            self.model_.load_state_dict(model["state"])
            self._make_optimizer()
            self.optimizer_.load_state_dict(optimizer_state)
            if self._schedule is not None and schedule_state is not None:
                self._schedule.load_state_dict(schedule_state)


_SKLEARN_PARAMS = """
    hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate, learning_rate_init,
    power_t, max_iter, shuffle, random_state, tol, verbose, warm_start, momentum,
    nesterovs_momentum, early_stopping, validation_fraction, beta_1, beta_2, epsilon,
    n_iter_no_change, max_fun: sklearn.neural_network's, same defaults and meanings (see the module
    docstring for solver's gradfuse names and what is not supported).
    batch_norm, dropout, schedule, precision, dtype: gradfuse's (module docstring)."""


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by gradfuse: sklearn.neural_network.MLPClassifier's
    parameters and attributes (module docstring). Multiclass (softmax), binary (one logistic output)
    and multilabel (y a 2-D 0/1 indicator array: one logistic output per label); labels of any
    type (strings too): classes_ holds them.
    """

    __doc__ += _SKLEARN_PARAMS

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        batch_norm=False,
        dropout=0.0,
        schedule=None,
        precision="fp32",
        dtype="float32",
    ):
        self._set_params({k: v for k, v in locals().items() if k not in ("self", "__class__")})

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=_SPARSE, multi_output=True, dtype=self._np_dtype(), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        f"warm_start can only be used where `y` has the same classes as in the previous call "
                        f"to fit. Previously got {self.classes_}, `y` has {classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. 'y' has {classes}."
                )
        binarized = self._label_binarizer.transform(y)
        if self._label_binarizer.y_type_ == "multiclass":  # class ids for cross_entropy
            return X, np.argmax(binarized, axis=1).astype(np.int64), y, binarized.shape[1]
        # binary: one 0/1 output; multilabel: the indicator columns
        target = binarized.astype(self._np_dtype())
        return X, (target.ravel() if target.shape[1] == 1 else target), y, target.shape[1]

    def _initialize(self, n_features, n_outputs):
        super()._initialize(n_features, n_outputs)
        self.out_activation_ = "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _training_loss(self):
        if self.out_activation_ == "softmax":
            return losses.CrossEntropyLoss()
        # sklearn's binary log-loss sums over the outputs (labels) and averages over samples
        loss = losses.BCEWithLogitsLoss()
        return loss if self.n_outputs_ == 1 else _Scaled(loss, self.n_outputs_, self.n_outputs_)

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y), continuing from the last fit. classes (every label that will ever
        be seen) is required on the first call, as in sklearn."""
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y if type_of_target(y).startswith("multilabel") else classes)
        return self._fit(X, y, incremental=True)

    def _probabilities(self, output) -> np.ndarray:
        output = output.astype(np.float64)
        if self.out_activation_ == "softmax":
            return softmax(output, axis=1)
        return expit(output)

    def _from_output(self, output):
        probs = self._probabilities(output)
        return self._label_binarizer.inverse_transform(probs.ravel() if self.n_outputs_ == 1 else probs)

    _score_function = staticmethod(accuracy_score)

    def predict(self, X):
        """The predicted classes (n_samples,), or the 0/1 indicator (n_samples, n_labels) for multilabel."""
        return self._from_output(self._output(X))

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes) in the order of classes_ (float64)."""
        probs = self._probabilities(self._output(X))
        if self.n_outputs_ == 1:
            probs = probs.ravel()
            return np.column_stack([1 - probs, probs])
        return probs

    def predict_log_proba(self, X):
        """log(predict_proba(X))."""
        probs = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(probs, out=probs)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by gradfuse: sklearn.neural_network.MLPRegressor's
    parameters and attributes (module docstring). Half the squared error (sklearn's loss_), one or
    several outputs (y (n_samples, n_outputs)). loss="poisson" is refused.
    """

    __doc__ += _SKLEARN_PARAMS

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        batch_norm=False,
        dropout=0.0,
        schedule=None,
        precision="fp32",
        dtype="float32",
    ):
        self._set_params({k: v for k, v in locals().items() if k not in ("self", "__class__")})

    def _check_params(self):
        if self.loss != "squared_error":
            raise ValueError(
                f"The 'loss' parameter must be 'squared_error' (gradfuse has no Poisson loss yet). "
                f"Got {self.loss!r} instead."
            )
        super()._check_params()

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self, X, y, accept_sparse=_SPARSE, multi_output=True, y_numeric=True, dtype=self._np_dtype(), reset=reset
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, np.ascontiguousarray(y, dtype=self._np_dtype()), y, (1 if y.ndim == 1 else y.shape[1])

    def _initialize(self, n_features, n_outputs):
        super()._initialize(n_features, n_outputs)
        self.out_activation_ = "identity"

    def _training_loss(self):
        # sklearn's loss_: mean((y - p)^2) / 2; its gradient: (p - y) / n_samples
        return _Scaled(losses.MSELoss(), 0.5, 0.5 * self.n_outputs_)

    def partial_fit(self, X, y):
        """One epoch over (X, y), continuing from the last fit (or starting)."""
        return self._fit(X, y, incremental=True)

    def _from_output(self, output):
        output = output.astype(np.float64)
        return output.ravel() if output.shape[1] == 1 else output

    _score_function = staticmethod(r2_score)

    def predict(self, X):
        """The predictions, (n_samples,) or (n_samples, n_outputs), float64."""
        return self._from_output(self._output(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
