"""The layers: Dense, DropConnect, BatchNorm, Dropout, activations, Softmax, Flatten, Sequential.

Each layer arranges gradfuse's fused kernels (gf.ops); none redoes their work in NumPy. Shapes are
gradfuse's: a Dense weight is (in_features, out_features) and y = act(x @ weight + bias).
"""

from __future__ import annotations

import secrets

import numpy as np

from .. import ops
from ..data import Standardizer
from . import init as init_module  # "init" is also the initializer argument of the layers
from .module import Module, architecture, build, check_input, grad_target, keep_grad
from .parameter import Parameter, ParameterArena

_ACTIVATIONS = {
    None: "none",
    "none": "none",
    "linear": "none",
    "relu": "relu",
    "leaky_relu": "leaky_relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "logistic": "sigmoid",
    "gelu": "gelu",
    "gelu_tanh": "gelu_tanh",
}
# the activations whose backward needs the pre-activation z (the others use the output y)
_NEEDS_Z = {"gelu", "gelu_tanh"}


def _activation_name(activation) -> str:
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; expected one of {sorted(k for k in _ACTIVATIONS if k)} or None"
        )
    return _ACTIVATIONS[activation]


def _like(dy, x):
    """dy in x's dtype where one of them is bf16 and the other float32 (a gradient crossing a
    precision boundary: a float32 loss gradient into a bf16 model, a bf16 layer's input gradient
    into a float32 one); anything else is left for the kernels to check."""
    want = x.dtype if isinstance(x, np.ndarray) else np.dtype(x)
    if (
        isinstance(dy, np.ndarray)
        and dy.dtype != want
        and {dy.dtype.kind, want.kind} == {"V", "f"}
        and np.float32 in (dy.dtype, want)
    ):
        return dy.astype(want)
    return dy


def _tangent(tangents, p):
    """p's tangent in a jvp's parameter tangents (None: zero), checked against p's shape."""
    if p is None or not tangents:
        return None
    v = tangents.get(p)
    if v is None:
        return None
    v = np.asarray(v)
    if v.shape != p.data.shape:
        raise ValueError(f"jvp: the tangent of parameter {p.name!r} has shape {v.shape}, the parameter {p.data.shape}")
    return v


def _jvp_cache(layer):
    if layer._cache is None:
        raise RuntimeError(f"{type(layer).__name__}.jvp called before forward")
    return layer._cache


def _new_seed() -> int:
    return secrets.randbits(63)


def _initialize(weight: np.ndarray, init, rng: np.random.Generator) -> None:
    """Fill a (in, out) weight with a named initializer from gf.nn.init, or a callable(array, rng=)."""
    if callable(init):
        init(weight, rng=rng)
        return
    init_module.get_initializer(init)(weight, rng=rng)


