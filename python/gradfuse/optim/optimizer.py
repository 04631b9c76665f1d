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

Mixed precision: each float32 parameter may have a bf16 compute copy (Parameter.bf16, made by
Parameter.make_bf16_copy() or ParameterArena.make_bf16_copies(); for plain arrays,
set_compute_copies / make_compute_copies). The kernel writes the copies in the same pass as the
update (bitwise params.astype(bfloat16)); arena copies step as one flat view beside the arena.
Copies are derived data: state_dict() never holds them. When the masters change outside step()
(an assignment p.data[...] = ..., a torch-side update), call refresh_compute_copies();
Module.load_state_dict refreshes its parameters' copies itself, and load_state_dict of an
optimizer does not touch the masters.

A step is all or nothing: when it takes several kernel calls, every call's arguments are checked
before the first one writes; with skip_nonfinite=True, gradients with NaN/Inf skip the whole step
(parameters, state and step counters untouched) and step() reports it. One optimizer is stepped by
one thread at a time (a lock serialises concurrent step() calls).
"""

from __future__ import annotations

import copy
import functools
import operator
import threading
from collections.abc import Iterable, Mapping

import numpy as np

from .. import _checks, ops
from ..errors import KernelError
from ..nn.parameter import Parameter, _bfloat16, copies_changed, copies_epoch
from ..ops import run_optim
from ..table import KERNELS, Kernel


class _Required:
    def __repr__(self) -> str:
        return "<required parameter>"


required = _Required()


class _Slot:
    """One parameter as the optimizer sees it."""

    __slots__ = ("obj", "state", "views", "copy")

    def __init__(self, obj):
        self.obj = obj  # what the user passed: an ndarray or a Parameter
        self.state: dict = {}  # torch-style state: scalars and views into the state arenas
        self.views: dict = {}  # state-arena views, kept from the first allocation on
        self.copy: np.ndarray | None = None  # a plain array's bf16 compute copy (a Parameter's: .bf16)

    @property
    def data(self) -> np.ndarray:
        return self.obj.data if isinstance(self.obj, Parameter) else self.obj

    @property
    def compute_copy(self) -> np.ndarray | None:
        return self.obj.bf16 if isinstance(self.obj, Parameter) else self.copy


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
        self._copy_views: list | None = None  # each parameter's view into its arena's bf16 buffer
        self._copies: list | None = None  # the runs' flat views into those buffers
        self._copies_checked: tuple = (-1, None)  # (copies_epoch(), what copies() returned then)

    @classmethod
    def of(cls, params: list):
        if not params or not all(isinstance(p, Parameter) and p._arena is not None for p in params):
            return None
        bounds, start = [], 0
        for i in range(1, len(params) + 1):
            prev = params[i - 1]
            if i == len(params) or params[i]._arena is not prev._arena or params[i]._offset != prev._offset + prev.size:
                first = params[start]
                bounds.append((start, i, first._arena, first._offset, prev._offset + prev.size))
                start = i
        return cls(params, bounds)

    def intact(self, grads: list) -> bool:
        """Every parameter still has its arena data, and every gradient is its arena gradient."""
        return all(map(operator.is_, grads, self.grad_views)) and all(
            map(operator.is_, map(_DATA, self.objs), self.data_views)
        )

    def copies(self) -> list | None:
        """The runs' flat views into their arenas' bf16 copy buffers, while every parameter's
        compute copy is its arena view; else None (the copies then go one array per parameter).
        Checked again only when a compute copy was attached or dropped since the last call."""
        epoch, result = self._copies_checked
        if epoch != copies_epoch():
            result = self._find_copies()
            self._copies_checked = (copies_epoch(), result)
        return result

    def _find_copies(self) -> list | None:
        if self._copy_views is None:
            views = [p._arena_bf16 for p in self.objs]
            if any(v is None for v in views):
                return None
            self._copy_views = views
            self._copies = [arena.bf16[a:b] for _, _, arena, a, b in self.bounds]
        return self._copies if all(map(operator.is_, map(_BF16, self.objs), self._copy_views)) else None

    def states(self, opt: Optimizer, gi: int, keys: tuple) -> list:
        """Per state key of the optimizer: the runs' flat views into its state buffer, or None."""
        cached = self._states.get(keys)
        if cached is None:
            dtype = self.objs[0].data.dtype.char
            cached = [
                [opt._flat[(gi, dtype, k)][a:b] for a, b in self.state_ranges] if k in keys else None
                for k in opt._state_keys
            ]
            self._states[keys] = cached
        return cached


