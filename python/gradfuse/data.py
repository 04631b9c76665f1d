"""Data utilities: input standardization, mini-batches, a train/validation split, the digits.

    scaler = gf.data.Standardizer("zscore")            # per feature (N, F) / per channel (N, C, H, W)
    x_train = scaler.fit_transform(x_train)            # statistics of the training set only
    x_test = scaler.transform(x_test)                  # the same mean and std at test time

    batches = gf.data.MiniBatches(x_train, y_train, batch_size=32, shuffle=True, seed=0)
    for epoch in range(epochs):
        for xb, yb in batches:                         # one pass = one epoch, reshuffled each epoch
            ...
    gf.save({"data": batches.state_dict(), "scaler": scaler.state_dict(), ...}, path)

    x_train, y_train, x_val, y_val, x_test, y_test = gf.data.load_digits_split(seed=0)  # scikit-learn

Input preprocessing follows the usual recipe: compute each feature's mean
mu_i = 1/m sum_j x_i^(j) and variance sigma_i^2 = 1/m sum_j (x_i^(j) - mu_i)^2 over the m training
samples, then subtract the mean ("center"), divide by the standard deviation ("scale"), or both
("zscore": x' = (x - mu) / sigma); whatever is fitted on the training set is applied unchanged to
validation, test and prediction inputs.
"""

from __future__ import annotations

import math
import operator

import numpy as np

__all__ = ["Standardizer", "MiniBatches", "train_val_split", "load_digits_split"]

_MODES = ("zscore", "center", "scale")
_STAT_CHUNK = 1 << 21  # elements per piece when computing statistics (16 MiB of float64)


