"""Module: the base of gradfuse's layers and models. Explicit forward and backward, no autograd.

    y = layer.forward(x, training=True)    # keeps what its backward needs (references, not copies)
    dx = layer.backward(dy)                # writes the parameters' gradients (p.grad), returns dx

backward WRITES each parameter's gradient (no need to zero them first); backward(dy,
accumulate=True) adds to them instead, for gradient accumulation over micro-batches. A parameter
with trainable=False gets no gradient at all (nothing is computed for it). The arrays a forward
returns are fresh; the input x is referenced until the backward: do not modify it in between.
Every subclass's forward and backward run with gradfuse's caching allocator as NumPy's allocator
(gf.memory): the arrays they allocate reuse the memory of freed ones, never that of live ones.

backward computes the gradients of the LAST forward, whatever its mode: after forward(x,
training=False) it gives the eval-mode gradients (running statistics, no dropout), as torch does.
predict, predict_proba and predict_classes are not forwards in that sense: they leave every
module as they found it, so a backward still pending from a training forward is unaffected.

Custom modules, the torch way
-----------------------------
    class Residual(gf.nn.Module):                    # y = x + fc2(relu(fc1(x)))
        def __init__(self, n):
            super().__init__()                        # first: it sets up the registration
            self.n = n                                # (get_config() reads constructor arguments back)
            self.fc1 = gf.nn.Dense(n, n, activation="relu")
            self.fc2 = gf.nn.Dense(n, n)

        def forward(self, x, training=None):
            return x + self.fc2.forward(self.fc1.forward(x, training), training)

        def backward(self, dy, *, accumulate=False, need_input_grad=True):
            dh = self.fc2.backward(dy, accumulate=accumulate)
            return self.fc1.backward(dh, accumulate=accumulate) + dy

Assigning an attribute registers it: a Module becomes a child, a Parameter one of this module's
parameters (register_buffer(name, array) declares a buffer: state that is saved but not trained).
Names are dotted paths: state_dict() keys like "res.fc1.weight", inside a Sequential "3.fc1.weight".

What a subclass writes:

- forward(x, training=None): the output; keep what backward needs (children keep their own).
  training=None means self.training (self._mode(training) resolves it); pass it to the children.
- backward(dy, *, accumulate=False, need_input_grad=True): the gradients of the last forward: write
  (accumulate: add to) each trainable parameter's .grad, usually by calling the children's backward
  in reverse order with the same accumulate, and return dx (None is allowed when need_input_grad is
  False). A Parameter reached twice in one backward (shared, or used twice) must get the sum: call
  the second backward that reaches it with accumulate=True. Sequential does this by itself.
- optionally output_shape(input_shape), for the shape checks and summary() (the default: unknown),
  and get_config() (the constructor's arguments; by default read back from attributes of the same
  names) with @gf.nn.register_serializable on the class, for model.save / gf.load_model.

What the base class gives: parameters() / named_parameters(), children() / named_children(),
modules() / named_modules(), buffers() / named_buffers(), add_module, register_parameter,
register_buffer, state_dict() / load_state_dict(), train() / eval() (reaching every child),
freeze() / unfreeze(), zero_grad(), num_parameters(), predict / predict_proba / predict_classes,
save / load_weights, and __call__ (forward).
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np

from .. import checkpoint, memory, ops
from .._config import config
from .._ext import _core
from .parameter import Parameter

MODEL_FORMAT = "gradfuse.model"
MODEL_FORMAT_VERSION = 1
_REGISTRY: dict[str, type] = {}  # class name -> Module subclass: what gf.load_model can build


_PRECISIONS = {
    "fp32": "fp32",
    "float32": "fp32",
    "bf16": "bf16",
    "bfloat16": "bf16",
    "mixed_bfloat16": "bf16",  # Keras's policy name
    "bf16-mixed": "bf16",  # Lightning's
}


_WARNED = []


def _warn_without_bf16_units() -> None:
    """Once per process: where the bf16 GEMMs run on the fp32 units (no AMX-BF16 / AVX512-BF16,
    or no oneDNN), bf16 saves memory traffic but no arithmetic, and the conversions cost: say so,
    as Keras's mixed-precision policy does on a GPU without fast float16."""
    if _WARNED or _core is None or _core._get_gemm_bf16() != "fallback":
        return
    _WARNED.append(True)
    warnings.warn(
        "gradfuse: precision='bf16' on a CPU without bf16 units in use (gf.config()['gemm_bf16'] is "
        f"{config()['gemm_bf16']!r}): the bf16 GEMMs run on the float32 units after a conversion, so "
        "expect training slower than precision='fp32'; AMX-BF16 or AVX512-BF16 (Sapphire Rapids and "
        "later Xeons) is where bf16 pays",
        RuntimeWarning,
        stacklevel=3,
    )