_DATA = operator.attrgetter("data")
_BF16 = operator.attrgetter("bf16")
_SLOT_COPY = operator.attrgetter("copy")
_IS_NONE = functools.partial(operator.is_, None)
_NOT_HYPERPARAMETERS = ("params", "param_names")
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
        raise TypeError(
            f"optimizer can only optimize numpy arrays or gradfuse Parameters, but {where} is {type(param).__name__}"
        )
    if data.dtype not in (np.float32, np.float64) or not data.dtype.isnative:
        raise TypeError(f"{where} has dtype {data.dtype}; expected float32 or float64")
    if not data.flags.c_contiguous:
        raise ValueError(f"{where} is not C-contiguous")
    if not data.flags.writeable:
        raise ValueError(f"{where} is read-only")


class _Group:
    """What the optimizer keeps for one parameter group, beside its dict in param_groups."""

    __slots__ = ("slots", "single_dtype", "arrays", "params", "runs", "fast", "checked", "copies_seen")

    def __init__(self, slots: list, params: list):
        self.slots = slots
        self.single_dtype = len({s.data.dtype for s in slots}) <= 1
        # plain arrays never change identity: their list is reused by every step
        self.arrays = None if any(isinstance(p, Parameter) for p in params) else params
        self.params = params if all(isinstance(p, Parameter) for p in params) else None
        self.copies_seen: tuple = (-1, None, 0)  # (copies_epoch(), copies(), how many are None)
        self.runs = _ArenaRuns.of(params) if self.single_dtype else None
        self.fast: _Fast | None = None
        # (the hyperparameter values last checked, the kernel scalars they gave): checked again
        # only when one of the values is another object (an edit of param_groups, a scheduler)
        self.checked: tuple | None = None

    def copies(self) -> tuple[list, int]:
        """Each slot's compute copy or None, and how many are None; read again only when a copy
        was attached or dropped anywhere since the last call (copies_epoch)."""
        epoch, copies, missing = self.copies_seen
        if epoch != copies_epoch():
            if self.arrays is not None:
                copies = list(map(_SLOT_COPY, self.slots))
            elif self.params is not None:
                copies = list(map(_BF16, self.params))
            else:
                copies = [s.compute_copy for s in self.slots]
            missing = sum(map(_IS_NONE, copies))
            self.copies_seen = (copies_epoch(), copies, missing)
        return copies, missing


class _Fast:
    """A group whose last step was one kernel call over all of it: the next one reuses its lists."""

    __slots__ = ("scalars", "keys", "states", "lists")

    def __init__(self, scalars: tuple, keys: tuple, states: list, lists: list):
        self.scalars = scalars  # the per-parameter scalar state after that step (step, ...)
        self.keys = keys  # the state keys it used
        self.states = states  # the slots' state dicts
        self.lists = lists  # per state key: the list of state views passed to the kernel, or None