def _as_index(value, what: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be an int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an int, got {type(value).__name__}") from None


def _out_dtype(dtype: np.dtype, where: str) -> np.dtype:
    """float32/float64 stay (in native byte order); float16 becomes float32; integers, bools and
    long doubles become float64."""
    if dtype.kind == "f":  # any byte order; long double becomes float64
        return np.dtype(np.float32) if dtype.itemsize <= 4 else np.dtype(np.float64)
    if dtype.kind in "biu":
        return np.dtype(np.float64)
    raise TypeError(f"{where}: x has dtype {dtype}; expected a real number dtype (float, int or bool)")


class Standardizer:
    """Mean subtraction, scaling or z-scoring with statistics fitted on the training set.

    mode  "zscore": (x - mean) / std;  "center": x - mean;  "scale": x / std.
          std is the population standard deviation (divide by m, not m - 1) around the mean, as
          in the formulas above; "scale" divides by it without subtracting the mean (it is the
          seeds' "Normalization/Scaling" step, not a division by the max-abs value or the range).
    axis  the feature axes: statistics are kept per index along them and taken over every other
          axis. Axis 0 is always the sample axis. The default 1 means per feature for (N, F) data
          and per channel for images (N, C, H, W); use axis=-1 for channels-last (N, H, W, C),
          axis=(1, 2, 3) for a per-pixel "mean image" of (N, C, H, W), axis=() for one mean and
          std over everything.

    Zero standard deviation: a feature whose training values are all equal (or whose std
    underflows to 0) is left unscaled (divided by 1; "zscore" still subtracts its mean), so it
    maps to 0 rather than to NaN/Inf. std_ keeps the measured value, scale_ the divisor used.

    Statistics are computed in float64 (in pieces, so memory stays small). transform returns a
    new array: float32 and float64 inputs keep their dtype (the statistics are rounded to it
    first), float16 becomes float32, integers and bools become float64. fit refuses NaN/Inf.
    The mean of a constant feature is its value exactly, so "zscore" and "center" map it to 0.
    """

    def __init__(self, mode: str = "zscore", axis=1):
        if mode not in _MODES:
            raise ValueError(f"Standardizer: mode must be one of {', '.join(map(repr, _MODES))}, got {mode!r}")
        self.mode = mode
        self.axis = self._check_axis(axis)
        self._clear()

    @staticmethod
    def _check_axis(axis) -> tuple[int, ...]:
        axes = (axis,) if not isinstance(axis, (tuple, list)) else tuple(axis)
        axes = tuple(_as_index(a, "Standardizer: axis") for a in axes)
        if len(set(axes)) != len(axes):
            raise ValueError(f"Standardizer: repeated axis in {axis!r}")
        return axes

    def _clear(self) -> None:
        self.ndim_ = None  # number of dimensions of the fitted data
        self.axes_ = None  # the feature axes, non-negative, ascending
        self.mean_ = None  # float64, shape: the feature shape
        self.std_ = None  # float64, the measured population std
        self.scale_ = None  # float64, std with 0 for constant features replaced by 1
        self.n_samples_ = None

    @property
    def fitted(self) -> bool:
        return self.mean_ is not None

    # ---- fitting ------------------------------------------------------------------------------------
    def _resolve_axes(self, ndim: int, where: str) -> tuple[int, ...]:
        axes = []
        for a in self.axis:
            if not -ndim <= a < ndim:
                raise ValueError(f"{where}: axis {a} is out of range for x with {ndim} dimension(s)")
            a %= ndim
            if a == 0:
                raise ValueError(f"{where}: axis 0 is the sample axis; it cannot be a feature axis")
            axes.append(a)
        if len(set(axes)) != len(axes):
            raise ValueError(f"{where}: axis {self.axis} names one axis twice for x with {ndim} dimensions")
        return tuple(sorted(axes))

    def fit(self, x) -> Standardizer:
        """Compute the per-feature mean and std of the training set x (samples along axis 0)."""
        x = np.asarray(x)
        _out_dtype(x.dtype, "Standardizer.fit")
        if x.ndim == 0:
            raise ValueError("Standardizer.fit: x is a scalar; expected samples along axis 0")
        axes = self._resolve_axes(x.ndim, "Standardizer.fit")
        if x.size == 0:
            raise ValueError(f"Standardizer.fit: x of shape {x.shape} is empty")
        # Pieces of whole samples, feature axes moved last and flattened: (rows, features) in float64.
        feature_shape = tuple(x.shape[a] for a in axes)
        features = math.prod(feature_shape)
        per_sample = max(1, math.prod(x.shape[1:]))
        step = max(1, _STAT_CHUNK // per_sample)

        def pieces():
            for start in range(0, x.shape[0], step):
                piece = x[start : start + step]
                if axes:
                    piece = np.moveaxis(piece, axes, range(x.ndim - len(axes), x.ndim))
                yield piece.reshape(-1, features).astype(np.float64)

        m = x.size // features  # values per feature
        total = np.zeros(features)
        low = np.full(features, np.inf)
        high = np.full(features, -np.inf)
        for piece in pieces():
            if not np.isfinite(piece).all():
                raise ValueError("Standardizer.fit: x holds NaN or Inf")
            total += piece.sum(axis=0)
            np.minimum(low, piece.min(axis=0), out=low)
            np.maximum(high, piece.max(axis=0), out=high)
        constant = high == low
        mean = np.where(constant, low, total / m)  # a constant feature's mean is exact: it maps to 0
        squares = np.zeros(features)
        for piece in pieces():
            piece -= mean
            squares += np.einsum("ij,ij->j", piece, piece)
        std = np.sqrt(squares / m)
        scale = np.where(constant | (std == 0), 1.0, std)
        self.ndim_, self.axes_, self.n_samples_ = x.ndim, axes, x.shape[0]
        self.mean_ = mean.reshape(feature_shape)
        self.std_ = std.reshape(feature_shape)
        self.scale_ = scale.reshape(feature_shape)
        return self

    def fit_transform(self, x) -> np.ndarray:
        return self.fit(x).transform(x)

    # ---- applying -----------------------------------------------------------------------------------
    def _prepare(self, x, where: str):
        if not self.fitted:
            raise RuntimeError(f"{where}: this Standardizer is not fitted yet; call fit(x_train) first")
        x = np.asarray(x)
        dtype = _out_dtype(x.dtype, where)
        if x.ndim != self.ndim_:
            raise ValueError(
                f"{where}: x has shape {x.shape}; the Standardizer was fitted on data with "
                f"{self.ndim_} dimension(s) (features along axis {self.axes_})"
            )
        feature_shape = tuple(x.shape[a] for a in self.axes_)
        if feature_shape != self.mean_.shape:
            count = "features" if len(self.axes_) == 1 else "feature shape"
            got = feature_shape[0] if len(feature_shape) == 1 else feature_shape
            want = self.mean_.shape[0] if self.mean_.ndim == 1 else self.mean_.shape
            raise ValueError(
                f"{where}: x of shape {x.shape} has {got} {count} along axis "
                f"{self.axes_[0] if len(self.axes_) == 1 else self.axes_}; the Standardizer was "
                f"fitted on {want}"
            )
        shape = [x.shape[d] if d in self.axes_ else 1 for d in range(x.ndim)]
        mean = self.mean_.astype(dtype).reshape(shape)
        scale = self.scale_.astype(dtype).reshape(shape)
        return x, dtype, mean, scale

    def transform(self, x) -> np.ndarray:
        """A new array: (x - mean) / std, x - mean or x / std, with the fitted statistics."""
        x, dtype, mean, scale = self._prepare(x, "Standardizer.transform")
        if self.mode == "scale":
            return np.divide(x, scale, dtype=dtype)
        out = np.subtract(x, mean, dtype=dtype)
        if self.mode == "zscore":
            np.divide(out, scale, out=out)
        return out

    def inverse_transform(self, x) -> np.ndarray:
        """Undo transform: x * std + mean, x + mean or x * std (a new array)."""
        x, dtype, mean, scale = self._prepare(x, "Standardizer.inverse_transform")
        if self.mode == "center":
            return np.add(x, mean, dtype=dtype)
        out = np.multiply(x, scale, dtype=dtype)
        if self.mode == "zscore":
            np.add(out, mean, out=out)
        return out

    # ---- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{"mode": str, "axis": int64 array, and once fitted "ndim", "n_samples" (int64 0-d arrays),
        "mean", "std", "scale" (float64 arrays)}: strings and arrays only, copies."""
        state = {"mode": self.mode}
        if not self.fitted:
            state["axis"] = np.array(self.axis, dtype=np.int64)
            return state
        state["axis"] = np.array(self.axes_, dtype=np.int64)
        state["ndim"] = np.array(self.ndim_, dtype=np.int64)
        state["n_samples"] = np.array(self.n_samples_, dtype=np.int64)
        state["mean"] = self.mean_.copy()
        state["std"] = self.std_.copy()
        state["scale"] = self.scale_.copy()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a state_dict (mode, axis and statistics). Checked first; on error nothing changes."""
        where = "Standardizer.load_state_dict"
        if not isinstance(state, dict):
            raise TypeError(f"{where}: expected a dict, got {type(state).__name__}")
        keys = set(state)
        fitted_keys = {"mode", "axis", "ndim", "n_samples", "mean", "std", "scale"}
        if keys not in ({"mode", "axis"}, fitted_keys):
            raise ValueError(
                f"{where}: unexpected keys {sorted(map(str, keys))}; expected {sorted(fitted_keys)} "
                "(or only mode and axis for an unfitted Standardizer)"
            )
        mode = state["mode"]
        if mode not in _MODES:
            raise ValueError(f"{where}: unknown mode {mode!r}")
        axis = np.asarray(state["axis"])
        if axis.ndim != 1 or axis.dtype.kind not in "iu":
            raise ValueError(f"{where}: axis must be a 1-D integer array, got {axis!r}")
        axis = self._check_axis(tuple(int(a) for a in axis))
        if keys == {"mode", "axis"}:
            self.mode, self.axis = mode, axis
            self._clear()
            return
        ints = {}
        for key in ("ndim", "n_samples"):
            value = np.asarray(state[key])
            if value.shape != () or value.dtype.kind not in "iu":
                raise ValueError(f"{where}: {key} must be an integer scalar array, got {value!r}")
            ints[key] = int(value)
        ndim = ints["ndim"]
        if not all(0 < a < ndim for a in axis) or list(axis) != sorted(axis):
            raise ValueError(f"{where}: axis {axis} does not fit data with {ndim} dimensions")
        stats = {}
        for key in ("mean", "std", "scale"):
            value = np.asarray(state[key])
            if value.dtype.kind != "f" or value.ndim != len(axis):
                raise ValueError(
                    f"{where}: {key} must be a float array with {len(axis)} dimension(s), got "
                    f"dtype {value.dtype} and shape {value.shape}"
                )
            stats[key] = value.astype(np.float64)  # a copy
        if not stats["mean"].shape == stats["std"].shape == stats["scale"].shape:
            raise ValueError(f"{where}: mean, std and scale have different shapes")
        if not (np.isfinite(stats["mean"]).all() and np.isfinite(stats["scale"]).all() and (stats["scale"] > 0).all()):
            raise ValueError(f"{where}: the statistics hold NaN/Inf or a non-positive scale")
        self.mode, self.axis = mode, axis
        self.ndim_, self.axes_, self.n_samples_ = ndim, axis, ints["n_samples"]
        self.mean_, self.std_, self.scale_ = stats["mean"], stats["std"], stats["scale"]

    def __repr__(self) -> str:
        fitted = f", fitted on {self.n_samples_} samples" if self.fitted else ""
        return f"Standardizer(mode={self.mode!r}, axis={self.axis!r}{fitted})"


def _samples(x, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError(f"{what} is a scalar; expected samples along axis 0")
    return x


class MiniBatches:
    """Mini-batches of (x, y) for one epoch per iteration, reproducibly reshuffled every epoch.

        batches = MiniBatches(x, y, batch_size=32, shuffle=True, seed=0)
        for epoch in range(epochs):
            for xb, yb in batches:          # y=None: yields xb alone
                ...

    Order: with shuffle=True, epoch e visits the samples in the order
    np.random.default_rng([seed, e]).permutation(len(x)) (NumPy's PCG64 seeded by a SeedSequence of
    (seed, e)): every run with the same seed sees the same batches, and epoch e's order does not
    depend on what ran before. seed=None draws a random seed once (kept in .seed and state_dict).
    With shuffle=False the order is 0..N-1 every epoch and batches are views of x and y; shuffled
    batches are gathered copies (x[idx]).

    batch_size: 1 (online SGD) to len(x) (full batch; batch_size=None means full batch too; a larger
    value gives one batch of everything). The last batch is smaller when batch_size does not
    divide len(x), unless drop_last=True drops it. len(batches) is the number of batches per epoch.

    Position: the object keeps (epoch, batch), the next batch it will produce. An iteration runs
    from there to the end of that epoch and moves the position as it yields (the position already
    points past a batch when the loop body receives it), so:
    - state_dict() taken anywhere inside or between epochs, and load_state_dict() into a fresh
      MiniBatches over the same data, continues with exactly the batches the uninterrupted run
      would have produced (mid-epoch included);
    - set_epoch(k) jumps to the start of epoch k;
    - a loop left with `break` leaves the rest of its epoch for the next iteration (call
      set_epoch(batches.epoch + 1) to skip it).
    Starting a new iteration (or set_epoch / load_state_dict) invalidates older iterators: using
    one raises RuntimeError.
    """

    def __init__(
        self,
        x,
        y=None,
        batch_size: int | None = 32,
        shuffle: bool = True,
        seed: int | None = 0,
        drop_last: bool = False,
    ):
        x = _samples(x, "MiniBatches: x")
        if y is not None:
            y = _samples(y, "MiniBatches: y")
            if len(y) != len(x):
                raise ValueError(f"MiniBatches: x has {len(x)} samples but y has {len(y)}")
        n = len(x)
        if batch_size is None:
            batch_size = max(n, 1)
        batch_size = _as_index(batch_size, "MiniBatches: batch_size")
        if batch_size < 1:
            raise ValueError(f"MiniBatches: batch_size must be at least 1, got {batch_size}")
        if seed is None:
            seed = int(np.random.SeedSequence().entropy)
        seed = _as_index(seed, "MiniBatches: seed")
        if seed < 0:
            raise ValueError(f"MiniBatches: seed must be non-negative, got {seed}")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = seed
        self._epoch = 0
        self._batch = 0
        self._generation = 0

    @property
    def num_samples(self) -> int:
        return len(self.x)

    def __len__(self) -> int:
        n, size = len(self.x), self.batch_size
        return n // size if self.drop_last else -(-n // size)

    @property
    def epoch(self) -> int:
        """The epoch of the next batch (the number of completed epochs between epochs)."""
        return self._epoch

    @property
    def batch(self) -> int:
        """The index, within its epoch, of the next batch."""
        return self._batch

    def set_epoch(self, epoch: int) -> None:
        """Start the next iteration at the beginning of epoch `epoch` (0-based)."""
        epoch = _as_index(epoch, "MiniBatches.set_epoch: epoch")
        if epoch < 0:
            raise ValueError(f"MiniBatches.set_epoch: epoch must be non-negative, got {epoch}")
        self._epoch, self._batch = epoch, 0
        self._generation += 1

    def order(self, epoch: int | None = None) -> np.ndarray:
        """The sample indices of epoch `epoch` (default: the current one), in visiting order."""
        epoch = self._epoch if epoch is None else _as_index(epoch, "MiniBatches.order: epoch")
        if not self.shuffle:
            return np.arange(len(self.x))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.x))

    def __iter__(self):
        self._generation += 1
        return self._run(self._generation)

    def _run(self, generation: int):
        if generation != self._generation:
            raise RuntimeError(
                "MiniBatches: this iterator was superseded by a newer iteration, set_epoch() or load_state_dict()"
            )
        epoch, first, count = self._epoch, self._batch, len(self)
        x, y, size, n = self.x, self.y, self.batch_size, len(self.x)
        order = self.order(epoch) if self.shuffle else None
        if first >= count:  # an epoch without batches (no samples, or drop_last with too few)
            self._epoch, self._batch = epoch + 1, 0
            return
        for b in range(first, count):
            if generation != self._generation:
                raise RuntimeError(
                    "MiniBatches: this iterator was superseded by a newer iteration, set_epoch() or load_state_dict()"
                )
            lo, hi = b * size, min((b + 1) * size, n)
            if order is None:
                xb = x[lo:hi]
                yb = None if y is None else y[lo:hi]
            else:
                idx = order[lo:hi]
                xb = x[idx]
                yb = None if y is None else y[idx]
            if b + 1 == count:
                self._epoch, self._batch = epoch + 1, 0
            else:
                self._batch = b + 1
            yield xb if y is None else (xb, yb)

    # ---- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{"epoch", "batch", "seed", "num_samples", "batch_size", "shuffle", "drop_last"}: plain ints
        and bools (gf.save keeps ints of any size)."""
        return {
            "epoch": self._epoch,
            "batch": self._batch,
            "seed": self.seed,
            "num_samples": len(self.x),
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a state_dict: the seed and the position (epoch, batch) are taken from it;
        num_samples, batch_size, shuffle and drop_last must match this object's (else ValueError and
        nothing changes)."""
        where = "MiniBatches.load_state_dict"
        expected = {"epoch", "batch", "seed", "num_samples", "batch_size", "shuffle", "drop_last"}
        if not isinstance(state, dict) or set(state) != expected:
            raise ValueError(f"{where}: expected a dict with keys {sorted(expected)}")
        mine = self.state_dict()
        for key in ("num_samples", "batch_size", "shuffle", "drop_last"):
            if state[key] != mine[key]:
                raise ValueError(f"{where}: the state has {key}={state[key]!r}, this MiniBatches {key}={mine[key]!r}")
        epoch = _as_index(state["epoch"], f"{where}: epoch")
        batch = _as_index(state["batch"], f"{where}: batch")
        seed = _as_index(state["seed"], f"{where}: seed")
        if epoch < 0 or seed < 0 or not 0 <= batch < max(len(self), 1):
            raise ValueError(
                f"{where}: invalid position epoch={epoch}, batch={batch} ({len(self)} batches per epoch) or seed={seed}"
            )
        self.seed, self._epoch, self._batch = seed, epoch, batch
        self._generation += 1

    def __repr__(self) -> str:
        return (
            f"MiniBatches({len(self.x)} samples, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"drop_last={self.drop_last}, seed={self.seed}, epoch={self._epoch}, batch={self._batch})"
        )