class Dense(Module):
    """y = activation(x @ weight + bias), x (N, in_features); weight (in_features, out_features).

    activation: None, "relu", "leaky_relu" (negative_slope), "tanh", "sigmoid", "gelu", "gelu_tanh",
    applied inside the fused kernel. init: an initializer name from gf.nn.init ("glorot_uniform",
    "he_normal", "lecun_uniform", ...) or a callable(array, rng=...); seed makes it reproducible
    (without one, a Sequential(..., seed=s) around the layer re-draws it from s). The bias starts at
    zero and, like every bias, is not regularized or decayed by default.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation=None,
        bias: bool = True,
        init="glorot_uniform",
        negative_slope: float = 0.01,
        seed=None,
        dtype=np.float32,
    ):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.activation = _activation_name(activation)
        self.negative_slope = float(negative_slope)
        # the seed the weight was drawn from: the given one, or one drawn here, kept so that
        # Sequential(seed=...) can tell an untouched initialization (which it re-draws) from set weights
        self._init, self._init_seed = init, seed
        self._drawn_seed = _new_seed() if seed is None else seed
        weight = np.empty((self.in_features, self.out_features), dtype)
        _initialize(weight, init, np.random.default_rng(self._drawn_seed))
        self.weight = Parameter(weight, name="weight")
        self.bias = Parameter(np.zeros(self.out_features, dtype), name="bias", regularize=False) if bias else None

    def reset_parameters(self, seed=None) -> None:
        """Draw the weight afresh with the layer's initializer (from seed, else from the OS) and set
        the bias to zero, in place (an arena view stays one)."""
        self._drawn_seed = _new_seed() if seed is None else seed
        _initialize(self.weight.data, self._init, np.random.default_rng(self._drawn_seed))
        if self.bias is not None:
            self.bias.data[...] = 0

    def _as_initialized(self) -> bool:
        """Whether the weights are still those the initializer drew (nobody has set them since)."""
        weight = np.empty_like(self.weight.data)
        _initialize(weight, self._init, np.random.default_rng(self._drawn_seed))
        return np.array_equal(weight, self.weight.data) and (self.bias is None or not self.bias.data.any())

    def _weight_for_forward(self, training: bool):
        """(the weight this forward uses, what _commit_forward needs once the kernel succeeded)."""
        return self.weight.data, None

    def _commit_forward(self, pending) -> None:
        pass

    def _compute_parameters(self):
        return [self.weight]

    def forward(self, x, training=None):
        training = self._mode(training)
        x = self._in_precision(check_input(self, "x", x))
        weight, pending = self._weight_for_forward(training)
        if self._precision == "bf16":  # the compute copy the optimizer keeps; a masked weight is cast
            weight = self._bf16_weight() if weight is self.weight.data else weight.astype(x.dtype)
        y = np.empty((x.shape[0] if x.ndim else 0, self.out_features), weight.dtype)
        z = np.empty_like(y) if self.activation in _NEEDS_Z else None
        ops.dense_forward(
            x,
            weight,
            None if self.bias is None else self.bias.data,
            y,
            activation=self.activation,
            negative_slope=self.negative_slope,
            z=z,
        )
        self._commit_forward(pending)  # only now: a forward that raised changes no state
        self._cache = (x, weight, y, z)
        return y

    def _bf16_weight(self):
        """The weight's bf16 compute copy (made here if a user dropped it)."""
        return self.weight.bf16 if self.weight.bf16 is not None else self.weight.make_bf16_copy()

    def _weight_grad_target(self, accumulate: bool):
        return grad_target(self.weight, accumulate)

    def backward(self, dy, *, accumulate=False, need_input_grad=True):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        x, weight, y, z = self._cache
        dy = _like(dy, x)  # a float32 gradient into a bf16 layer (or back)
        dx = np.empty_like(x) if need_input_grad else None
        # the kernel's scratch for dy * act'(.): from NumPy (and so the caching allocator), not a fresh vector
        dz = np.empty_like(dy) if self.activation != "none" else None
        dw = self._weight_grad_target(accumulate)
        db = grad_target(self.bias, accumulate) if self.bias is not None else None
        ops.dense_backward(
            dy,
            x,
            weight,
            dx,
            dw,
            db,
            activation=self.activation,
            y=y,
            z=z,
            negative_slope=self.negative_slope,
            accumulate=accumulate,
            dz=dz,
        )
        self._after_backward(accumulate, dw)
        keep_grad(self.bias, db)
        return dx

    def _after_backward(self, accumulate: bool, dw) -> None:
        keep_grad(self.weight, dw)

    def jvp(self, dx, tangents=None):
        """d act(x W + b) = act'(z) * (dx W + x dW + db), from the last forward's x, W, y and z."""
        x, weight, y, z = _jvp_cache(self)
        t = np.zeros_like(y) if dx is None else dx @ weight
        dw = _tangent(tangents, self.weight)
        if dw is not None:
            t += x @ self._weight_tangent(dw)
        db = _tangent(tangents, self.bias)
        if db is not None:
            t += db
        if self.activation == "none":
            return t
        out = np.empty_like(t)  # act' is diagonal: its product with t is the backward's
        ops.activation_backward(t, out, activation=self.activation, x=z, y=y, negative_slope=self.negative_slope)
        return out

    def _weight_tangent(self, dw):
        return dw

    def output_shape(self, input_shape):
        if input_shape is not None:
            if len(input_shape) != 2:
                raise ValueError(f"takes 2-D input (N, {self.in_features}) (put a Flatten before it)")
            if input_shape[-1] not in (None, self.in_features):
                raise ValueError(f"takes {self.in_features} input features")
        return (None if input_shape is None else input_shape[0], self.out_features)

    def get_config(self):
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "activation": self.activation,
            "bias": self.bias is not None,
            "negative_slope": self.negative_slope,
            "dtype": self.weight.dtype.name,
        }

    def extra_repr(self):
        act = "" if self.activation == "none" else f", activation={self.activation!r}"
        return f"{self.in_features}, {self.out_features}{act}, bias={self.bias is not None}"

    def gives_probabilities(self):
        return self.activation == "sigmoid"


class _Masked:
    """A counter-based dropout mask source: Philox keyed on (seed, call counter, element)."""

    def __init__(self, p: float, seed):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = float(p)
        self.explicit = seed is not None  # a given seed wins over one a Sequential derives
        self.seed = _new_seed() if seed is None else int(seed)
        self.counter = 0

    def state(self):
        return {"seed": self.seed, "counter": self.counter}

    def load(self, state):
        if "seed" in state:
            self.seed = int(state["seed"])
        if "counter" in state:
            self.counter = int(state["counter"])

    def draw(self, x: np.ndarray):
        """(x masked and scaled, the packed mask) for the current counter; advance() moves it on."""
        y = np.empty_like(x)
        mask = np.empty(ops.dropout_mask_bytes(x.size), np.uint8)
        ops.dropout_forward(x, y, mask, p=self.p, seed=self.seed, counter=self.counter)
        return y, mask

    def advance(self) -> None:
        self.counter += 1

    def apply(self, x: np.ndarray):
        """draw(x), then advance the counter (not when the kernel raised)."""
        out = self.draw(x)
        self.advance()
        return out