def _bf16():
    import ml_dtypes  # imported where bf16 is used: a few hundred ms on a cold start

    return ml_dtypes.bfloat16


def _as_float32(out):
    """A bf16 output as float32 (exact): what predict returns under precision="bf16"."""
    return out.astype(np.float32) if isinstance(out, np.ndarray) and out.dtype.kind == "V" else out


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


class Module:
    """A layer or a model: parameters, buffers (state that is not trained), children, train/eval mode."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("gradfuse."):  # the built-in layers can always be saved
            _REGISTRY[cls.__name__] = cls
        # every forward and backward allocates its arrays through the caching allocator (gf.memory)
        for name in ("forward", "backward"):
            if name in cls.__dict__ and callable(cls.__dict__[name]):
                setattr(cls, name, memory.scoped(cls.__dict__[name]))

    # "fp32" or "bf16" (set_precision): what this module computes in. A class attribute, so that a
    # subclass whose __init__ runs code before super().__init__() still has one.
    _precision = "fp32"

    def __init__(self):
        # name -> "module" | "parameter" | "buffer": what is registered; the values are ordinary
        # attributes (fast to read in forward and backward)
        object.__setattr__(self, "_kinds", {})
        object.__setattr__(self, "_non_persistent", set())
        self.training = True
        self._cache = None

    # ---- registration (torch's rules) ---------------------------------------------------------------
    def __setattr__(self, name, value):
        kinds = self.__dict__.get("_kinds")
        kind = "module" if isinstance(value, Module) else "parameter" if isinstance(value, Parameter) else None
        if kinds is None:
            if kind is not None:
                raise AttributeError(
                    f"cannot assign {kind} {name!r} before Module.__init__() call (call super().__init__() first)"
                )
        elif kind is not None:
            kinds[name] = kind
            self._non_persistent.discard(name)
        elif name in kinds and value is not None:
            if kinds[name] != "buffer":
                raise TypeError(
                    f"cannot assign {type(value).__name__} as {kinds[name]} {name!r} "
                    f"(a {'Module' if kinds[name] == 'module' else 'Parameter'} or None expected)"
                )
            if not isinstance(value, np.ndarray):
                raise TypeError(
                    f"cannot assign {type(value).__name__} as buffer {name!r} (an ndarray or None expected)"
                )
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        if "_kinds" in self.__dict__:
            self._kinds.pop(name, None)
            self._non_persistent.discard(name)
        object.__delattr__(self, name)

    def _check_new_name(self, what: str, name, kind: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"{what}: the name must be a str, got {type(name).__name__}")
        if not name or "." in name:
            raise KeyError(f"{what}: the name must be non-empty and contain no '.', got {name!r}")
        if "_kinds" not in self.__dict__:
            raise AttributeError(f"{what}: call Module.__init__() first")
        if hasattr(self, name) and self._kinds.get(name) != kind:
            raise KeyError(f"{what}: attribute {name!r} already exists")

    def add_module(self, name: str, module: Module | None) -> None:
        """Register a child module under `name` (what `self.name = module` does)."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {type(module).__name__} is not a gradfuse Module")
        self._check_new_name("add_module", name, "module")
        self._kinds[name] = "module"
        object.__setattr__(self, name, module)

    register_module = add_module

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register a Parameter under `name` (what `self.name = param` does)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {type(param).__name__} is not a gradfuse Parameter")
        self._check_new_name("register_parameter", name, "parameter")
        self._kinds[name] = "parameter"
        object.__setattr__(self, name, param)

    def register_buffer(self, name: str, tensor: np.ndarray | None, persistent: bool = True) -> None:
        """Register an array that is state but not a parameter (a running statistic): saved in the
        state_dict (unless persistent=False), loaded in place, never trained."""
        if tensor is not None and not isinstance(tensor, np.ndarray):
            raise TypeError(f"register_buffer: {type(tensor).__name__} is not a numpy.ndarray")
        self._check_new_name("register_buffer", name, "buffer")
        self._kinds[name] = "buffer"
        (self._non_persistent.discard if persistent else self._non_persistent.add)(name)
        object.__setattr__(self, name, tensor)

    def _registered(self, kind: str):
        for name, k in self.__dict__.get("_kinds", {}).items():
            value = self.__dict__.get(name)
            if k == kind and value is not None:
                yield name, value

    # ---- what subclasses implement ----------------------------------------------------------------
    def forward(self, x, training=None):
        raise NotImplementedError

    def backward(self, dy, *, accumulate=False, need_input_grad=True):
        """Gradients of the last forward: writes (or, with accumulate, adds to) each trainable
        parameter's .grad and returns dx (None when need_input_grad is False)."""
        raise NotImplementedError

    def jvp(self, dx, tangents=None):
        """Forward-mode derivative of the last forward (a Jacobian-vector product, next to backward):
        the change of its output along an input tangent dx (None: zero) and parameter tangents
        (a mapping Parameter -> array of its shape; a parameter left out has a zero tangent). It
        reads what the last forward kept (the same dropout mask, the same batch statistics) and
        changes no state. Used for Gauss-Newton products (gf.optim.HessianFree)."""
        raise NotImplementedError(f"{type(self).__name__} has no jvp (forward-mode derivative)")

    def _local_parameters(self) -> dict[str, Parameter]:
        """This module's own parameters (not its children's): the registered ones."""
        return dict(self._registered("parameter"))

    def _local_state(self) -> dict:
        """Buffers and counters saved with the model (running statistics, RNG counters): the
        registered persistent buffers; layers with counters add theirs."""
        return {k: v for k, v in self._registered("buffer") if k not in self.__dict__.get("_non_persistent", ())}

    def _load_local_state(self, state: dict) -> None:
        """Load what _local_state() gave (shapes were checked by load_state_dict)."""
        for name, value in state.items():
            current = getattr(self, name)
            if isinstance(current, np.ndarray):
                current[...] = np.asarray(value)
            else:
                setattr(self, name, np.array(value))

    def _optional_state_keys(self) -> set:
        """State keys a load may bring beyond those _local_state() has now (e.g. a fitted
        standardizer's statistics, loaded into an unfitted one)."""
        return set()

    def children(self) -> list[Module]:
        """The direct sub-modules (the registered ones, in the order they were assigned)."""
        return [m for _, m in self.named_children()]

    def named_children(self):
        """(name, module) for each direct sub-module. A subclass that overrides children() (as
        Sequential does) names them by position: "0", "1", ..."""
        if type(self).children is not Module.children:
            return [(str(i), m) for i, m in enumerate(self.children())]
        return list(self._registered("module"))

    def output_shape(self, input_shape):
        """The output shape for an input shape (None for an unknown size, the batch axis included);
        None when it is unknown (the default for custom modules: shape checks skip them), a
        ValueError (saying what this module takes) when the input cannot fit. The built-in layers
        without their own rule keep the shape."""
        return input_shape if type(self).__module__.startswith("gradfuse.") else None

    # ---- the common API ------------------------------------------------------------------------------
    def __call__(self, x, training=None):
        return self.forward(x, training)

    def _mode(self, training):
        return self.training if training is None else bool(training)

    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        """(dotted name, module) for this module ("") and every descendant, parents first."""
        yield from self._walk(prefix, memo if memo is not None else set(), remove_duplicate, ())

    def _walk(self, prefix, memo, remove_duplicate, ancestors):
        if id(self) in ancestors:  # a module that holds one of its parents: no endless walk
            return
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self.named_children():
            yield from child._walk(_join(prefix, name), memo, remove_duplicate, ancestors + (id(self),))

    def modules(self):
        return [m for _, m in self.named_modules()]

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """(dotted name, Parameter): "weight", "0.weight", "res.fc1.bias", ... A Parameter shared
        between modules appears once (under its first name) unless remove_duplicate is False."""
        seen = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, p in module._local_parameters().items():
                if p is None or (remove_duplicate and id(p) in seen):
                    continue
                seen.add(id(p))
                yield _join(module_prefix, name), p

    def parameters(self, recurse: bool = True) -> list[Parameter]:
        """Every Parameter once (shared ones too): what an optimizer steps."""
        return [p for _, p in self.named_parameters(recurse=recurse)]

    def named_buffers(self, prefix: str = "", recurse: bool = True):
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, b in module._registered("buffer"):
                yield _join(module_prefix, name), b

    def buffers(self, recurse: bool = True) -> list[np.ndarray]:
        return [b for _, b in self.named_buffers(recurse=recurse)]

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.size for p in self.parameters() if p.trainable or not trainable_only)

    # ---- precision ------------------------------------------------------------------------------------
    @property
    def precision(self) -> str:
        """ "fp32" or "bf16": see set_precision."""
        return self._precision

    def set_precision(self, precision: str):
        """Mixed precision for this module and every module inside it: "fp32" (the default) or
        "bf16" (also "bfloat16", Keras's "mixed_bfloat16", Lightning's "bf16-mixed"). Returns self.

        bf16 (float32 models only): the master weights, their gradients and the optimizer state stay
        float32; each weight a GEMM reads gets a bf16 compute copy (Parameter.bf16) that the optimizer
        writes in the same fused pass as the update; activations travel between layers as
        ml_dtypes.bfloat16 arrays; the GEMMs multiply bf16 x bf16 with float32 accumulation; batch
        norm's statistics and parameters, biases, the loss value and every reduction stay float32.
        A float32 input is rounded to bf16 once, by the first layer that needs it. predict and
        evaluate run in the model's precision and return float32; state_dict and checkpoints hold
        the float32 masters only. Back to "fp32": the copies are dropped, nothing else changes."""
        name = _PRECISIONS.get(precision) if isinstance(precision, str) else None
        if name is None:
            raise ValueError(f"precision must be one of {', '.join(repr(k) for k in _PRECISIONS)}, got {precision!r}")
        if name == "bf16":
            for pname, p in self.named_parameters():
                if p.dtype != np.float32:
                    raise TypeError(
                        f"precision='bf16' trains float32 master weights in bf16; parameter {pname!r} is "
                        f"{p.dtype} (build the model in float32, or keep precision='fp32')"
                    )
        if name == "bf16":
            _warn_without_bf16_units()
        for module in self.modules():
            module._precision = name
            if name == "bf16":
                for p in module._compute_parameters():
                    p.make_bf16_copy()  # in an arena: one bf16 arena for all (one optimizer call)
        if name == "fp32":
            for p in self.parameters():
                if p._arena is not None and p._arena.bf16 is not None:
                    p._arena.drop_bf16_copies()
                elif p.bf16 is not None:
                    p.drop_bf16_copy()
        return self

    def _compute_parameters(self) -> list:
        """The Parameters a bf16 computation reads in bf16 (a GEMM's weight): they get compute
        copies under precision="bf16". Default: none (biases and batch-norm parameters stay float32)."""
        return []

    def _in_precision(self, x: np.ndarray) -> np.ndarray:
        """x in this module's compute dtype: a float32 array rounded to bf16 once under
        precision="bf16" (the model's input, or a custom module's float32 output); a bf16 array
        widened to float32 (exact) under "fp32" (a float32 layer after bf16 ones)."""
        if self._precision == "bf16":
            return x.astype(_bf16()) if x.dtype == np.float32 else x
        return x.astype(np.float32) if x.dtype.kind == "V" else x

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
        """Parameters (copies) and buffers by dotted name ('0.weight', '1.running_mean',
        'res.fc1.weight', ...). As in torch, something shared appears under each of its names."""
        out = {name: p.data.copy() for name, p in self.named_parameters(remove_duplicate=False)}
        for prefix, module in self.named_modules(remove_duplicate=False):
            for k, v in module._local_state().items():
                out[_join(prefix, k)] = v.copy() if isinstance(v, np.ndarray) else v
        return out

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy values in (shapes must match). Everything is checked before anything changes;
        strict refuses missing and unexpected keys. A dict read from a model file (model.save)
        has its architecture compared with this model's first, as load_weights does. Parameters'
        bf16 compute copies (Parameter.bf16) are rewritten from the loaded values; the dict never
        holds them (state_dict() has the fp32 masters only)."""
        if isinstance(state, dict) and isinstance(state.get("format"), str) and state["format"] == MODEL_FORMAT:
            state = _weights_for(self, state, "load_state_dict")
        params = dict(self.named_parameters(remove_duplicate=False))
        modules = dict(self.named_modules(remove_duplicate=False))
        buffers = {_join(prefix, k): v for prefix, m in modules.items() for k, v in m._local_state().items()}
        expected = set(params) | set(buffers)
        optional = {_join(prefix, k) for prefix, m in modules.items() for k in m._optional_state_keys()}
        if strict:
            missing = sorted(expected - set(state))
            unexpected = sorted(set(state) - expected - optional)
            if missing or unexpected:
                raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, current in list(params.items()) + list(buffers.items()):
            if name in state and isinstance(current, (Parameter, np.ndarray)):
                value = np.asarray(state[name])
                if value.shape != current.shape:
                    raise ValueError(f"load_state_dict: {name} has shape {value.shape}, the model {current.shape}")
        for name, p in params.items():
            if name in state:
                p.data[...] = np.asarray(state[name])
                p.refresh_bf16()  # a bf16 compute copy follows its master
        for prefix, module in modules.items():
            keys = set(module._local_state()) | module._optional_state_keys()
            cut = len(prefix) + 1 if prefix else 0
            mine = {
                k[cut:]: v for k, v in state.items() if (not prefix or k.startswith(prefix + ".")) and k[cut:] in keys
            }
            module._load_local_state(mine)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    # ---- inference ---------------------------------------------------------------------------------------
    def predict(self, x, batch_size: int | None = 1024):
        """The last layer's output in eval mode (logits for a model without a final Sigmoid or
        Softmax), over x in batches (float32 under precision="bf16"). x is cast to the model's
        dtype here (float64, int or list data into a float32 model). No state changes: running
        statistics and dropout counters do not move, and every module is left as it was found, so a
        backward still pending from a training forward computes that forward's gradients."""
        x = self._inference_input(x, "predict")
        saved = [(m, dict(m.__dict__)) for m in self.modules()]
        try:
            self.eval()
            if batch_size is None or len(x) <= batch_size:
                return _as_float32(self.forward(x, training=False))
            return np.concatenate(
                [_as_float32(self.forward(x[i : i + batch_size], training=False)) for i in range(0, len(x), batch_size)]
            )
        finally:  # put back every attribute: forward caches, masks, modes
            for module, attributes in saved:
                module.__dict__.clear()
                module.__dict__.update(attributes)

    def predict_proba(self, x, batch_size: int | None = 1024):
        """Probabilities: the output itself when the model ends in Sigmoid or Softmax (or a Dense
        with activation="sigmoid"), else softmax over the last axis of the logits, or the sigmoid
        when there is a single output (shape (N,) or (N, 1): the probability of class 1). The
        shape is predict's."""
        out = self.predict(x, batch_size)
        if self.gives_probabilities():
            return out
        probs = np.empty_like(out)
        if out.ndim <= 1 or out.shape[-1] == 1:
            ops.activation_forward(out, probs, activation="sigmoid")
        else:
            ops.softmax_forward(out, probs)
        return probs

    def predict_classes(self, x, batch_size: int | None = 1024) -> np.ndarray:
        """Class indices (int64, shape (N,)): the argmax over the last axis, or, for a single
        output, 1 where its probability is above 0.5."""
        probs = self.predict_proba(x, batch_size)
        if probs.ndim <= 1 or probs.shape[-1] == 1:
            return (probs.reshape(len(probs)) > 0.5).astype(np.int64)
        return np.argmax(probs, axis=-1).astype(np.int64)

    # Whether the output is probabilities (for predict_proba and the losses' check in fit): True,
    # False, or None when unknown (a custom module). Layers that pass their input's meaning on
    # (Identity, Flatten, Dropout) set _passes_output, and a Sequential looks through them.
    _passes_output = False

    def gives_probabilities(self) -> bool | None:
        return None

    def _input_dtype(self) -> np.dtype | None:
        params = self.parameters()
        return params[0].dtype if params else None

    def _first_layer(self) -> str:
        return repr(self)

    def _inference_input(self, x, where: str) -> np.ndarray:
        """x as a C-contiguous array of the model's dtype, its shape checked against the layers."""
        dtype = self._input_dtype()
        given = f"an array of dtype {x.dtype}" if isinstance(x, np.ndarray) else f"a {type(x).__name__}"
        target = dtype or "float32"
        fix = f"pass numbers, e.g. np.asarray(x, dtype=np.{target})"
        try:
            arr = np.asarray(x)
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"its values are of dtype {arr.dtype}")
            if dtype is None:
                dtype = arr.dtype if arr.dtype.kind == "f" and arr.dtype.itemsize in (4, 8) else np.float32
            arr = np.ascontiguousarray(arr, dtype=np.dtype(dtype).newbyteorder("="))
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{where}: x ({given}) cannot be the {target} input of {self._first_layer()} ({exc}); {fix}"
            ) from None
        if arr.ndim == 0:
            raise ValueError(f"{where}: x is a scalar; {self._first_layer()} takes a batch (N, ...)")
        try:
            self.output_shape((None,) + arr.shape[1:])
        except ValueError as exc:
            raise ValueError(f"{where}: x has shape {arr.shape}: {self._shape_error(exc)}") from None
        return arr

    def _shape_error(self, exc: ValueError) -> str:
        """output_shape's complaint, naming this module (a Sequential's names its layers already)."""
        return f"{self!r} {exc}"

    # ---- saving the architecture with the weights ----------------------------------------------------
    def get_config(self) -> dict:
        """The constructor's arguments, read back from attributes of the same names (override it
        when they are not kept that way). Used by save(), with register_serializable on the class."""
        config = {}
        for name, param in inspect.signature(type(self).__init__).parameters.items():
            if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if not hasattr(self, name):
                raise TypeError(
                    f"{type(self).__name__}.get_config: the constructor argument {name!r} is not kept as "
                    f"an attribute; store it (self.{name} = {name}) or define get_config()"
                )
            config[name] = getattr(self, name)
        return config

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def save(self, path) -> None:
        """Save the model: its architecture (each module's class and get_config()) and its
        state_dict, in gf.save's checksummed, pickle-free format (written atomically).
        gf.load_model(path) rebuilds it; model.load_weights(path) loads the weights into a model
        built in code, refusing them when the architectures differ. Custom module classes need
        @gf.nn.register_serializable (else a TypeError says so, and how to save the weights alone)."""
        checkpoint.save(
            {
                "format": MODEL_FORMAT,
                "version": MODEL_FORMAT_VERSION,
                "architecture": architecture(self),
                "state_dict": self.state_dict(),
            },
            path,
        )

    def load_weights(self, path) -> None:
        """Load the weights of a file written by model.save into this model, after checking that its
        architecture is this model's (ValueError naming the first difference)."""
        self.load_state_dict(_weights_for(self, _read_model_file(path), "load_weights", path))