def train_val_split(x, y=None, fraction: float = 0.2, shuffle: bool = False, seed: int = 0):
    """Split off a validation set.

    Like Keras' validation_split, by default the LAST `fraction` of the samples (in their current
    order) is the validation set: the training part is the first floor(N * (1 - fraction)) samples
    (Keras' formula, to the same rounding), returned as views. shuffle=True first permutes the
    samples with np.random.default_rng(seed) (the parts are then gathered copies).

    Returns (x_train, x_val), or ((x_train, y_train), (x_val, y_val)) when y is given. Both parts
    must be non-empty (ValueError otherwise, as in Keras).
    """
    x = _samples(x, "train_val_split: x")
    if y is not None:
        y = _samples(y, "train_val_split: y")
        if len(y) != len(x):
            raise ValueError(f"train_val_split: x has {len(x)} samples but y has {len(y)}")
    if isinstance(fraction, (bool, np.bool_)) or not isinstance(fraction, (int, float, np.integer, np.floating)):
        raise TypeError(f"train_val_split: fraction must be a number, got {type(fraction).__name__}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"train_val_split: fraction must be between 0 and 1 (exclusive), got {fraction}")
    n = len(x)
    split_at = int(math.floor(n * (1.0 - float(fraction))))
    if split_at == 0 or split_at == n:
        raise ValueError(
            f"train_val_split: {n} samples are too few to split off a validation fraction of "
            f"{fraction} (the training or the validation part would be empty)"
        )
    if shuffle:
        order = np.random.default_rng(_as_index(seed, "train_val_split: seed")).permutation(n)
        train, val = order[:split_at], order[split_at:]
    else:
        train, val = slice(0, split_at), slice(split_at, n)
    if y is None:
        return x[train], x[val]
    return (x[train], y[train]), (x[val], y[val])


def load_digits_split(seed: int):
    """(x_train, y_train, x_val, y_val, x_test, y_test): scikit-learn's bundled 8x8 digits (1797
    samples, 64 float32 features, no download), split 70/10/20 stratified by class with `seed`.
    Needs scikit-learn (pip install "gradfuse[demo]")."""
    from sklearn.datasets import load_digits  # optional dependency: only this loader needs it
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.125, stratify=y_rest, random_state=seed
    )
    return x_train, y_train, x_val, y_val, x_test, y_test