class DropConnect(Dense):
    """A Dense layer whose weight matrix is masked afresh at every training forward (DropConnect,
    Wan et al. 2013): W_masked = W * mask / (1 - p), mask ~ Bernoulli(1 - p) per element; the
    gradient reaches only the kept weights. Evaluation uses W itself (its expectation)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation=None,
        bias: bool = True,
        p: float = 0.5,
        init="glorot_uniform",
        negative_slope: float = 0.01,
        seed=None,
        dtype=np.float32,
    ):
        super().__init__(in_features, out_features, activation, bias, init, negative_slope, seed, dtype)
        self._masks = _Masked(p, None if seed is None else np.random.default_rng(seed).integers(2**63))
        self._mask = None
        self._dw_masked = None

    def _local_state(self):
        return self._masks.state()

    def _load_local_state(self, state):
        self._masks.load(state)

    def _weight_for_forward(self, training):
        if not training or self._masks.p == 0:
            return self.weight.data, None
        return self._masks.draw(self.weight.data)  # the counter moves once the forward succeeded

    def _commit_forward(self, mask):
        if mask is not None:
            self._masks.advance()
        self._mask = mask

    def _weight_grad_target(self, accumulate):
        if self._mask is None:
            return grad_target(self.weight, accumulate)
        if not self.weight.trainable:
            return None
        self._dw_masked = np.empty_like(self.weight.data)
        return self._dw_masked

    def _weight_tangent(self, dw):
        """The masked weight's tangent: dW masked and scaled by the same mask."""
        if self._mask is None:
            return dw
        out = np.empty_like(dw)
        ops.dropout_backward(np.ascontiguousarray(dw, self.weight.dtype), self._mask, out, p=self._masks.p)
        return out

    def _after_backward(self, accumulate, dw):
        if self._mask is None:
            keep_grad(self.weight, dw)
            return
        if not self.weight.trainable:
            return
        target = grad_target(self.weight, accumulate)
        if accumulate:
            tmp = np.empty_like(target)
            ops.dropout_backward(self._dw_masked, self._mask, tmp, p=self._masks.p)
            target += tmp
        else:
            ops.dropout_backward(self._dw_masked, self._mask, target, p=self._masks.p)
        keep_grad(self.weight, target)
        self._dw_masked = None

    def get_config(self):
        return {**super().get_config(), "p": self._masks.p}

    def extra_repr(self):
        return super().extra_repr() + f", p={self._masks.p}"


