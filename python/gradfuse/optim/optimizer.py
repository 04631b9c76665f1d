"""Optimizer: torch.optim's API (param groups, step, zero_grad, state_dict) over fused kernels.

How a step runs
---------------
Per parameter group, the optimizer keeps each state tensor (exp_avg, exp_avg_sq, ...) in ONE
buffer (a state arena) laid out like the group's parameters; each parameter's state is a view into
it. A step calls the group's kernel once with the lists of parameters, gradients and state views;
the bindings merge arrays that are adjacent in memory, so parameters from a ParameterArena step
as one contiguous segment, and separate arrays go through one multi-tensor call parallel over
all their elements. Parameters of one group are split into separate calls only when they differ in
dtype or in their scalar state (a parameter that missed steps because its gradient was None).

A step is all or nothing: when it takes several kernel calls, every call's arguments are checked
before the first one writes; with skip_nonfinite=True, gradients with NaN/Inf skip the whole step
(parameters, state and step counters untouched) and step() reports it. One optimizer is stepped by
one thread at a time (a lock serialises concurrent step() calls).
"""
from __future__ import annotations

import copy
import operator
import threading
from collections.abc import Iterable, Mapping

import numpy as np

from .. import ops
from .._backend import get_backend
from .._ext import _core
from ..nn.parameter import Parameter


class _Required:
    def __repr__(self) -> str:
        return "<required parameter>"


required = _Required()


class _Slot:
    """One parameter as the optimizer sees it."""

    __slots__ = ("obj", "state", "views")

    def __init__(self, obj):
        self.obj = obj            # what the user passed: an ndarray or a Parameter
        self.state: dict = {}     # torch-style state: scalars and views into the state arenas
        self.views: dict = {}     # state-arena views, kept from the first allocation on

    @property
    def data(self) -> np.ndarray:
        return self.obj.data if isinstance(self.obj, Parameter) else self.obj


class _ArenaRuns:
    """A group whose parameters all live in ParameterArenas, as maximal runs of neighbours.

    While every parameter still holds its arena views (checked each step by identity, in C-level
    loops), a step passes one flat view per run instead of one array per parameter: for a group
    that is a whole arena, one array per list, whatever the number of parameters.
    """

    def __init__(self, objs: list, bounds: list):
        self.objs = objs
        self.data_views = [p._arena_data for p in objs]
        self.grad_views = [p._arena_grad for p in objs]
        self.bounds = bounds  # (first slot, end slot, arena, first element, end element) per run
        self.params = [arena.data[a:b] for _, _, arena, a, b in bounds]
        self.grads = [arena.grad[a:b] for _, _, arena, a, b in bounds]
        sizes = np.cumsum([0] + [p.size for p in objs])
        self.state_ranges = [(int(sizes[i]), int(sizes[j])) for i, j, *_ in bounds]
        self._states: dict = {}

    @classmethod
    def of(cls, params: list):
        if not params or not all(isinstance(p, Parameter) and p._arena is not None for p in params):
            return None
        bounds, start = [], 0
        for i in range(1, len(params) + 1):
            prev = params[i - 1]
            if i == len(params) or params[i]._arena is not prev._arena or \
                    params[i]._offset != prev._offset + prev.size:
                first = params[start]
                bounds.append((start, i, first._arena, first._offset, prev._offset + prev.size))
                start = i
        return cls(params, bounds)

    def intact(self, grads: list) -> bool:
        """Every parameter still has its arena data, and every gradient is its arena gradient."""
        return all(map(operator.is_, grads, self.grad_views)) and \
            all(map(operator.is_, map(_DATA, self.objs), self.data_views))

    def states(self, opt: Optimizer, gi: int, keys: tuple) -> list:
        """Per state key of the optimizer: the runs' flat views into its state buffer, or None."""
        cached = self._states.get(keys)
        if cached is None:
            dtype = self.objs[0].data.dtype.char
            cached = [[opt._flat[(gi, dtype, k)][a:b] for a, b in self.state_ranges] if k in keys else None
                      for k in opt._state_keys]
            self._states[keys] = cached
        return cached


_DATA = operator.attrgetter("data")
_GRAD = operator.attrgetter("grad")
_TRAINABLE = operator.attrgetter("trainable")


class _StateMap(Mapping):
    """opt.state[p]: the state dict of parameter p (an ndarray or Parameter), looked up by identity."""

    def __init__(self, opt: Optimizer):
        self._opt = opt

    def __getitem__(self, param):
        slot = self._opt._slot_by_id.get(id(param))
        if slot is None:
            raise KeyError("not a parameter of this optimizer")
        return slot.state

    def __iter__(self):
        return (slot.obj for group in self._opt._slots for slot in group if slot.state)

    def __len__(self):
        return sum(1 for group in self._opt._slots for slot in group if slot.state)