def register_serializable(cls: type) -> type:
    """Let gf.load_model build a custom Module class (a class decorator, like Keras'
    register_keras_serializable): saved models name it by its class name; its get_config() gives
    the constructor's arguments, from_config(config) builds it."""
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise TypeError(f"register_serializable: {cls!r} is not a gradfuse Module subclass")
    known = _REGISTRY.get(cls.__name__)
    if known is not None and known is not cls and known.__module__.startswith("gradfuse."):
        raise ValueError(f"register_serializable: {cls.__name__} is the name of a built-in layer; rename the class")
    _REGISTRY[cls.__name__] = cls
    return cls


def architecture(module: Module, where: str = "model") -> dict:
    """{"class": name, "config": get_config()}: what gf.load_model needs to build the module."""
    cls = type(module)
    if _REGISTRY.get(cls.__name__) is not cls:
        raise TypeError(
            f"save: {where} is a {cls.__qualname__}, a custom module gradfuse cannot rebuild. Either decorate the "
            f"class with @gf.nn.register_serializable (its get_config() returns the constructor's arguments), or save "
            f"the weights alone: gf.save(model.state_dict(), path), and later model.load_state_dict(gf.load(path)) "
            f"into a model built in code"
        )
    return {"class": cls.__name__, "config": module.get_config()}