class BatchNorm(Module):
    """Batch normalization over (N, C), (N, C, L) or (N, C, H, W) inputs (channels_last: C last),
    with torch's semantics: batch statistics in training, running statistics in eval (updated with
    momentum; momentum=None: the cumulative average), affine weight and bias."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        channels_last: bool = False,
        dtype=np.float32,
    ):
        super().__init__()
        if not float(eps) > 0:
            raise ValueError(f"BatchNorm: eps must be > 0, got {eps}")
        if momentum is not None and not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"BatchNorm: momentum must be in [0, 1] or None, got {momentum}")
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), momentum
        self.channels_last = bool(channels_last)
        self._dtype = np.dtype(dtype)
        c = self.num_features
        self.weight = Parameter(np.ones(c, dtype), name="weight", regularize=False) if affine else None
        self.bias = Parameter(np.zeros(c, dtype), name="bias", regularize=False) if affine else None
        self.track_running_stats = bool(track_running_stats)
        self.running_mean = np.zeros(c, dtype) if track_running_stats else None
        self.running_var = np.ones(c, dtype) if track_running_stats else None
        self.num_batches_tracked = 0

    def _local_state(self):
        if not self.track_running_stats:
            return {}
        return {
            "running_mean": self.running_mean,
            "running_var": self.running_var,
            "num_batches_tracked": self.num_batches_tracked,
        }

    def _load_local_state(self, state):
        for key in ("running_mean", "running_var"):
            if key in state:
                getattr(self, key)[...] = np.asarray(state[key])
        if "num_batches_tracked" in state:
            self.num_batches_tracked = int(np.asarray(state["num_batches_tracked"]))

    def forward(self, x, training=None):
        training = self._mode(training)
        x = check_input(self, "x", x)
        momentum = self.momentum
        tracking = training and self.track_running_stats
        if tracking and momentum is None:
            momentum = 1.0 / (self.num_batches_tracked + 1)  # the cumulative average, this batch included
        batch_stats = training or self.running_mean is None
        x = self._in_precision(x)
        y = np.empty_like(x)
        c = self.num_features
        stats = np.float32 if x.dtype.kind == "V" else x.dtype  # bf16 data: float32 statistics
        save_mean, save_invstd = np.empty(c, stats), np.empty(c, stats)
        ops.batchnorm_forward(
            x,
            None if self.weight is None else self.weight.data,
            None if self.bias is None else self.bias.data,
            self.running_mean,
            self.running_var,
            y,
            save_mean,
            save_invstd,
            training=training,
            momentum=0.0 if momentum is None else momentum,
            eps=self.eps,
            channels_last=self.channels_last,
        )
        if tracking:  # counted once the kernel succeeded: a forward that raised changes no state
            self.num_batches_tracked += 1
        self._cache = (x, save_mean, save_invstd, batch_stats)
        return y

    def backward(self, dy, *, accumulate=False, need_input_grad=True):
        if self._cache is None:
            raise RuntimeError("BatchNorm.backward called before forward")
        x, save_mean, save_invstd, batch_stats = self._cache
        dy = _like(dy, x)  # a float32 gradient into a bf16 layer (or back)
        # the parameter gradients: written in place, or computed aside and added (accumulate)
        grads = {}
        for name, p in (("weight", self.weight), ("bias", self.bias)):
            if p is not None and p.trainable:
                grads[name] = np.empty_like(p.data) if accumulate else grad_target(p, False)
        dx = np.empty_like(x)  # the kernel always computes dx: it shares its pass with the sums
        ops.batchnorm_backward(
            dy,
            x,
            None if self.weight is None else self.weight.data,
            save_mean,
            save_invstd,
            dx,
            grads.get("weight"),
            grads.get("bias"),
            training=batch_stats,
            channels_last=self.channels_last,
        )
        if accumulate:
            for name, g in grads.items():
                target = grad_target(getattr(self, name), True)
                target += g
                keep_grad(getattr(self, name), target)
        else:
            for name, g in grads.items():
                keep_grad(getattr(self, name), g)
        return dx if need_input_grad else None

    def jvp(self, dx, tangents=None):
        """Training (batch statistics): d xhat = invstd (dx - mean(dx) - xhat mean(dx xhat)); eval
        (running statistics): d xhat = invstd dx; then dy = weight d xhat + xhat dweight + dbias."""
        x, save_mean, save_invstd, batch_stats = _jvp_cache(self)
        axis = x.ndim - 1 if self.channels_last else 1
        shape = [1] * x.ndim
        shape[axis] = self.num_features
        others = tuple(a for a in range(x.ndim) if a != axis)
        if batch_stats:
            mean, invstd = save_mean, save_invstd
        else:
            mean, invstd = self.running_mean, 1.0 / np.sqrt(self.running_var + self.eps)
        mean, invstd = mean.reshape(shape).astype(x.dtype), invstd.reshape(shape).astype(x.dtype)
        xhat = (x - mean) * invstd
        if dx is None:
            dxhat = np.zeros_like(xhat)
        elif batch_stats:
            dxhat = invstd * (dx - dx.mean(others, keepdims=True) - xhat * (dx * xhat).mean(others, keepdims=True))
        else:
            dxhat = invstd * dx
        t = dxhat if self.weight is None else dxhat * self.weight.data.reshape(shape)
        dw, db = _tangent(tangents, self.weight), _tangent(tangents, self.bias)
        if dw is not None:
            t = t + xhat * dw.reshape(shape)
        if db is not None:
            t = t + db.reshape(shape)
        return t.astype(x.dtype, copy=False)

    def output_shape(self, input_shape):
        if input_shape is not None:
            axis = -1 if self.channels_last else 1
            if len(input_shape) < 2:
                raise ValueError(f"takes (N, {self.num_features}, ...) input")
            if input_shape[axis] not in (None, self.num_features):
                raise ValueError(f"normalizes {self.num_features} features (axis {axis})")
        return input_shape

    def get_config(self):
        return {
            "num_features": self.num_features,
            "eps": self.eps,
            "momentum": self.momentum,
            "affine": self.weight is not None,
            "track_running_stats": self.track_running_stats,
            "channels_last": self.channels_last,
            "dtype": self._dtype.name,
        }

    def extra_repr(self):
        options = [
            (k, v, d)
            for k, v, d in (
                ("eps", self.eps, 1e-5),
                ("momentum", self.momentum, 0.1),
                ("affine", self.weight is not None, True),
                ("track_running_stats", self.track_running_stats, True),
                ("channels_last", self.channels_last, False),
            )
            if v != d
        ]
        return ", ".join([str(self.num_features)] + [f"{k}={v}" for k, v, _ in options])

    def gives_probabilities(self):
        return False


class Dropout(Module):
    """Inverted dropout: y = x * mask / (1 - p) in training, the identity in eval. The mask comes
    from Philox4x32-10 keyed on (seed, this layer's call counter, element index): reproducible from
    the seed, the same for every thread count, saved with the model (seed and counter)."""

    _passes_output = True  # an eval-mode identity: the output means what its input meant

    def __init__(self, p: float = 0.5, seed=None):
        super().__init__()
        self._masks = _Masked(p, seed)
        self._mask = None

    @property
    def p(self) -> float:
        return self._masks.p

    def _local_state(self):
        return self._masks.state()

    def _load_local_state(self, state):
        self._masks.load(state)

    def forward(self, x, training=None):
        x = check_input(self, "x", x)
        if not self._mode(training) or self._masks.p == 0:
            self._mask = None
            return x
        y, mask = self._masks.apply(x)
        self._mask, self._cache = mask, (x.shape, x.dtype)
        return y

    def backward(self, dy, *, accumulate=False, need_input_grad=True):
        if self._mask is None:
            return dy
        dy = check_input(self, "dy", dy)
        shape, dtype = self._cache
        if dy.dtype != dtype:
            raise TypeError(f"Dropout.backward: dy has dtype {dy.dtype} but the forward's input had dtype {dtype}")
        if dy.shape != shape:  # the mask's size alone would let some wrong shapes through
            raise ValueError(f"Dropout.backward: dy has shape {dy.shape} but the forward's input had shape {shape}")
        dx = np.empty_like(dy)
        ops.dropout_backward(dy, self._mask, dx, p=self._masks.p)
        return dx

    def jvp(self, dx, tangents=None):
        """The last forward's mask and scale on dx (the identity in eval)."""
        if dx is None or self._mask is None:
            return dx
        out = np.empty_like(dx)
        ops.dropout_backward(dx, self._mask, out, p=self._masks.p)
        return out

    def get_config(self):
        return {"p": self._masks.p}  # the seed and the counter are state (state_dict)

    def extra_repr(self):
        return f"p={self._masks.p}"


class Activation(Module):
    """An element-wise activation layer (see ReLU, Tanh, ...)."""

    activation = "none"

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x, training=None):
        y = np.empty_like(x)
        ops.activation_forward(x, y, activation=self.activation, negative_slope=self.negative_slope)
        self._cache = (x, y)
        return y

    def backward(self, dy, *, accumulate=False, need_input_grad=True):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        x, y = self._cache
        dx = np.empty_like(dy)
        ops.activation_backward(dy, dx, activation=self.activation, x=x, y=y, negative_slope=self.negative_slope)
        return dx

    def jvp(self, dx, tangents=None):
        """act'(x) * dx: the Jacobian is diagonal, so this is the backward's product."""
        x, y = _jvp_cache(self)
        if dx is None:
            return None
        out = np.empty_like(dx)
        ops.activation_backward(dx, out, activation=self.activation, x=x, y=y, negative_slope=self.negative_slope)
        return out

    def gives_probabilities(self):
        return self.activation == "sigmoid"