def _check_param(param, where: str) -> None:
    data = param.data if isinstance(param, Parameter) else param
    if not isinstance(data, np.ndarray):
        raise TypeError(f"optimizer can only optimize numpy arrays or gradfuse Parameters, but {where} is "
                        f"{type(param).__name__}")
    if data.dtype not in (np.float32, np.float64) or not data.dtype.isnative:
        raise TypeError(f"{where} has dtype {data.dtype}; expected float32 or float64")
    if not data.flags.c_contiguous:
        raise ValueError(f"{where} is not C-contiguous")
    if not data.flags.writeable:
        raise ValueError(f"{where} is read-only")


class Optimizer:
    """Base class of gradfuse's optimizers. Subclasses set:

    _kernel       the gf.ops kernel name
    _state_keys   per-parameter state arrays, in the kernel's argument order (torch's names)
    _scalar_keys  per-parameter scalar state (torch's names) and their initial values
    and override _validate (torch's wording), _kernel_kwargs, and where needed _used_keys,
    _initial_value and _advance.

    Threads: step() holds a per-optimizer lock from reading the gradients to committing the state,
    so concurrent step() calls on ONE optimizer are serialised (each applies, in some order; none
    fails, none interleaves with another). Different optimizers step concurrently: the kernels
    release the GIL. Other methods (zero_grad, state_dict, load_state_dict, editing param_groups)
    take no lock: do not call them while another thread steps the same optimizer.
    """

    _kernel: str = ""
    _state_keys: tuple[str, ...] = ()
    _scalar_keys: dict = {"step": 0}
    _eager_state = False  # torch's Adagrad creates its state at construction

    def __init__(self, params, defaults: dict, *, skip_nonfinite: bool = False):
        if isinstance(params, (np.ndarray, Parameter)):
            raise TypeError("params argument given to the optimizer should be an iterable of arrays or dicts, "
                            f"but got {type(params).__name__}")
        for key in ("capturable", "differentiable"):
            if defaults.get(key):
                raise ValueError(f"{key}=True is not supported: gradfuse steps are fused, in place and not traced")
        self.defaults = dict(defaults)
        self.skip_nonfinite = bool(skip_nonfinite)
        self.skipped_steps = 0
        self.last_step_skipped = False
        self.param_groups: list[dict] = []
        self._slots: list[list[_Slot]] = []
        self._slot_by_id: dict[int, _Slot] = {}
        self._objs: list = []  # every parameter as passed, in group order
        self._has_parameters = False
        self._all_parameters = True
        self._single_dtype: list[bool] = []
        self._arrays: list[list | None] = []
        self._runs: list[_ArenaRuns | None] = []
        self._flat: dict = {}  # (group, dtype char, key) -> the state arena buffer
        # per group, when its last step was one call over all of it:
        # (scalars, state keys, the slots' state dicts, the state lists of the kernel call)
        self._fast: list[tuple | None] = []
        self._lock = threading.Lock()
        self.state = _StateMap(self)
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # ---- groups ---------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters with its own hyperparameters (missing ones take the defaults)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        group = dict(param_group)
        params = group.get("params")
        if isinstance(params, (np.ndarray, Parameter)):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the ordering "
                            "of tensors in sets will change between runs. Please use a list instead.")
        elif not isinstance(params, Iterable):
            raise TypeError(f"param_group['params'] must be an iterable of arrays, got {type(params).__name__}")
        params = list(params)
        names = [p[0] for p in params if isinstance(p, tuple)]
        if names:
            if len(names) != len(params):
                raise ValueError("all optimizer params should be with/without names. Some param names are missing")
            group["param_names"] = names
            params = [p[1] for p in params]
        group["params"] = params
        gi = len(self.param_groups)
        for i, p in enumerate(params):
            _check_param(p, f"param group {gi}, params[{i}]")
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            group.setdefault(name, default)
        self._validate(group)
        ids = [id(p) for p in params]
        if len(set(ids)) != len(ids):
            dup = next(i for i, x in enumerate(ids) if ids.index(x) != i)
            raise ValueError(f"param group {gi}: params[{dup}] appears more than once in the group")
        if any(x in self._slot_by_id for x in ids):
            raise ValueError("some parameters appear in more than one parameter group")
        slots = [_Slot(p) for p in params]
        self.param_groups.append(group)
        self._slots.append(slots)
        self._slot_by_id.update(zip(ids, slots))
        self._objs.extend(params)
        self._has_parameters = any(isinstance(p, Parameter) for p in self._objs)
        self._all_parameters = all(isinstance(p, Parameter) for p in self._objs)
        self._single_dtype.append(len({s.data.dtype for s in slots}) <= 1)
        # plain arrays never change identity: their list is reused by every step
        self._arrays.append(None if any(isinstance(p, Parameter) for p in params) else params)
        self._runs.append(_ArenaRuns.of(params) if self._single_dtype[-1] else None)
        self._fast.append(None)
        if self._eager_state:
            for slot in slots:
                self._init_state(gi, slot, self._used_keys(group))
                slot.state.update(self._scalar_keys)

    def _validate(self, group: dict) -> None:
        """Raise ValueError for invalid hyperparameters (torch's wording)."""

    # ---- state arenas -----------------------------------------------------------------------------
    def _used_keys(self, group: dict) -> tuple[str, ...]:
        """The state arrays this group's settings use (default: all)."""
        return self._state_keys

    def _initial_value(self, group: dict, key: str) -> float:
        return 0.0

    def _views(self, gi: int, slot: _Slot, key: str) -> np.ndarray:
        """slot's view into the group's arena for `key`, allocating the arena on first use."""
        view = slot.views.get(key)
        if view is None:
            dtype = slot.data.dtype
            members = [s for s in self._slots[gi] if s.data.dtype == dtype]
            buf = np.zeros(sum(s.data.size for s in members), dtype)
            self._flat[(gi, dtype.char, key)] = buf
            offset = 0
            for s in members:
                s.views[key] = buf[offset:offset + s.data.size].reshape(s.data.shape)
                offset += s.data.size
            view = slot.views[key]
        return view

    def _init_state(self, gi: int, slot: _Slot, keys) -> None:
        group = self.param_groups[gi]
        for key in keys:
            if key not in slot.state:
                view = self._views(gi, slot, key)
                view.fill(self._initial_value(group, key))
                slot.state[key] = view

    # ---- stepping -----------------------------------------------------------------------------------
    def _scalars(self, slot: _Slot) -> tuple:
        return tuple(slot.state.get(k, v) for k, v in self._scalar_keys.items())

    def _kernel_kwargs(self, group: dict, scalars: tuple) -> dict:
        """Keyword arguments of the kernel for parameters with these scalar states."""
        raise NotImplementedError

    def _advance(self, group: dict, scalars: tuple) -> tuple:
        """The scalar state after a step taken from `scalars` (default: the first, "step", += 1)."""
        return (scalars[0] + 1,) + scalars[1:] if scalars else scalars

    def _bucket_key(self, group: dict, slot: _Slot):
        """Parameters with equal keys step in one kernel call."""
        return (slot.data.dtype.char, self._scalars(slot))

    def _grads(self, grads) -> list:
        objs = self._objs
        if grads is None:
            if not self._all_parameters:
                i = next(i for i, p in enumerate(objs) if not isinstance(p, Parameter))
                raise TypeError("step() needs grads=[...] when the parameters are plain arrays "
                                f"(params[{i}] is an ndarray, which has no .grad)")
            if all(map(_TRAINABLE, objs)):
                return list(map(_GRAD, objs))
            return [p.grad if p.trainable else None for p in objs]
        grads = [grads] if isinstance(grads, np.ndarray) else list(grads)
        if len(grads) != len(objs):
            raise ValueError(f"step(): got {len(grads)} gradients for {len(objs)} parameters "
                             "(one per parameter, in param-group order; None skips a parameter)")
        if self._all_parameters:
            if not all(map(_TRAINABLE, objs)):
                grads = [g if p.trainable else None for g, p in zip(grads, objs)]
        elif self._has_parameters:  # frozen Parameters get no step
            grads = [None if isinstance(p, Parameter) and not p.trainable else g for g, p in zip(grads, objs)]
        return grads

    def _plan(self, grads: list) -> list:
        """The kernel calls of one step: (group index, slots, grads, scalars)."""
        calls, pos = [], 0
        for gi, group in enumerate(self.param_groups):
            slots = self._slots[gi]
            gs = grads[pos:pos + len(slots)]
            pos += len(slots)
            fast = self._fast[gi]
            if fast is not None and type(None) not in map(type, gs) and fast[1] == self._used_keys(group):
                calls.append((gi, slots, gs, fast[0]))  # the whole group, as last step: one call
                continue
            buckets: dict = {}
            for slot, g in zip(slots, gs):
                if g is not None:
                    entry = buckets.setdefault(self._bucket_key(group, slot), ([], []))
                    entry[0].append(slot)
                    entry[1].append(g)
            for bslots, bgrads in buckets.values():
                calls.append((gi, bslots, bgrads, self._scalars(bslots[0])))
        return calls

    def _call_args(self, gi: int, slots: list, grads: list, scalars: tuple, grad_scale) -> tuple[list, dict]:
        group = self.param_groups[gi]
        keys = self._used_keys(group)
        fast = self._fast[gi]
        if fast is not None and slots is self._slots[gi]:
            runs = self._runs[gi]
            if runs is not None and runs.intact(grads):  # one flat view per arena run
                kwargs = self._kernel_kwargs(group, scalars)
                if grad_scale is not None:
                    kwargs["grad_scale"] = grad_scale
                return [runs.params, runs.grads, *runs.states(self, gi, keys)], kwargs
            states = fast[3]
        else:
            for slot in slots:  # fresh state: filled in the arena, joins slot.state after the step
                for key in keys:
                    if key not in slot.state:
                        self._views(gi, slot, key).fill(self._initial_value(group, key))
            states = [[slot.views[k] for slot in slots] if k in keys else None for k in self._state_keys]
        kwargs = self._kernel_kwargs(group, scalars)
        if grad_scale is not None:
            kwargs["grad_scale"] = grad_scale
        params = self._arrays[gi] if slots is self._slots[gi] and self._arrays[gi] else [s.data for s in slots]
        return [params, grads, *states], kwargs

    def step(self, grads=None, closure=None, *, grad_scale=None):
        """One fused step over every parameter group.

        grads: one gradient per parameter in param-group order (None skips that parameter), or
        None to use each Parameter's .grad. grad_scale: the gradients are divided by it inside
        the fused pass (a mixed-precision loss scale). Returns the closure's loss when a closure is
        given, else True if the step was applied and False if skip_nonfinite skipped it.
        """
        loss = closure() if closure is not None else None
        with self._lock:
            applied = self._step(self._grads(grads), grad_scale)
        return loss if closure is not None else applied

    def _step(self, grads: list, grad_scale) -> bool:
        calls = self._plan(grads)
        for gi in {call[0] for call in calls}:  # hyperparameters may have been edited since the last step
            self._validate(self.param_groups[gi])
        prepared = [(gi, slots, scalars, *self._call_args(gi, slots, g, scalars, grad_scale))
                    for gi, slots, g, scalars in calls]
        kernel = getattr(ops, self._kernel)
        if len(prepared) == 1:  # the kernel checks everything, then skips or steps
            gi, slots, scalars, args, kwargs = prepared[0]
            applied = self._checked(gi, kernel, *args, skip_nonfinite=self.skip_nonfinite, **kwargs)
            if applied:
                self._commit(gi, slots, scalars)
            return self._applied(applied)
        # Several calls: all or nothing. Every call's scalars (the kernel on empty lists checks them
        # and writes nothing) and arrays are checked before the first one writes.
        for gi, _, _, args, kwargs in prepared:
            self._checked(gi, kernel, *[None if a is None else [] for a in args], **kwargs)
            self._checked(gi, _check_arrays, self._kernel, args)
        if self.skip_nonfinite:
            by_dtype: dict = {}
            for _, _, _, args, _ in prepared:
                for g in args[1]:
                    by_dtype.setdefault(g.dtype, []).append(g)
            if not all(ops.all_finite(arrays, grad_scale=grad_scale) for arrays in by_dtype.values()):
                return self._applied(False)
        for gi, slots, scalars, args, kwargs in prepared:
            kernel(*args, **kwargs)
            self._commit(gi, slots, scalars)
        return self._applied(True)

    def _applied(self, applied: bool) -> bool:
        self.last_step_skipped = not applied
        self.skipped_steps += not applied
        return applied

    def _commit(self, gi: int, slots: list, scalars: tuple) -> None:
        """After a successful kernel call: fresh state joins slot.state, scalars advance."""
        group = self.param_groups[gi]
        keys = self._used_keys(group)
        new = self._advance(group, scalars)
        items = tuple(zip(self._scalar_keys, new))
        fast = self._fast[gi]
        if fast is not None and slots is self._slots[gi]:  # every state array is already in place
            dicts = fast[2]
        else:
            dicts = [slot.state for slot in slots]
            for slot in slots:
                for key in keys:
                    slot.state.setdefault(key, slot.views[key])
        if len(items) == 1:
            (key, value), = items
            for state in dicts:
                state[key] = value
        elif items:
            for state in dicts:
                state.update(items)
        whole = len(slots) == len(self._slots[gi]) and self._single_dtype[gi]
        if not whole:
            self._fast[gi] = None
            return
        if fast is not None and fast[1] == keys:
            per_slot = fast[3]  # args may hold the flat arena-run views instead
        else:
            per_slot = [[slot.views[k] for slot in slots] if k in keys else None for k in self._state_keys]
        self._fast[gi] = (new, keys, dicts, per_slot)

    def _checked(self, gi, fn, *args, **kwargs):
        """Call fn; a TypeError/ValueError is re-raised with the optimizer and group named."""
        try:
            return fn(*args, **kwargs)
        except (TypeError, ValueError) as exc:
            where = f"{type(self).__name__}.step" + (f" (param group {gi})" if gi is not None else "")
            raise type(exc)(f"{where}: {exc}") from None

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of Parameter objects (plain arrays have none to clear).

        Arena gradients are zeroed in place: the arena owns them (see Parameter.zero_grad)."""
        for group in self._slots:
            for slot in group:
                if isinstance(slot.obj, Parameter):
                    slot.obj.zero_grad(set_to_none)

    # ---- state_dict -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{"state": {index: {key: value}}, "param_groups": [{..., "params": [index, ...]}]}, with
        torch's keys; arrays are copies, so the dict is a snapshot."""
        state, groups, index = {}, [], 0
        for group, slots in zip(self.param_groups, self._slots):
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            packed["params"] = list(range(index, index + len(slots)))
            groups.append(packed)
            for slot in slots:
                if slot.state:
                    state[index] = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in slot.state.items()}
                index += 1
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state_dict (ours, or torch's: tensors are read with np.asarray). Everything is
        checked first; on error nothing changes."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(s["params"]) != len(g) for s, g in zip(saved_groups, self._slots)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                             "optimizer's group")
        saved_state = state_dict["state"]
        new_groups, staged = [], []
        for gi, (saved, slots) in enumerate(zip(saved_groups, self._slots)):
            group = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            group["params"] = self.param_groups[gi]["params"]
            for key, value in self.param_groups[gi].items():
                group.setdefault(key, value)
            self._validate(group)
            new_groups.append(group)
            for index, slot in zip(saved["params"], slots):
                entry = saved_state.get(index, saved_state.get(str(index)))
                staged.append((gi, slot, self._stage_entry(entry, slot, index)))
        self.param_groups[:] = new_groups
        self._fast = [None] * len(self._fast)
        for gi, slot, (arrays, scalars) in staged:
            slot.state.clear()
            for key, value in arrays.items():
                view = self._views(gi, slot, key)
                view[...] = value
                slot.state[key] = view
            slot.state.update(scalars)

    def _stage_entry(self, entry, slot: _Slot, index) -> tuple[dict, dict]:
        if not entry:
            return {}, {}
        arrays, scalars = {}, {}
        for key, value in entry.items():
            if key in self._state_keys:
                arr = np.asarray(value)
                if arr.shape != slot.data.shape:
                    raise ValueError(f"state of parameter {index}: {key} has shape {arr.shape}, "
                                     f"the parameter {slot.data.shape}")
                arrays[key] = arr
            elif key in self._scalar_keys:
                number = np.asarray(value).item()
                scalars[key] = int(number) if key == "step" else float(number)
            else:
                raise ValueError(f"state of parameter {index}: unknown key {key!r} for {type(self).__name__}")
        return arrays, scalars

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key not in ("params", "param_names"):
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


def _check_arrays(kernel: str, args: list) -> None:
    """Run every array check of ops.<kernel>(*args) without writing anything."""
    specs = [(name, arr, i != 1, i < 2 or arr is not None)
             for i, (name, arr) in enumerate(zip(_KERNEL_ARG_NAMES[kernel], args))]
    if get_backend() == "cpp" and _core is not None:
        _core._check_tensor_lists(kernel, specs)
    else:
        from .._numpy._checks import tensor_lists
        tensor_lists(kernel, *specs)


_KERNEL_ARG_NAMES = {
    "sgd": ("params", "grads", "momentum_buffers"),
    "adam": ("params", "grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"),
    "adagrad": ("params", "grads", "state_sums"),
    "rmsprop": ("params", "grads", "square_avgs", "grad_avgs", "momentum_buffers"),
    "adadelta": ("params", "grads", "square_avgs", "acc_deltas"),
    "adamax": ("params", "grads", "exp_avgs", "exp_infs"),
    "nadam": ("params", "grads", "exp_avgs", "exp_avg_sqs"),
    "radam": ("params", "grads", "exp_avgs", "exp_avg_sqs"),
    "rprop": ("params", "grads", "prevs", "step_sizes"),
    "lion": ("params", "grads", "exp_avgs"),
}
