"""Module: the base of gradfuse's layers. Explicit forward and backward, no autograd.

    y = layer.forward(x, training=True)    # keeps what its backward needs (references, not copies)
    dx = layer.backward(dy)                # writes the parameters' gradients (p.grad), returns dx

backward WRITES each parameter's gradient (no need to zero them first); backward(dy,
accumulate=True) adds to them instead, for gradient accumulation over micro-batches. A parameter
with trainable=False gets no gradient at all (nothing is computed for it). The arrays a forward
returns are fresh; the input x is referenced until the backward: do not modify it in between.
"""
from __future__ import annotations

import numpy as np

from .parameter import Parameter


class Module:
    """A layer or a model: parameters, buffers (state that is not trained), train/eval mode."""

    def __init__(self):
        self.training = True
        self._cache = None

    # ---- what subclasses implement ----------------------------------------------------------------
    def forward(self, x, training=None):
        raise NotImplementedError

    def backward(self, dy, *, accumulate=False, need_input_grad=True):
        """Gradients of the last forward: writes (or, with accumulate, adds to) each trainable
        parameter's .grad and returns dx (None when need_input_grad is False)."""
        raise NotImplementedError

    def _local_parameters(self) -> dict[str, Parameter]:
        return {}

    def _local_state(self) -> dict:
        """Buffers and counters saved with the model (running statistics, RNG counters)."""
        return {}

    def _load_local_state(self, state: dict) -> None:
        pass

    def _optional_state_keys(self) -> set:
        """State keys a load may bring beyond those _local_state() has now (e.g. a fitted
        standardizer's statistics, loaded into an unfitted one)."""
        return set()

    def children(self) -> list[Module]:
        return []

    # ---- the common API ------------------------------------------------------------------------------
    def __call__(self, x, training=None):
        return self.forward(x, training)

    def _mode(self, training):
        return self.training if training is None else bool(training)

    def named_parameters(self, prefix: str = ""):
        for name, p in self._local_parameters().items():
            yield prefix + name, p
        for i, child in enumerate(self.children()):
            yield from child.named_parameters(f"{prefix}{i}.")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.size for p in self.parameters() if p.trainable or not trainable_only)

    def train(self, mode: bool = True):
        self.training = bool(mode)
        for child in self.children():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def freeze(self):
        """trainable=False for every parameter (transfer learning: retrain only a head)."""
        for p in self.parameters():
            p.trainable = False
        return self

    def unfreeze(self):
        for p in self.parameters():
            p.trainable = True
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            p.zero_grad(set_to_none)

    def state_dict(self) -> dict:
        """Parameters (copies) and buffers by dotted name ('0.weight', '1.running_mean', ...)."""
        out = {name: p.data.copy() for name, p in self.named_parameters()}
        out.update(self._state_items(""))
        return out

    def _state_items(self, prefix):
        out = {prefix + k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self._local_state().items()}
        for i, child in enumerate(self.children()):
            out.update(child._state_items(f"{prefix}{i}."))
        return out

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy values in (shapes and dtypes must match). Everything is checked before anything
        changes; strict refuses missing and unexpected keys."""
        params = dict(self.named_parameters())
        local = {}
        self._collect_states("", local)
        expected = set(params) | {f"{prefix}{k}" for prefix, m in local.items() for k in m._local_state()}
        optional = {f"{prefix}{k}" for prefix, m in local.items() for k in m._optional_state_keys()}
        if strict:
            missing = sorted(expected - set(state))
            unexpected = sorted(set(state) - expected - optional)
            if missing or unexpected:
                raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, p in params.items():
            if name in state:
                value = np.asarray(state[name])
                if value.shape != p.shape:
                    raise ValueError(f"load_state_dict: {name} has shape {value.shape}, the model {p.shape}")
        for name, p in params.items():
            if name in state:
                p.data[...] = np.asarray(state[name])
        for prefix, module in local.items():
            keys = set(module._local_state()) | module._optional_state_keys()
            mine = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and k[len(prefix):] in keys}
            module._load_local_state(mine)

    def _collect_states(self, prefix, out):
        out[prefix] = self
        for i, child in enumerate(self.children()):
            child._collect_states(f"{prefix}{i}.", out)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def output_shape(self, input_shape: tuple) -> tuple:
        """The output shape for an input shape (None for the batch axis)."""
        return input_shape


def grad_target(p: Parameter, accumulate: bool) -> np.ndarray | None:
    """Where a backward writes p's gradient: None when p is frozen; p.grad, or a fresh array when p
    has none yet. A fresh array becomes p.grad only through keep_grad, after the kernel succeeded:
    a backward that raises leaves p.grad as it was."""
    if not p.trainable:
        return None
    if p.grad is None:
        return np.zeros_like(p.data) if accumulate else np.empty_like(p.data)
    return p.grad


def keep_grad(p: Parameter | None, grad: np.ndarray | None) -> None:
    """After a successful backward: a fresh gradient array from grad_target becomes p.grad."""
    if p is not None and grad is not None and p.grad is None:
        p.grad = grad


def check_input(owner, name: str, x) -> np.ndarray:
    """TypeError unless x is an ndarray (the kernels check its dtype, layout and shape). owner: the
    layer, or the name of the function, that the message names."""
    if not isinstance(x, np.ndarray):
        where = owner if isinstance(owner, str) else type(owner).__name__
        raise TypeError(f"{where}: {name} must be a numpy.ndarray, got {type(x).__name__}")
    return x