class ReLU(Activation):
    activation = "relu"

    def __init__(self):
        super().__init__()


class LeakyReLU(Activation):
    activation = "leaky_relu"

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Tanh(Activation):
    activation = "tanh"

    def __init__(self):
        super().__init__()


class Sigmoid(Activation):
    activation = "sigmoid"

    def __init__(self):
        super().__init__()


class GELU(Activation):
    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        self.activation = "gelu" if approximate == "none" else "gelu_tanh"

    def extra_repr(self):
        return "" if self.activation == "gelu" else "approximate='tanh'"

    def get_config(self):  # the choice lives only in the kernel's name
        return {"approximate": "none" if self.activation == "gelu" else "tanh"}


class Softmax(Module):
    """y = softmax(x) over the last axis (the fused, max-subtracted kernel): probabilities for
    Keras-style losses ("categorical_crossentropy", "sparse_categorical_crossentropy"). A model
    trained with a logits loss (cross_entropy) must not end in one: that loss applies the softmax."""

    def forward(self, x, training=None):
        y = np.empty_like(check_input(self, "x", x))
        ops.softmax_forward(x, y)
        self._cache = y
        return y

    def backward(self, dy, *, accumulate=False, need_input_grad=True):
        if self._cache is None:
            raise RuntimeError("Softmax.backward called before forward")
        dx = np.empty_like(check_input(self, "dy", dy))
        ops.softmax_backward(self._cache, dy, dx)
        return dx

    def jvp(self, dx, tangents=None):
        """The softmax Jacobian is symmetric: the backward's product."""
        _jvp_cache(self)
        return None if dx is None else self.backward(dx)

    def gives_probabilities(self):
        return True