def build(arch: dict, where: str = "model") -> Module:
    """The module an architecture() describes (fresh weights: load the state_dict next)."""
    if not isinstance(arch, dict) or set(arch) != {"class", "config"} or not isinstance(arch["config"], dict):
        raise checkpoint.CheckpointError(f"{where}: not a module description: {arch!r:.200}")
    cls = _REGISTRY.get(arch["class"])
    if cls is None:
        raise TypeError(
            f"load_model: {where} is a {arch['class']}, which is not a registered module class: import "
            f"the code that defines it and decorate the class with @gf.nn.register_serializable"
        )
    return cls.from_config(arch["config"])


def load_model(path) -> Module:
    """The model model.save(path) wrote: built from its architecture, its state_dict loaded.
    Its predictions are bitwise those of the saved model."""
    saved = _read_model_file(path)
    model = build(saved["architecture"])
    model.load_state_dict(saved["state_dict"])
    return model


def _read_model_file(path) -> dict:
    saved = checkpoint.load(path)
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        raise checkpoint.CheckpointError(
            f"{path}: not a model file (model.save writes them); for a state_dict "
            f"saved with gf.save use model.load_state_dict(gf.load(path))"
        )
    if saved.get("version") != MODEL_FORMAT_VERSION or set(saved) != {
        "format",
        "version",
        "architecture",
        "state_dict",
    }:
        raise checkpoint.CheckpointError(
            f"{path}: model file version {saved.get('version')!r} is not supported "
            f"(this gradfuse reads version {MODEL_FORMAT_VERSION})"
        )
    return saved