class Optimizer:
    """Base class of gradfuse's optimizers: torch.optim's API over one fused kernel per step.

    A subclass names its kernel (`_kernel`, a row of the kernel table, gradfuse/table.py) and
    defines torch's constructor. The table gives the rest: the state keys (its STATE arrays' torch
    names), which states a group's settings use, the hyperparameters and how they are checked
    (torch's wording), and how a group's values become the kernel's arguments. Hooks for what the
    table cannot say: _scalar_keys (per-parameter scalar state and initial values), _step_scalars
    (the kernel's per-step arguments from that state), _advance, _initial_value / _fill_state, _validate_extra
    (hyperparameters that are not kernel arguments), _eager_state.

    Threads: step() holds a per-optimizer lock from reading the gradients to committing the state,
    so concurrent step() calls on ONE optimizer are serialised (each applies, in some order; none
    fails, none interleaves with another). Different optimizers step concurrently: the kernels
    release the GIL. Other methods (zero_grad, state_dict, load_state_dict, editing param_groups)
    take no lock: do not call them while another thread steps the same optimizer.
    """

    _kernel: str = ""
    _row: Kernel
    _state_keys: tuple[str, ...] = ()
    _scalar_keys: dict = {"step": 0}
    _eager_state = False  # torch's Adagrad creates its state at construction
    _group_step = False  # schedule-free: the step count is the group's ("k"), not each parameter's
    _per_tensor = False  # LAMB: the kernel reduces over each parameter, so arena runs are not flattened
    _not_hyper: tuple = _NOT_HYPERPARAMETERS  # group entries whose change needs no new check (+ ones a step writes)
    _takes_step = False
    _hyper: tuple = ()  # the kernel's scalars that come from a group's hyperparameters (Scalar.hyper)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls._kernel:
            cls._row = KERNELS[cls._kernel]
            cls._state_keys = tuple(a.state_key for a in cls._row.states)
            cls._takes_step = any(s.name == "step" for s in cls._row.scalars)
            cls._hyper = tuple(s for s in cls._row.scalars if s.hyper is not None)

    def __init__(self, params, defaults: dict, *, skip_nonfinite: bool = False):
        if isinstance(params, (np.ndarray, Parameter)):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of arrays or dicts, "
                f"but got {type(params).__name__}"
            )
        for key in ("capturable", "differentiable"):
            if defaults.get(key):
                raise ValueError(f"{key}=True is not supported: gradfuse steps are fused, in place and not traced")
        self.defaults = dict(defaults)
        self.skip_nonfinite = bool(skip_nonfinite)
        self.skipped_steps = 0
        self.last_step_skipped = False
        self.param_groups: list[dict] = []
        self._groups: list[_Group] = []
        self._slot_by_id: dict[int, _Slot] = {}
        self._objs: list = []  # every parameter as passed, in group order
        self._has_parameters = False
        self._all_parameters = True
        self._flat: dict = {}  # (group, dtype char, key) -> the state arena buffer
        self._lock = threading.Lock()
        self.state = _StateMap(self)
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    @property
    def _slots(self) -> list:
        return [g.slots for g in self._groups]

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
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the ordering "
                "of tensors in sets will change between runs. Please use a list instead."
            )
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
        self._groups.append(_Group(slots, params))
        self._slot_by_id.update(zip(ids, slots))
        self._objs.extend(params)
        self._has_parameters = any(isinstance(p, Parameter) for p in self._objs)
        self._all_parameters = all(isinstance(p, Parameter) for p in self._objs)
        if self._eager_state:
            for slot in slots:
                self._init_state(gi, slot, self._used_keys(group))
                slot.state.update(self._scalar_keys)

    # ---- hyperparameters: the kernel table's rules, torch's wording ---------------------------------------
    def _validate(self, group: dict) -> dict:
        """Check the group's hyperparameters with the kernel table's rules and torch's messages;
        return them as the kernel's (converted) scalars."""
        raw = {}
        for s in self._hyper:
            if isinstance(s.hyper, tuple):
                key, index = s.hyper
                pair = group[key]
                if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                    raise TypeError(f"Invalid {key}: {pair!r} (expected a pair of numbers)")
                raw[s.name] = pair[index]
            else:
                raw[s.name] = group[s.hyper]
        try:
            scalars = _checks.scalars(self._row, raw, partial=True)
        except KernelError as err:
            raise self._torch_error(err, raw) from None
        self._validate_extra(group)
        return scalars

    def _validate_extra(self, group: dict) -> None:
        """Hyperparameters that are not kernel arguments (Adagrad's initial_accumulator_value...)."""

    def _torch_error(self, err: KernelError, raw: dict) -> Exception:
        """A kernel's refusal of a hyperparameter, said as torch says it."""
        row = self._row
        rule = next((r for r in row.rules if r.argument == err.argument and r.message in err.template), None)
        if rule is not None and rule.torch:
            return ValueError(rule.torch.format(**raw))
        spec = next((s for s in row.scalars if s.name == err.argument), None)
        if spec is not None and spec.torch:
            value = raw.get(err.argument)
            if isinstance(err, TypeError):
                return TypeError(
                    spec.torch.replace("{value}", repr(value)) + f" (expected a number, got {type(value).__name__})"
                )
            return ValueError(spec.torch.replace("{value}", str(value)))
        return err.relabel(type(self).__name__)

    def _group_scalars(self, gi: int) -> tuple[dict, tuple]:
        """The kernel scalars of group gi's hyperparameters, checked, and the state keys they use;
        cached while every value of the group (its own hyperparameters included) is the same object
        as when it was checked (a list, which can change in place, is checked every time)."""
        group, rec = self.param_groups[gi], self._groups[gi]
        snapshot = tuple(v for k, v in group.items() if k not in self._not_hyper)
        checked = rec.checked
        if (
            snapshot is not None
            and checked is not None
            and list not in map(type, snapshot)
            and all(map(operator.is_, snapshot, checked[0]))
        ):
            return checked[1], checked[2]
        scalars = self._validate(group)
        keys = self._keys_for(scalars)
        rec.checked = (snapshot, scalars, keys)
        return scalars, keys

    def _keys_for(self, settings: dict) -> tuple:
        return tuple(a.state_key for a in self._row.states if a.when is None or a.when(settings))

    # ---- state arenas -----------------------------------------------------------------------------
    def _used_keys(self, group: dict) -> tuple[str, ...]:
        """The state arrays this group's settings use (the table's `when`)."""
        try:
            settings = {
                s.name: (group[s.hyper] if isinstance(s.hyper, str) else group[s.hyper[0]][s.hyper[1]])
                for s in self._hyper
            }
        except (KeyError, TypeError, IndexError):
            self._validate(group)  # says what is wrong with the group, in torch's words
            raise
        return self._keys_for(settings)

    def _initial_value(self, group: dict, key: str) -> float:
        return 0.0

    def _fill_state(self, group: dict, slot: _Slot, key: str, view: np.ndarray) -> None:
        """A parameter's fresh state array (default: the constant _initial_value; schedule-free's z
        starts as a copy of the parameter)."""
        view.fill(self._initial_value(group, key))

    def _views(self, gi: int, slot: _Slot, key: str) -> np.ndarray:
        """slot's view into the group's arena for `key`, allocating the arena on first use."""
        view = slot.views.get(key)
        if view is None:
            dtype = slot.data.dtype
            members = [s for s in self._groups[gi].slots if s.data.dtype == dtype]
            buf = np.zeros(sum(s.data.size for s in members), dtype)
            self._flat[(gi, dtype.char, key)] = buf
            offset = 0
            for s in members:
                s.views[key] = buf[offset : offset + s.data.size].reshape(s.data.shape)
                offset += s.data.size
            view = slot.views[key]
        return view

    def _init_state(self, gi: int, slot: _Slot, keys) -> None:
        group = self.param_groups[gi]
        for key in keys:
            if key not in slot.state:
                view = self._views(gi, slot, key)
                self._fill_state(group, slot, key, view)
                slot.state[key] = view

    # ---- stepping -----------------------------------------------------------------------------------
    def _scalars(self, slot: _Slot) -> tuple:
        return tuple(slot.state.get(k, v) for k, v in self._scalar_keys.items())

    def _step_scalars(self, group: dict, scalars: tuple) -> dict:
        """The kernel's per-step arguments for parameters with this scalar state (default: the
        1-based step being taken, when the kernel takes one)."""
        return {"step": scalars[0] + 1} if self._takes_step else {}

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
                raise TypeError(
                    "step() needs grads=[...] when the parameters are plain arrays "
                    f"(params[{i}] is an ndarray, which has no .grad)"
                )
            if all(map(_TRAINABLE, objs)):
                return list(map(_GRAD, objs))
            return [p.grad if p.trainable else None for p in objs]
        grads = [grads] if isinstance(grads, np.ndarray) else list(grads)
        if len(grads) != len(objs):
            raise ValueError(
                f"step(): got {len(grads)} gradients for {len(objs)} parameters "
                "(one per parameter, in param-group order; None skips a parameter)"
            )
        if self._all_parameters:
            if not all(map(_TRAINABLE, objs)):
                grads = [g if p.trainable else None for g, p in zip(grads, objs)]
        elif self._has_parameters:  # frozen Parameters get no step
            grads = [None if isinstance(p, Parameter) and not p.trainable else g for g, p in zip(grads, objs)]
        return grads

    def _plan(self, grads: list, checked: list) -> list:
        """The kernel calls of one step: (group index, slots, grads, scalar state, compute copies
        or None). checked: each group's (kernel scalars, state keys). A call's parameters either
        all have compute copies or none has."""
        calls, pos = [], 0
        for gi, (group, rec) in enumerate(zip(self.param_groups, self._groups)):
            slots = rec.slots
            gs = grads[pos : pos + len(slots)]
            pos += len(slots)
            copies, missing = rec.copies()
            fast = rec.fast
            if (
                fast is not None
                and type(None) not in map(type, gs)
                and fast.keys == checked[gi][1]
                and missing in (0, len(copies))
            ):  # the whole group, as last step: one call
                calls.append((gi, slots, gs, fast.scalars, copies if not missing else None))
                continue
            buckets: dict = {}
            for slot, g, c in zip(slots, gs, copies):
                if g is not None:
                    entry = buckets.setdefault((self._bucket_key(group, slot), c is None), ([], [], []))
                    entry[0].append(slot)
                    entry[1].append(g)
                    entry[2].append(c)
            for bslots, bgrads, bcopies in buckets.values():
                calls.append((gi, bslots, bgrads, self._scalars(bslots[0]), None if bcopies[0] is None else bcopies))
        return calls

    def _call(
        self, gi: int, slots: list, grads: list, scalars: tuple, copies, grad_scale, checked: tuple
    ) -> tuple[tuple, dict]:
        """The kernel call for these slots: (array lists in the row's order, the compute copies
        last, checked scalars without the optional ones left at None)."""
        group, rec = self.param_groups[gi], self._groups[gi]
        hyper, keys = checked
        kernel_scalars = {**hyper, **self._step_scalars(group, scalars)}
        if grad_scale is not None:
            kernel_scalars["grad_scale"] = grad_scale
            try:
                _checks.scalars(self._row, {"grad_scale": grad_scale}, partial=True)
            except KernelError as err:
                raise self._relabel(err, gi) from None
        fast = rec.fast
        if fast is not None and slots is rec.slots:
            runs = rec.runs
            # one flat view per arena run, unless the kernel needs each tensor on its own (LAMB's norms)
            if runs is not None and not self._per_tensor and runs.intact(grads):
                run_copies = None if copies is None else runs.copies()
                if copies is None or run_copies is not None:
                    return (runs.params, runs.grads, *runs.states(self, gi, keys), run_copies), kernel_scalars
            return (self._group_params(rec, slots), grads, *fast.lists, copies), kernel_scalars
        for slot in slots:  # fresh state: filled in the arena, joins slot.state after the step
            for key in keys:
                if key not in slot.state:
                    self._fill_state(group, slot, key, self._views(gi, slot, key))
        states = [[slot.views[k] for slot in slots] if k in keys else None for k in self._state_keys]
        return (self._group_params(rec, slots), grads, *states, copies), kernel_scalars

    @staticmethod
    def _group_params(rec: _Group, slots: list) -> list:
        return rec.arrays if slots is rec.slots and rec.arrays else [s.data for s in slots]

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
        checked = [self._group_scalars(gi) for gi in range(len(self._groups))]
        calls = [
            (gi, slots, scalars, *self._call(gi, slots, g, scalars, copies, grad_scale, checked[gi]))
            for gi, slots, g, scalars, copies in self._plan(grads, checked)
        ]
        row, skip = self._row, self.skip_nonfinite
        if len(calls) == 1:  # the kernel checks the arrays, then skips or steps
            gi, slots, scalars, arrays, kernel_scalars = calls[0]
            try:
                applied = run_optim(row, arrays, kernel_scalars, skip)
            except KernelError as err:
                raise self._relabel(err, gi) from None
            if applied:
                self._commit(gi, slots, scalars, checked[gi][1])
            return self._applied(applied)
        # Several calls: all or nothing. Every call's arrays are checked before the first one writes.
        names = [a.name for a in row.arrays]
        for gi, _, _, arrays, kernel_scalars in calls:
            try:
                _checks.arrays(row, dict(zip(names, arrays)), kernel_scalars)
            except KernelError as err:
                raise self._relabel(err, gi) from None
        if skip:
            by_dtype: dict = {}
            for _, _, _, arrays, _ in calls:
                for g in arrays[1]:
                    by_dtype.setdefault(g.dtype, []).append(g)
            if not all(ops.all_finite(arrays, grad_scale=grad_scale) for arrays in by_dtype.values()):
                return self._applied(False)
        for gi, slots, scalars, arrays, kernel_scalars in calls:
            run_optim(row, arrays, kernel_scalars, False)
            self._commit(gi, slots, scalars, checked[gi][1])
        return self._applied(True)

    def _applied(self, applied: bool) -> bool:
        self.last_step_skipped = not applied
        self.skipped_steps += not applied
        return applied

    def _commit(self, gi: int, slots: list, scalars: tuple, keys: tuple) -> None:
        """After a successful kernel call: fresh state joins slot.state, scalars advance."""
        group, rec = self.param_groups[gi], self._groups[gi]
        new = self._advance(group, scalars)
        items = tuple(zip(self._scalar_keys, new))
        fast = rec.fast
        if fast is not None and slots is rec.slots:  # every state array is already in place
            dicts = fast.states
        else:
            dicts = [slot.state for slot in slots]
            for slot in slots:
                for key in keys:
                    slot.state.setdefault(key, slot.views[key])
        if len(items) == 1:
            ((key, value),) = items
            for state in dicts:
                state[key] = value
        elif items:
            for state in dicts:
                state.update(items)
        if not (len(slots) == len(rec.slots) and rec.single_dtype):
            rec.fast = None
            return
        if fast is not None and fast.keys == keys:
            lists = fast.lists  # the call may have passed the flat arena-run views instead
        else:
            lists = [[slot.views[k] for slot in slots] if k in keys else None for k in self._state_keys]
        rec.fast = _Fast(new, keys, dicts, lists)

    def _relabel(self, err: KernelError, gi: int | None) -> KernelError:
        """A kernel's error said by this optimizer's step, naming the group."""
        where = f"{type(self).__name__}.step" + (f" (param group {gi})" if gi is not None else "")
        return err.relabel(f"{where}: {err.kernel}")

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of Parameter objects (plain arrays have none to clear).

        Arena gradients are zeroed in place: the arena owns them (see Parameter.zero_grad)."""
        for rec in self._groups:
            for slot in rec.slots:
                if isinstance(slot.obj, Parameter):
                    slot.obj.zero_grad(set_to_none)

    # ---- bf16 compute copies (mixed precision) ------------------------------------------------------
    def compute_copies(self) -> list:
        """Each parameter's bf16 compute copy (or None), in param-group order."""
        return [slot.compute_copy for rec in self._groups for slot in rec.slots]

    def set_compute_copies(self, copies) -> None:
        """Register bf16 compute copies, one per parameter in param-group order (None: no copy):
        ml_dtypes.bfloat16 arrays of the parameter's shape, C-contiguous and writeable, for float32
        parameters. A Parameter's copy becomes its .bf16. Each copy is written from its master now;
        then every step() writes it in the same fused pass as the update. Everything is checked
        before anything changes."""
        copies = list(copies)
        slots = [slot for rec in self._groups for slot in rec.slots]
        if len(copies) != len(slots):
            raise ValueError(f"set_compute_copies: got {len(copies)} copies for {len(slots)} parameters")
        for i, (slot, c) in enumerate(zip(slots, copies)):
            if c is None:
                continue
            where = f"set_compute_copies: copies[{i}]"
            if slot.data.dtype != np.float32:
                raise TypeError(f"{where}: params[{i}] is {slot.data.dtype}; bf16 copies need float32 masters")
            if not (isinstance(c, np.ndarray) and _checks.is_bfloat16(c.dtype)):
                raise TypeError(f"{where} must be an ml_dtypes.bfloat16 ndarray, got {getattr(c, 'dtype', type(c))}")
            if c.shape != slot.data.shape:
                raise ValueError(f"{where} has shape {c.shape}, params[{i}] {slot.data.shape}")
            if not (c.flags.c_contiguous and c.flags.writeable):
                raise ValueError(f"{where} must be C-contiguous and writeable (it is written in place)")
        for slot, c in zip(slots, copies):
            if isinstance(slot.obj, Parameter):
                slot.obj.bf16 = c
            else:
                slot.copy = c
        copies_changed()
        self.refresh_compute_copies()

    def make_compute_copies(self) -> list:
        """Give every float32 parameter a bf16 compute copy (Parameter.make_bf16_copy(): one bf16
        arena beside each ParameterArena; a fresh array for a plain ndarray) and return them all,
        in param-group order (None for float64 parameters)."""
        out = []
        for rec in self._groups:
            for slot in rec.slots:
                if slot.data.dtype != np.float32:
                    out.append(None)
                elif isinstance(slot.obj, Parameter):
                    out.append(slot.obj.make_bf16_copy())
                else:
                    if slot.copy is None:
                        slot.copy = np.empty(slot.data.shape, _bfloat16())
                        copies_changed()
                    slot.copy[...] = slot.data.astype(slot.copy.dtype)
                    out.append(slot.copy)
        return out

    def refresh_compute_copies(self) -> None:
        """Rewrite every compute copy from its fp32 master (one pass per arena). Call it after the
        masters changed outside step(): an assignment p.data[...] = ..., an in-place edit, a
        torch-side update. Module.load_state_dict does it for its parameters itself; this
        optimizer's load_state_dict leaves the masters, so the copies stay right."""
        arenas = {}
        for rec in self._groups:
            for slot in rec.slots:
                obj = slot.obj
                if isinstance(obj, Parameter):
                    if obj._arena is not None and obj.bf16 is not None and obj.bf16 is obj._arena_bf16:
                        arenas[id(obj._arena)] = obj._arena
                    else:
                        obj.refresh_bf16()
                elif slot.copy is not None:
                    slot.copy[...] = obj.astype(slot.copy.dtype)
        for arena in arenas.values():
            arena.refresh_bf16()

    # ---- state_dict -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{"state": {index: {key: value}}, "param_groups": [{..., "params": [index, ...]}]}, with
        torch's keys; arrays are copies, so the dict is a snapshot. Never the bf16 compute copies
        (derived from the masters)."""
        state, groups, index = {}, [], 0
        for group, rec in zip(self.param_groups, self._groups):
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            packed["params"] = list(range(index, index + len(rec.slots)))
            groups.append(packed)
            for slot in rec.slots:
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
        if any(len(s["params"]) != len(g.slots) for s, g in zip(saved_groups, self._groups)):
            raise ValueError(
                "loaded state dict contains a parameter group that doesn't match the size of optimizer's group"
            )
        saved_state = state_dict["state"]
        new_groups, staged = [], []
        for gi, (saved, rec) in enumerate(zip(saved_groups, self._groups)):
            group = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            group["params"] = self.param_groups[gi]["params"]
            for key, value in self.param_groups[gi].items():
                group.setdefault(key, value)
            self._validate(group)
            new_groups.append(group)
            for index, slot in zip(saved["params"], rec.slots):
                entry = saved_state.get(index, saved_state.get(str(index)))
                staged.append((gi, slot, self._stage_entry(entry, slot, index)))
        self.param_groups[:] = new_groups
        for rec in self._groups:
            rec.fast = rec.checked = None
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
                    raise ValueError(
                        f"state of parameter {index}: {key} has shape {arr.shape}, the parameter {slot.data.shape}"
                    )
                arrays[key] = arr
            elif key in self._scalar_keys:
                number = np.asarray(value).item()
                scalars[key] = int(number) if key == "step" else float(number)
                if key == "step" and not (scalars[key] == number and scalars[key] >= 0):
                    raise ValueError(f"state of parameter {index}: step must be a whole number >= 0, got {value!r}")
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