class Standardize(Module):
    """A gf.data.Standardizer as the model's first layer, so its statistics (fitted on the training
    set only: adapt(x_train)) are saved with the model and applied at prediction time. Forward
    returns the standardized input; backward divides by the same scale (no parameters)."""

    def __init__(self, mode: str = "zscore", axis=1, standardizer=None):
        super().__init__()
        self.standardizer = standardizer if standardizer is not None else Standardizer(mode, axis=axis)

    def adapt(self, x):
        """Fit the statistics on (training) data x."""
        self.standardizer.fit(x)
        return self

    def _local_state(self):
        state = self.standardizer.state_dict()
        return {f"standardizer.{k}": v for k, v in state.items()}

    def _optional_state_keys(self):
        return {f"standardizer.{k}" for k in ("axis", "ndim", "n_samples", "mean", "std", "scale")}

    def _load_local_state(self, state):
        if state:
            self.standardizer.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items()})

    def forward(self, x, training=None):
        if not self.standardizer.fitted:
            raise RuntimeError("Standardize: call adapt(x_train) (or pass a fitted Standardizer) before forward")
        y = self.standardizer.transform(x)
        self._cache = x.dtype
        return y

    def backward(self, dy, *, accumulate=False, need_input_grad=True):
        if not need_input_grad:
            return None
        if self.standardizer.mode == "center":
            return dy
        shape = [1] * dy.ndim
        for axis in self.standardizer.axes_:
            shape[axis] = dy.shape[axis]
        return (dy / self.standardizer.scale_.reshape(shape)).astype(dy.dtype, copy=False)

    def jvp(self, dx, tangents=None):
        """The standardization is element-wise linear: the backward's product."""
        return None if dx is None else self.backward(dx)

    def _fitted_input_shape(self):
        """(None, *features) when the statistics were fitted over every axis but the batch."""
        st = self.standardizer
        if st.fitted and tuple(st.axes_) == tuple(range(1, st.ndim_)):
            return (None,) + tuple(st.mean_.shape)
        return None

    def output_shape(self, input_shape):
        fitted = self._fitted_input_shape()
        if input_shape is None or fitted is None:
            return input_shape if input_shape is not None else fitted
        if len(input_shape) != len(fitted) or any(a not in (None, b) for a, b in zip(input_shape[1:], fitted[1:])):
            raise ValueError(f"was adapted to input of shape {fitted}")
        return input_shape

    def get_config(self):
        return {"mode": self.standardizer.mode, "axis": list(self.standardizer.axis)}

    def extra_repr(self):
        return repr(self.standardizer.mode)

    def gives_probabilities(self):
        return False


class Identity(Module):
    _passes_output = True  # an eval-mode identity: the output means what its input meant

    def forward(self, x, training=None):
        return x

    def backward(self, dy, *, accumulate=False, need_input_grad=True):
        return dy

    def jvp(self, dx, tangents=None):
        return dx


class Flatten(Module):
    """(N, ...) -> (N, prod(...)), a view."""

    _passes_output = True  # an eval-mode identity: the output means what its input meant

    def forward(self, x, training=None):
        self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy, *, accumulate=False, need_input_grad=True):
        return dy.reshape(self._cache)

    def jvp(self, dx, tangents=None):
        return None if dx is None else dx.reshape(dx.shape[0], -1)

    def output_shape(self, input_shape):
        if input_shape is None:
            return None
        if len(input_shape) < 1:
            raise ValueError("takes a batch (N, ...)")
        rest = None if None in input_shape[1:] else int(np.prod(input_shape[1:], dtype=np.int64))
        return (input_shape[0], rest)