def _weights_for(model: Module, saved: dict, where: str, path=None) -> dict:
    """The state_dict of a model file, once its architecture is known to be model's."""
    difference = _difference(saved.get("architecture"), architecture(model), "model")
    if difference:
        source = path if path is not None else "the model file"
        raise ValueError(f"{where}: {source} holds another architecture than this model: {difference}")
    return saved["state_dict"]


def _difference(saved, mine, where: str) -> str | None:
    """The first difference between two architectures, in words; None when they are the same."""
    if isinstance(saved, dict) and isinstance(mine, dict) and "class" in saved and "class" in mine:
        if saved["class"] != mine["class"]:
            return f"{where} is a {saved['class']} in the file, a {mine['class']} here"
        where = f"{where} ({mine['class']})"
        return _difference(saved.get("config"), mine.get("config"), where)
    if isinstance(saved, dict) and isinstance(mine, dict):
        for key in list(mine) + [k for k in saved if k not in mine]:
            if key not in saved or key not in mine:
                return (
                    f"{where}: {key} is {'missing' if key not in saved else saved[key]!r} in the file, "
                    f"{'missing' if key not in mine else repr(mine[key])} here"
                )
            found = _difference(saved[key], mine[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(saved, (list, tuple)) and isinstance(mine, (list, tuple)):
        if len(saved) != len(mine):
            return f"{where} has {len(saved)} entries in the file, {len(mine)} here"
        for i, (a, b) in enumerate(zip(saved, mine)):
            found = _difference(a, b, f"{where}[{i}]")
            if found:
                return found
        return None
    return None if saved == mine else f"{where} is {saved!r} in the file, {mine!r} here"


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