class Sequential(Module):
    """Layers applied in order, named "0", "1", ... in the state_dict.

    At construction the layer sizes are checked to chain (a ValueError names the two layers that do
    not fit; sizes that cannot be known, e.g. after a custom module, are skipped), and every parameter
    moves into one ParameterArena (one buffer for the values, a twin for the gradients), so an
    optimizer over model.parameters() steps the whole model in one kernel call.

    seed: one seed for the whole model. Each module inside gets its own seed derived from it (so
    layers of the same shape get different weights): a Dense or DropConnect built without a seed has
    its weight re-drawn from it, and each Dropout / DropConnect without a seed draws its masks from
    it. The layers were initialized when they were built, before the Sequential saw them: a layer
    given its own seed keeps it, and so does one whose weights were set since (e.g. loaded): only an
    untouched, unseeded initialization is re-drawn. Two builds with the same seed are bitwise equal.
    Without a seed, the layers keep their own (random) initialization and masks.

    precision: "fp32" or "bf16" (mixed precision: float32 masters and optimizer state, bf16
    activations and GEMMs; see Module.set_precision), for every layer inside; None leaves each
    layer's own (a layer in fp32 between bf16 ones takes its input back to float32).

    A layer object may appear only once (it keeps one forward's state for its backward); layers may
    share Parameters (tied weights): their gradients are summed.
    """

    def __init__(self, layers, seed=None, arena: bool = True, precision: str | None = None):
        super().__init__()
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layers[{i}] is a {type(layer).__name__}, not a gradfuse Module")
            first = next(j for j, other in enumerate(self.layers) if other is layer)
            if first != i:
                raise ValueError(
                    f"Sequential: layers[{i}] is the same {type(layer).__name__} object as "
                    f"layers[{first}]; a layer keeps one forward's state for its backward, so use two "
                    "layers (they may share Parameters: layer2.weight = layer1.weight)"
                )
        self.output_shape(None)  # the layer sizes chain, or a ValueError names the two layers
        if seed is not None:
            _seed_modules(self, seed)
        self._arena_requested = bool(arena)
        params = self.parameters()
        self.arena = None
        if arena and params:
            dtypes = {p.dtype for p in params}
            if len(dtypes) == 1 and all(p._arena is None for p in params):
                self.arena = ParameterArena(params, dtype=dtypes.pop())
        if precision is not None:
            self.set_precision(precision)  # after the arena: the compute copies form one bf16 arena
        elif {m._precision for m in self.modules() if m is not self} == {"bf16"}:
            self._precision = "bf16"  # layers set one by one: the model says what they say

    def children(self):
        return self.layers

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def forward(self, x, training=None):
        """Each layer in order. When a layer raises (a model whose layers do not fit together), the
        buffers and counters the layers before it moved (running statistics, dropout counters) are
        put back: a forward that raised changes no state."""
        saved = _local_states(self)
        try:
            for layer in self.layers:
                x = layer.forward(x, training)
        except BaseException:
            self._cache = None  # the layers before the one that raised hold this forward's state now
            for module, state in saved:
                if not _same_state(module._local_state(), state):
                    module._load_local_state(state)
            raise
        self._cache = (x.shape, x.dtype) if isinstance(x, np.ndarray) else None  # what backward's dy must match
        return x

    def backward(self, dy, *, accumulate=False, need_input_grad=False):
        """Backward through every layer: the gradients of the last forward (see gf.nn.Module). The
        input gradient (a whole extra GEMM for a first Dense layer) is only computed when
        need_input_grad is True. Parameters shared by several layers get the sum of their
        gradients."""
        if self._cache is None:
            raise RuntimeError(
                "Sequential.backward: no forward to take the gradients of (none yet, or the last one raised)"
            )
        dy = check_input(self, "dy", dy)
        shape, dtype = self._cache
        if dy.shape != shape:
            raise ValueError(
                f"Sequential.backward: dy has shape {dy.shape}, but the last forward returned shape "
                f"{shape}: dy is the gradient of the last forward's output (predict() is not a "
                "forward: it leaves a pending backward alone)"
            )
        dy = _like(dy, dtype)  # a float32 loss gradient of a bf16 output
        sharing = self._layers_sharing_parameters()
        zeroed = accumulate
        for i in range(len(self.layers) - 1, -1, -1):
            if i in sharing and not zeroed:  # from here on, every backward adds to the gradients it writes
                for j in sharing:
                    for p in self.layers[j].parameters():
                        p.zero_grad(set_to_none=False)
                zeroed = True
            dy = self.layers[i].backward(
                dy, accumulate=accumulate or i in sharing, need_input_grad=need_input_grad or i > 0
            )
        return dy

    def jvp(self, dx=None, tangents=None):
        """Forward-mode derivative of the last forward through every layer in order (see
        Module.jvp): the output's change along dx (None: a fixed input) and the parameter tangents
        {Parameter: array}. A tied parameter's tangent enters every layer that uses it."""
        if self._cache is None:
            raise RuntimeError(
                "Sequential.jvp: no forward to take the derivative of (none yet, or the last one raised)"
            )
        for layer in self.layers:
            dx = layer.jvp(dx, tangents)
        if dx is None:  # nothing moved: no parameter tangents reached any layer
            dx = np.zeros(*self._cache)
        return dx

    def _layers_sharing_parameters(self) -> set:
        owners: dict[int, set] = {}
        for i, layer in enumerate(self.layers):
            for p in layer.parameters():
                owners.setdefault(id(p), set()).add(i)
        return set().union(*(o for o in owners.values() if len(o) > 1))

    def _first_layer(self):
        return f"layers[0] {self.layers[0]!r}" if self.layers else "Sequential([])"

    def _shape_error(self, exc):
        return str(exc)

    def output_shape(self, input_shape):
        """Chain the layers' output shapes; a ValueError names the layer that does not fit and the
        layer whose output it gets."""
        shape, source = input_shape, None  # source: the layer that gave `shape` its sizes
        for i, layer in enumerate(self.layers):
            try:
                out = layer.output_shape(shape)
            except ValueError as exc:
                given = f"layers[{source}] {self.layers[source]!r} outputs" if source is not None else "the input has"
                raise ValueError(
                    f"Sequential: layers[{i}] {layer!r} {exc}, but {given} shape {_shape_str(shape)}"
                ) from None
            if out != shape:
                source = i
            shape = out
        return shape

    def parameter_groups(self, weight_decay: float, **group_options) -> list[dict]:
        """Two optimizer groups: the regularized parameters (weights) with weight_decay, the others
        (biases, batch-norm parameters) without. E.g. gf.optim.AdamW(model.parameter_groups(1e-2))."""
        decay = [p for p in self.parameters() if p.regularize]
        rest = [p for p in self.parameters() if not p.regularize]
        groups = [{"params": decay, "weight_decay": weight_decay, **group_options}]
        if rest:
            groups.append({"params": rest, "weight_decay": 0.0, **group_options})
        return groups

    def _guessed_input_shape(self):
        """The input shape the first layer suggests, for summary(): Dense (N, in_features), a fitted
        Standardize its statistics' shape, BatchNorm (N, num_features) when the model fits it (not
        over images)."""
        first = self.layers[0] if self.layers else None
        if isinstance(first, Dense):
            return (None, first.in_features)
        if isinstance(first, Standardize):
            return first._fitted_input_shape()
        if isinstance(first, BatchNorm):
            try:
                self.output_shape((None, first.num_features))
                return (None, first.num_features)
            except ValueError:
                return None
        return None

    def summary(self, input_shape: tuple | None = None) -> str:
        """A table of the layers, their output shapes and parameter counts. input_shape (e.g.
        (None, 1, 28, 28)) gives the shapes for a model whose first layer does not say it."""
        shape = tuple(input_shape) if input_shape is not None else self._guessed_input_shape()
        if input_shape is not None:
            self.output_shape(shape)  # a ValueError names a layer that does not fit that input
        rows = []
        for i, layer in enumerate(self.layers):
            shape = layer.output_shape(shape)
            n = sum(p.size for p in layer.parameters())
            frozen = sum(p.size for p in layer.parameters() if not p.trainable)
            rows.append(
                (
                    f"{i}: {layer!r}",
                    "?" if shape is None else _shape_str(shape),
                    f"{n:,}" + (f" ({frozen:,} frozen)" if frozen else ""),
                )
            )
        widths = [max(len(r[k]) for r in rows + [("layer", "output shape", "parameters")]) for k in range(3)]
        line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
        total = self.num_parameters()
        trainable = self.num_parameters(trainable_only=True)
        out = [line(("layer", "output shape", "parameters")), line(tuple("-" * w for w in widths))]
        out += [line(r) for r in rows]
        out.append(
            f"total parameters: {total:,} ({trainable:,} trainable)"
            + (f", one arena of {self.arena.data.nbytes / 2**20:.2f} MiB" if self.arena is not None else "")
        )
        return "\n".join(out)

    def get_config(self):
        return {
            "layers": [architecture(layer, f"layers[{i}]") for i, layer in enumerate(self.layers)],
            "arena": self._arena_requested,
            "precision": self._precision,
        }

    @classmethod
    def from_config(cls, config):
        layers = [build(arch, f"layers[{i}]") for i, arch in enumerate(config["layers"])]
        return cls(layers, arena=config["arena"], precision=config.get("precision", "fp32"))

    def extra_repr(self):
        return ", ".join(repr(layer) for layer in self.layers)

    def gives_probabilities(self):
        for layer in reversed(self.layers):
            if not layer._passes_output:
                return layer.gives_probabilities()
        return None


def _shape_str(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + (",)" if len(shape) == 1 else ")")


def _local_states(model) -> list:
    """(module, copy of its buffers and counters) for each module of model that has any."""
    return [
        (m, {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in m._local_state().items()})
        for m in model.modules()
        if m._local_state()
    ]


def _same_state(now: dict, saved: dict) -> bool:
    return now.keys() == saved.keys() and all(
        np.array_equal(now[k], v, equal_nan=True) if isinstance(v, np.ndarray) else now[k] == v
        for k, v in saved.items()
    )


def _seed_modules(model, seed) -> None:
    """Derive a seed per module of model (by its position in named_modules) and give it to every
    unseeded initialization and mask source (see Sequential). A derived seed then counts as given,
    so an outer Sequential's seed does not override an inner one's. The model's own layers keep the
    dropout streams earlier versions gave them, so seeded runs keep their numbers."""
    top = dict(zip(map(id, model.layers), np.random.SeedSequence(seed).generate_state(len(model.layers), np.uint64)))
    for k, module in enumerate(model.modules()[1:]):
        init_seed, mask_seed = (
            int(s) & (2**63 - 1) for s in np.random.SeedSequence(seed, spawn_key=(k,)).generate_state(2, np.uint64)
        )
        if id(module) in top:
            mask_seed = int(top[id(module)]) & (2**63 - 1)
        if isinstance(module, Dense) and module._init_seed is None and module._as_initialized():
            module.reset_parameters(init_seed)
            module._init_seed = init_seed
        masks = getattr(module, "_masks", None)
        if isinstance(masks, _Masked) and not masks.explicit:
            masks.seed, masks.explicit = mask_seed, True
