"""gradfuse.torch: gradfuse's fused optimizers as torch.optim.Optimizer subclasses.

    import gradfuse.torch as gft
    opt = gft.Adam(model.parameters(), lr=1e-3)        # torch.optim.Adam's arguments and defaults
    flat = gft.flatten_parameters(model)                # optional: the whole model in one arena

Every fused optimizer of gf.optim (one kernel of the table per step) has a counterpart here,
generated from it (same name, constructor, defaults, validation, kernel): SGD, Adam, AdamW,
Adagrad, RMSprop, Adadelta, Adamax, NAdam, RAdam, Rprop, Lion, ASGD, SGDScheduleFree,
AdamWScheduleFree, and whichever such class gf.optim gains later. The schedule-free ones
(ScheduleFreeOptimizer) add the schedulefree package's train()/eval(), swapping the torch
parameters in place between y and x. Not (yet) the per-parameter Python ones (Adafactor, Muon), the
closure-driven ones (LBFGS, ConjugateGradient, Newton, HessianFree), nor the per-tensor trust-ratio ones
(Lamb, Lars): use torch.optim's (or timm's) there.

How a step runs
---------------
The kernels work on the tensors' own memory: zero-copy NumPy views of the torch CPU tensors
(bf16 through an int16 view), one kernel call per parameter group (per dtype) carrying all its
tensors. The state lives in torch tensors under torch.optim's keys (exp_avg, step, ...): per
group, each state is ONE flat tensor laid out like the group's parameters, and state[p][key] is
p's view into it (step, mu_product, eta, mu: 0-d float32 views of one small tensor). So
torch.save, state_dict()/load_state_dict() (with torch.optim's own dicts too, both ways),
torch's LR schedulers, optimizer hooks, add_param_group, zero_grad and closures work as with
torch.optim. When the parameters and gradients of a group are adjacent in memory (an arena made by
flatten_parameters), the call passes one flat view per argument: the whole group is one segment.

Refused, with an error naming the parameter (group, index, name) and before anything is written:
a parameter or gradient that is not a dense, contiguous CPU tensor of float32, float64 or bfloat16
(a contiguous copy would be stepped and the update lost), or a gradient of another dtype or shape.

bf16 parameters (the ZeRO-Offload case): the optimizer keeps an fp32 master of each (state key
"master", made from the bf16 value at the parameter's first step) and fp32 state; the gradients
are widened into an fp32 scratch buffer, and the kernel writes the bf16 parameters themselves
(rounded to nearest even) in the same pass as the update. Change a bf16 parameter outside step()
(model.load_state_dict without the optimizer's) and call refresh_masters().
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import operator
import threading
from collections import defaultdict

import numpy as np
import torch

from . import _checks, ops
from . import optim as _gf_optim
from .errors import KernelError
from .nn.parameter import _bfloat16
from .ops import run_optim
from .optim.schedulefree import _ScheduleFree

_STEP_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
_MASTER = "master"  # the state key of a bf16 parameter's fp32 master
_GRAD = operator.attrgetter("grad")
_PTR = torch.Tensor.data_ptr
_IS_NONE = functools.partial(operator.is_, None)  # not `None in tensors`: that calls Tensor.__eq__


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A zero-copy NumPy view of a dense CPU tensor (bf16 as ml_dtypes.bfloat16)."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(_bfloat16())
    return t.numpy()


def _refuse(t, what: str, dtypes=_STEP_DTYPES) -> None:
    """Raise if the kernels cannot step t in place (a copy would lose the update)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{what} is {type(t).__name__}, not a torch.Tensor")
    if t.layout != torch.strided:
        raise TypeError(f"{what} is a sparse tensor ({t.layout}); gradfuse steps dense tensors only")
    if t.device.type != "cpu":
        raise ValueError(f"{what} is on {t.device}; gradfuse steps CPU tensors in place")
    if t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{what} has dtype {str(t.dtype).replace('torch.', '')}; expected {names}")
    if not t.is_contiguous():
        raise ValueError(
            f"{what} is not contiguous (shape {tuple(t.shape)}, stride {t.stride()}); it is stepped in place, "
            "and a contiguous copy would lose the update"
        )
    if t.is_conj() or t.is_neg():
        raise ValueError(f"{what} has a lazy conjugate/negation bit; resolve it first")


def _flat_view(tensors: list) -> torch.Tensor | None:
    """One 1-d tensor over `tensors` when they lie end to end in one storage, in order; else None."""
    first = tensors[0]
    storage = first.untyped_storage().data_ptr()
    end = first.data_ptr()
    for t in tensors:
        if t.data_ptr() != end or t.untyped_storage().data_ptr() != storage:
            return None
        end += t.numel() * t.element_size()
    total = sum(t.numel() for t in tensors)
    return torch.empty(0, dtype=first.dtype).set_(first.untyped_storage(), first.storage_offset(), (total,))


class _Part:
    """The parameters of one group with one dtype, and their state: one flat tensor per state key."""

    def __init__(self, dtype: torch.dtype, positions: list, params: list):
        self.dtype = dtype
        self.bf16 = dtype == torch.bfloat16
        self.state_dtype = torch.float32 if self.bf16 else dtype
        self.positions = positions  # indices in the group
        self.params = params
        sizes = [p.numel() for p in params]
        self.bounds = list(zip(np.cumsum([0] + sizes[:-1]).tolist(), np.cumsum(sizes).tolist()))
        self.total = sum(sizes)
        self.index = torch.tensor(positions, dtype=torch.long)
        self.flat: dict = {}  # state key -> flat tensor
        self.views: dict = {}  # state key -> [per-parameter torch view]
        self.np_views: dict = {}  # state key -> [per-parameter numpy view]
        self.np_flat: dict = {}  # state key -> numpy view of the flat tensor
        self.settled: tuple | None = None  # the keys every parameter holds after a step of the whole part
        self.ptrs: list | None = None  # the parameters' data_ptr()s the cached views below belong to
        self.np_params: list = []
        self.flat_params: np.ndarray | None = None
        self.grad_objs: list = [None] * len(params)
        self.np_grads: list = [None] * len(params)
        self.flat_grads: tuple | None = None  # (grad tensors, their flat numpy view or None)
        if self.bf16:
            self.scratch = torch.empty(self.total, dtype=torch.float32)  # widened gradients
            self.scratch_views = [self.scratch[a:b].view(p.shape) for (a, b), p in zip(self.bounds, params)]
            self.np_scratch = [v.numpy() for v in self.scratch_views]

    def state(self, key: str) -> list:
        """The per-parameter views of state `key`, allocating its flat tensor on first use."""
        views = self.views.get(key)
        if views is None:
            flat = torch.zeros(self.total, dtype=self.state_dtype)
            views = [flat[a:b].view(p.shape) for (a, b), p in zip(self.bounds, self.params)]
            self.flat[key] = flat
            self.views[key] = views
            self.np_views[key] = [v.numpy() for v in views]
            self.np_flat[key] = flat.numpy()
        return views


class _Record:
    """What the optimizer keeps for one param group: its parts, its scalar state, its checks."""

    def __init__(self, group: dict, scalar_keys: dict):
        self.group = group
        self.plist = group["params"]
        self.n = len(self.plist)
        by_dtype: dict = {}
        for i, p in enumerate(self.plist):
            by_dtype.setdefault(p.dtype, []).append(i)
        self.parts = [_Part(d, idx, [self.plist[i] for i in idx]) for d, idx in by_dtype.items()]
        # per scalar key (step, mu_product, ...): one float32 tensor, element i for parameter i
        self.scalars = {k: torch.zeros(self.n, dtype=torch.float32) for k in scalar_keys}
        self.scalar_views = {k: [buf[i] for i in range(self.n)] for k, buf in self.scalars.items()}
        self.started = [False] * self.n  # parameter i holds its scalar state
        self.checked: tuple | None = None  # (hyperparameter values, kernel scalars, state keys)

    def matches(self, group: dict) -> bool:
        return self.group is group and self.plist is group["params"] and len(self.plist) == self.n


class _StateOf:
    """A gf.optim hook's view of one parameter (it reads .state)."""

    __slots__ = ("state",)

    def __init__(self, state):
        self.state = state


class Optimizer(torch.optim.Optimizer):
    """Base of the generated classes: a torch.optim.Optimizer whose step is gradfuse's fused kernel.

    The algorithm (hyperparameter checks, per-step scalars, initial state) is the gf.optim class's
    (`_gf_class`): an instance of it over a dummy array (`_spec`) answers the hooks.
    """

    _gf_class: type = _gf_optim.Optimizer

    def __init__(self, params, *args, **kwargs):
        cls = self._gf_class
        self._spec = cls([np.zeros(1, np.float32)], *args, **kwargs)  # checks the hyperparameters
        self._arguments = (args, kwargs)
        self._row = cls._row
        self._state_keys = cls._state_keys
        self._scalar_keys = dict(cls._scalar_keys)
        self._own_scalars = cls._scalars is not _gf_optim.Optimizer._scalars  # SGD: buffer presence
        self._records: list[_Record] = []
        self._lock = threading.Lock()
        self.skip_nonfinite = self._spec.skip_nonfinite
        self.skipped_steps = 0
        self.last_step_skipped = False
        super().__init__(params, dict(self._spec.defaults))

    def __getstate__(self) -> dict:
        """Pickle / deepcopy: everything but the lock, the gf.optim instance and the records (views
        into this optimizer's buffers); they are rebuilt, the state re-homed at the next step."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_spec", "_records", "_row")}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        args, kwargs = self._arguments
        self._spec = self._gf_class([np.zeros(1, np.float32)], *args, **kwargs)
        self._row = self._gf_class._row
        self._lock = threading.Lock()
        self._records = []

    # ---- groups -------------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        """torch's add_param_group, with gradfuse's checks of the tensors and hyperparameters first."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        group = dict(param_group)
        params = group.get("params")
        if isinstance(params, torch.Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections; use a list")
        params = list(params)
        group["params"] = params
        gi = len(self.param_groups)
        names = [p[0] if isinstance(p, tuple) else None for p in params]
        for j, p in enumerate(params):
            _refuse(p[1] if isinstance(p, tuple) else p, self._where(gi, j, names[j]))
        trial = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}}
        self._spec._validate(trial)
        super().add_param_group(group)
        group = self.param_groups[-1]
        self._records.append(self._home(group, {}))
        if self._spec._eager_state:  # torch's Adagrad creates its state at construction
            rec = self._records[-1]
            keys = self._spec._used_keys(group)
            for part in rec.parts:
                for key in keys:
                    for view, p in zip(part.state(key), part.params):
                        view.fill_(self._spec._initial_value(group, key))
                        self.state[p][key] = view
            for i, p in enumerate(group["params"]):
                for key, value in self._scalar_keys.items():
                    rec.scalars[key][i] = value
                    self.state[p][key] = rec.scalar_views[key][i]
                rec.started[i] = True

    def _where(self, gi: int, j: int, name=None) -> str:
        if name is None and gi < len(self.param_groups):
            names = self.param_groups[gi].get("param_names")
            name = names[j] if names else None
        label = f"{type(self).__name__}: param group {gi}, params[{j}]"
        return label + (f" ({name!r})" if name else "")

    def _home(self, group: dict, entries: dict) -> _Record:
        """A record for `group` with each parameter's state entry (key -> tensor or number) copied in."""
        rec = _Record(group, self._scalar_keys)
        for part in rec.parts:
            for j, (i, p) in enumerate(zip(part.positions, part.params)):
                entry = entries.get(p)
                if not entry:
                    continue
                for key, value in entry.items():
                    if key in self._scalar_keys:
                        rec.scalars[key][i] = float(value)
                        self.state[p][key] = rec.scalar_views[key][i]
                        rec.started[i] = True
                    else:
                        view = part.state(key)[j]
                        view.copy_(value)
                        self.state[p][key] = view
        return rec

    def _stage(self, group: dict, gi: int, state) -> dict:
        """The state entries of group gi's parameters in `state`, checked (keys, shapes)."""
        out = {}
        allowed = set(self._state_keys) | set(self._scalar_keys)
        for j, p in enumerate(group["params"]):
            entry = state.get(p) if p in state else None
            if not entry:
                continue
            keys = allowed | ({_MASTER} if p.dtype == torch.bfloat16 else set())
            for key, value in entry.items():
                where = self._where(gi, j)
                if key not in keys:
                    raise ValueError(f"{where}: unknown state key {key!r} for {type(self).__name__}")
                if key in self._scalar_keys:
                    if torch.as_tensor(value).numel() != 1:
                        raise ValueError(f"{where}: state {key!r} must be a number, got shape {tuple(value.shape)}")
                elif not isinstance(value, torch.Tensor) or value.shape != p.shape:
                    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                    raise ValueError(f"{where}: state {key!r} has shape {shape}, the parameter {tuple(p.shape)}")
            out[p] = dict(entry)
        return out

    def _record(self, gi: int, group: dict) -> _Record:
        if gi >= len(self._records):
            self._records.append(None)
        rec = self._records[gi]
        if rec is None or not rec.matches(group):  # param_groups edited by hand: re-home the state
            entries = self._stage(group, gi, self.state)
            for p in entries:
                self.state[p] = {}
            rec = self._records[gi] = self._home(group, entries)
        return rec

    # ---- state_dict ---------------------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state_dict: ours or torch.optim's (same keys), with torch's hooks and checks. Every
        state tensor is copied into this optimizer's own layout (bf16 parameters keep fp32 state and
        masters: nothing is cast to the parameter's dtype). Everything is checked first; on error
        nothing changes."""
        state_dict = state_dict.copy()
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        saved_groups = copy.deepcopy(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(s["params"]) != len(g["params"]) for s, g in zip(saved_groups, self.param_groups)):
            raise ValueError(
                "loaded state dict contains a parameter group that doesn't match the size of optimizer's group"
            )
        id_map = {k: p for s, g in zip(saved_groups, self.param_groups) for k, p in zip(s["params"], g["params"])}
        loaded = {id_map[k]: v for k, v in state_dict["state"].items() if k in id_map}
        new_groups, staged = [], []
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            new = {**saved, "params": group["params"]}
            if "param_names" in group and "param_names" not in saved:
                new["param_names"] = group["param_names"]
            for key, value in group.items():
                new.setdefault(key, value)
            self._spec._validate(new)
            new_groups.append(new)
            staged.append(self._stage(new, gi, loaded))
        self.param_groups = new_groups
        self.state = defaultdict(dict)
        self._records = [self._home(group, entries) for group, entries in zip(new_groups, staged)]
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    def refresh_masters(self) -> None:
        """Copy every bf16 parameter into its fp32 master (after the parameters changed outside step())."""
        for rec in self._records:
            for part in rec.parts:
                if part.bf16 and _MASTER in part.views:
                    for view, p in zip(part.views[_MASTER], part.params):
                        view.copy_(p.detach())

    # ---- stepping -----------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        """One fused step over every parameter group; returns the closure's loss (torch's contract)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with self._lock:
            applied = self._step()
        self.last_step_skipped = not applied
        self.skipped_steps += not applied
        return loss

    def _hyper(self, rec: _Record, group: dict) -> tuple[dict, tuple]:
        """The group's kernel scalars, checked again only when a value is another object."""
        not_hyper = self._spec._not_hyper  # + the entries a step writes (schedule-free's k, ...)
        snapshot = tuple(v for k, v in group.items() if k not in not_hyper)
        checked = rec.checked
        if checked is not None and list not in map(type, snapshot) and all(map(operator.is_, snapshot, checked[0])):
            return checked[1], checked[2]
        hyper = self._spec._validate(group)
        keys = self._spec._keys_for(hyper)
        rec.checked = (snapshot, hyper, keys)
        return hyper, keys

    def _step(self) -> bool:
        calls = []
        for gi, group in enumerate(self.param_groups):
            rec = self._record(gi, group)
            hyper, keys = self._hyper(rec, group)
            for part in rec.parts:
                calls.extend(self._plan(gi, group, rec, part, hyper, keys))
        row, names = self._row, [a.name for a in self._row.arrays]
        if len(calls) > 1:  # all or nothing: every call's arrays checked before the first writes
            for gi, *_, arrays, scalars in calls:
                try:
                    _checks.arrays(row, dict(zip(names, arrays)), scalars)
                except KernelError as err:
                    raise self._relabel(err, gi) from None
            if self.skip_nonfinite:
                by_dtype: dict = {}
                for *_, arrays, _ in calls:
                    grads = arrays[1] if isinstance(arrays[1], list) else [arrays[1]]
                    by_dtype.setdefault(grads[0].dtype, []).extend(grads)
                if not all(ops.all_finite(g) for g in by_dtype.values()):
                    return False
        for gi, rec, part, chosen, scalars_before, new, keys, arrays, scalars in calls:
            try:
                applied = run_optim(row, arrays, scalars, self.skip_nonfinite and len(calls) == 1)
            except KernelError as err:
                raise self._relabel(err, gi) from None
            if not applied:
                return False
            self._commit(rec, part, chosen, new, keys)
        return True

    def _relabel(self, err: KernelError, gi: int) -> KernelError:
        return err.relabel(f"{type(self).__name__}.step (param group {gi}): {err.kernel}")

    def _scalars_of(self, rec: _Record, part: _Part, j: int, cols: dict) -> tuple:
        """Parameter j's scalar state (step, ...) as the gf.optim class reads it."""
        if self._own_scalars:
            return self._spec._scalars(_StateOf(self.state.get(part.params[j], {})))
        i = part.positions[j]
        if not rec.started[i]:
            return tuple(self._scalar_keys.values())
        return tuple(int(cols[k][i]) if k == "step" else cols[k][i] for k in self._scalar_keys)

    def _plan(self, gi, group, rec: _Record, part: _Part, hyper: dict, keys: tuple) -> list:
        """The kernel calls for one part: its parameters with a gradient, bucketed by scalar state."""
        params = part.params
        grads = list(map(_GRAD, params))
        ptrs = list(map(_PTR, params))
        if ptrs != part.ptrs:  # new parameter memory (p.data = ...): check it, views anew
            for j, p in enumerate(params):
                _refuse(p, self._where(gi, part.positions[j]))
                if p.dtype != part.dtype or p.numel() != part.bounds[j][1] - part.bounds[j][0]:
                    raise ValueError(f"{self._where(gi, part.positions[j])} changed dtype or size since it was added")
            part.np_params = [_numpy(p) for p in params]
            flat = _flat_view(params)
            part.flat_params = None if flat is None else _numpy(flat)
            part.ptrs = ptrs
            part.flat_grads = None
        stepping = (
            [j for j, g in enumerate(grads) if g is not None] if any(map(_IS_NONE, grads)) else range(len(params))
        )
        fresh = () if all(map(operator.is_, grads, part.grad_objs)) else stepping
        for j in fresh:  # gradients not seen at the last step: check them, views anew
            g = grads[j]
            if g is not part.grad_objs[j]:
                p = params[j]
                what = self._where(gi, part.positions[j]) + ".grad"
                _refuse(g, what)
                if g.dtype != p.dtype or g.shape != p.shape:
                    raise ValueError(f"{what} is {g.dtype} {tuple(g.shape)}, the parameter {p.dtype} {tuple(p.shape)}")
                part.grad_objs[j] = g
                part.np_grads[j] = None if part.bf16 else _numpy(g)
        if not stepping:
            return []
        whole = len(stepping) == len(params)
        # scalar state per parameter: buckets of equal values step together
        cols = {k: buf.tolist() for k, buf in rec.scalars.items()}
        if whole and part.settled == keys and self._uniform(cols, part):
            buckets = {self._scalars_of(rec, part, 0, cols): list(stepping)}
        else:
            buckets = {}
            for j in stepping:
                buckets.setdefault(self._scalars_of(rec, part, j, cols), []).append(j)
        calls = []
        for scalars_before, chosen in buckets.items():
            all_of_part = len(chosen) == len(params)
            settled = all_of_part and part.settled == keys  # every state already held
            for key in () if settled else keys:  # fresh state is filled in its buffer; joins state[p] after the step
                views = part.state(key)
                for j in chosen:
                    if key not in self.state.get(params[j], ()):
                        self._fill(group, key, views[j], params[j])
            if part.bf16:
                self._widen(part, chosen, grads, all_of_part)
                if not settled and any(_MASTER not in self.state.get(params[j], ()) for j in chosen):
                    masters = part.state(_MASTER)
                    for j in chosen:
                        if _MASTER not in self.state.get(params[j], ()):
                            masters[j].copy_(params[j].detach())
            arrays = self._arrays(part, chosen, grads, keys, all_of_part)
            scalars = {**hyper, **self._spec._step_scalars(group, scalars_before)}
            new = self._spec._advance(group, scalars_before)
            calls.append((gi, rec, part, chosen, scalars_before, new, keys, arrays, scalars))
        return calls

    def _fill(self, group: dict, key: str, view: torch.Tensor, param: torch.Tensor) -> None:
        """A parameter's fresh state tensor (the gf.optim class's constant initial value)."""
        view.fill_(self._spec._initial_value(group, key))

    @staticmethod
    def _uniform(cols: dict, part: _Part) -> bool:
        if not cols:
            return True
        index = part.positions
        for col in cols.values():
            values = col if len(col) == len(index) else [col[i] for i in index]
            if values.count(values[0]) != len(values):
                return False
        return True

    def _widen(self, part: _Part, chosen: list, grads: list, all_of_part: bool) -> None:
        """bf16 gradients -> the fp32 scratch the kernel reads."""
        flat = self._flat_grads(part, grads) if all_of_part else None
        if flat is not None:
            part.scratch.copy_(flat[0])
        else:
            torch._foreach_copy_([part.scratch_views[j] for j in chosen], [grads[j] for j in chosen])

    @staticmethod
    def _flat_grads(part: _Part, grads: list):
        cached = part.flat_grads
        if cached is None or not all(map(operator.is_, grads, cached[0])):
            flat = _flat_view(grads)
            cached = part.flat_grads = (grads, None if flat is None else (flat, _numpy(flat)))
        return cached[1]

    def _arrays(self, part: _Part, chosen: list, grads: list, keys: tuple, all_of_part: bool) -> tuple:
        """The kernel's array lists in the row's order, the bf16 copies last: one flat view each
        when the whole part is adjacent in memory (an arena), else one view per tensor."""
        state_keys = self._state_keys
        if all_of_part:
            flat_grads = part.scratch.numpy() if part.bf16 else None
            if not part.bf16:
                fg = self._flat_grads(part, grads)
                flat_grads = None if fg is None else fg[1]
            if part.flat_params is not None and flat_grads is not None:
                states = [part.np_flat[k] if k in keys else None for k in state_keys]
                if part.bf16:
                    return (part.np_flat[_MASTER], flat_grads, *states, part.flat_params)
                return (part.flat_params, flat_grads, *states, None)
        pick = operator.itemgetter(*chosen) if len(chosen) > 1 else (lambda xs: (xs[chosen[0]],))
        states = [list(pick(part.np_views[k])) if k in keys else None for k in state_keys]
        if part.bf16:
            masters = list(pick(part.np_views[_MASTER]))
            return (masters, list(pick(part.np_scratch)), *states, list(pick(part.np_params)))
        return (list(pick(part.np_params)), list(pick(part.np_grads)), *states, None)

    def _commit(self, rec: _Record, part: _Part, chosen: list, new: tuple, keys: tuple) -> None:
        """After a kernel call: the scalar state advances; fresh state joins state[p]."""
        whole = len(chosen) == len(part.params)
        everyone = whole and len(part.params) == rec.n  # the whole group: one fill
        index = part.index if whole else part.index[chosen]
        for key, value in zip(self._scalar_keys, new):
            if everyone:
                rec.scalars[key].fill_(value)
            else:
                rec.scalars[key].index_fill_(0, index, value)
        if whole and part.settled == keys:
            return
        held = keys + ((_MASTER,) if part.bf16 else ())
        for j in chosen:
            p, i = part.params[j], part.positions[j]
            state = self.state[p]
            for key in held:
                state.setdefault(key, part.views[key][j])
            for key in self._scalar_keys:
                state.setdefault(key, rec.scalar_views[key][i])
            rec.started[i] = True
        part.settled = keys if whole else None  # a partial step: the next whole one scans again


class ScheduleFreeOptimizer(Optimizer):
    """Base of the schedule-free classes (SGDScheduleFree, AdamWScheduleFree): schedulefree 1.4.1's
    torch API. The torch parameters hold y while training; eval() moves them in place to x (the
    averaged weights, for evaluating and saving), train() back to y, each a p.lerp_ toward the
    state "z" as the schedulefree package computes it. The group entries (k, train_mode,
    weight_sum, lr_max, scheduled_lr) live in param_groups, z / exp_avg_sq in torch tensors: a
    state_dict loads into schedulefree's optimizer and back. step() in eval mode raises, unless
    nothing was stepped yet (then x = y = z and the optimizer enters train mode itself).
    """

    @torch.no_grad()
    def step(self, closure=None):
        if not self.param_groups[0]["train_mode"] and any("z" in s for s in self.state.values()):
            raise RuntimeError(
                f"{type(self).__name__}.step() in eval mode: the parameters hold the averaged weights x, "
                "not y where gradients belong. Call optimizer.train() before the training steps "
                "(and optimizer.eval() before evaluating or saving)."
            )
        return super().step(closure)

    def _step(self) -> bool:
        # The gf.optim class computes each group's schedule (warmup lr, averaging weight) once per
        # step in _step_scalars; every group advances once per applied step, gradients or not.
        spec = self._spec
        spec._pending = {}
        try:
            applied = super()._step()
            if applied:
                for group in self.param_groups:
                    entries = spec._pending.get(id(group)) or spec._schedule(group)
                    group.update(entries[0], train_mode=True)
        finally:
            spec._pending = None
        return applied

    def _fill(self, group, key, view, param):
        if key == "z":
            view.copy_(param.detach())  # z starts at the parameter (schedulefree: torch.clone(p))
        else:
            super()._fill(group, key, view, param)

    # ---- the swap -----------------------------------------------------------------------------------
    def train(self) -> None:
        """Parameters to y (where gradients are taken): call before training steps."""
        self._swap(True)

    def eval(self) -> None:
        """Parameters to x (the averaged weights): call before evaluating, predicting or saving."""
        self._swap(False)

    @torch.no_grad()
    def _swap(self, to_train: bool) -> None:
        for group in self.param_groups:
            if bool(group["train_mode"]) == to_train:
                continue
            beta1 = self._spec._beta1(group)
            weight = 1.0 - beta1 if to_train else 1.0 - 1.0 / beta1
            held = [(p, self.state[p]) for p in group["params"] if "z" in self.state.get(p, ())]
            if held:
                # bf16: the fp32 master moves, the bf16 parameter is rewritten as its rounding
                ys = [s[_MASTER] if p.dtype == torch.bfloat16 else p for p, s in held]
                torch._foreach_lerp_(ys, [s["z"] for _, s in held], weight)
                wide = [(p, y) for (p, _), y in zip(held, ys) if y is not p]
                if wide:
                    torch._foreach_copy_([p for p, _ in wide], [y for _, y in wide])
            group["train_mode"] = to_train

    @contextlib.contextmanager
    def eval_weights(self):
        """with opt.eval_weights(): ... -- the parameters hold x inside, and return to the mode
        they were in after (a checkpoint written mid-training holds x)."""
        was_training = bool(self.param_groups[0]["train_mode"])
        self.eval()
        try:
            yield self
        finally:
            if was_training:
                self.train()


def _base_for(gf_cls: type) -> type:
    """The torch-side base of a gf.optim class: the schedule-free ones need their train()/eval()."""
    return ScheduleFreeOptimizer if issubclass(gf_cls, _ScheduleFree) else Optimizer


def _generate(gf_cls: type) -> type:
    """The torch.optim.Optimizer subclass of a gf.optim class: its name, constructor and algorithm."""
    signature = inspect.signature(gf_cls.__init__)

    base = _base_for(gf_cls)

    def __init__(self, params, *args, **kwargs):
        base.__init__(self, params, *args, **kwargs)

    __init__.__signature__ = signature
    doc = (
        f"{gf_cls.__name__} over torch CPU tensors, stepped in place by gradfuse's fused kernel "
        f"(gradfuse.optim.{gf_cls.__name__}):\n\n{inspect.getdoc(gf_cls) or ''}"
    )
    return type(
        gf_cls.__name__,
        (base,),
        {"__init__": __init__, "_gf_class": gf_cls, "__doc__": doc, "__module__": __name__},
    )


def _optimizer_classes() -> list:
    """Every gf.optim class stepped by one fused kernel of the table (its _kernel row). Not the
    per-parameter Python ones (Adafactor, Muon) nor the closure-driven ones (LBFGS, Newton, ...):
    their state has other shapes, and they have no fused multi-tensor step to share. Nor (yet) the
    per-tensor ones (Lamb, Lars: _per_tensor): their trust ratios need one segment per tensor, not
    this wrapper's flat arena view, and Lamb's global gradient clip is computed in its own step."""
    out = []
    for name in _gf_optim.__all__:
        cls = getattr(_gf_optim, name)
        if isinstance(cls, type) and issubclass(cls, _gf_optim.Optimizer) and getattr(cls, "_kernel", ""):
            if cls._row.entry == "optim_step" and not cls._per_tensor:
                out.append(cls)
    return out


OPTIMIZERS: dict[str, type] = {cls.__name__: _generate(cls) for cls in _optimizer_classes()}
globals().update(OPTIMIZERS)


# ---- the flat arena -------------------------------------------------------------------------------------------
class FlatParameters:
    """A module's parameters and gradients re-pointed into one contiguous arena per dtype.

    Each parameter's .data becomes a view into `data[dtype]`, each .grad a view into `grad[dtype]`
    (DDP's gradient_as_bucket_view): backward accumulates into the arena in place, and a gradfuse
    optimizer over the parameters (in module order) steps the whole model as one segment.
    After zero_grad(set_to_none=True) autograd makes a fresh gradient; a post-accumulate-grad hook
    copies it into the arena and re-points .grad, so the next step is one segment again. A gradient
    the user replaces by hand is stepped as given (the optimizer then goes tensor by tensor).
    """

    def __init__(self, module_or_params):
        if isinstance(module_or_params, torch.nn.Module):
            params = list(module_or_params.parameters())
        else:
            params = list(module_or_params)
        seen, unique = set(), []
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
        for j, p in enumerate(unique):
            _refuse(p, f"flatten_parameters: params[{j}]", dtypes=(torch.float32, torch.float64, torch.bfloat16))
        self.params = unique
        self.data: dict = {}
        self.grad: dict = {}
        self._grad_views: dict = {}
        self._hooks = []
        by_dtype: dict = {}
        for p in unique:
            by_dtype.setdefault(p.dtype, []).append(p)
        for dtype, ps in by_dtype.items():
            total = sum(p.numel() for p in ps)
            data = torch.empty(total, dtype=dtype)
            grad = torch.zeros(total, dtype=dtype)
            offset = 0
            for p in ps:
                view = data[offset : offset + p.numel()].view(p.shape)
                view.copy_(p.detach())
                gview = grad[offset : offset + p.numel()].view(p.shape)
                if p.grad is not None:
                    gview.copy_(p.grad)
                with torch.no_grad():
                    p.data = view
                p.grad = gview
                self._grad_views[p] = gview
                if p.requires_grad:
                    self._hooks.append(p.register_post_accumulate_grad_hook(self._repoint))
                offset += p.numel()
            self.data[dtype] = data
            self.grad[dtype] = grad

    def _repoint(self, p: torch.Tensor) -> None:
        view = self._grad_views[p]
        if p.grad is not view:
            view.copy_(p.grad)
            p.grad = view

    def repoint_grads(self) -> None:
        """Put every gradient back into the arena now (None -> zeros; a replaced one -> copied in)."""
        for p, view in self._grad_views.items():
            if p.grad is None:
                view.zero_()
                p.grad = view
            else:
                self._repoint(p)

    def zero_grad(self) -> None:
        """Zero every arena gradient in place (one memset per dtype) and re-point .grad at the arena."""
        for grad in self.grad.values():
            grad.zero_()
        for p, view in self._grad_views.items():
            if p.grad is not view:
                p.grad = view

    def remove(self) -> None:
        """Remove the hooks (the parameters keep their arena memory)."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()


def flatten_parameters(module_or_params) -> FlatParameters:
    """Re-point a module's parameters (or a list of them) and their gradients into one arena per dtype."""
    return FlatParameters(module_or_params)


__all__ = ["Optimizer", "ScheduleFreeOptimizer", "FlatParameters", "flatten_parameters", "OPTIMIZERS", *OPTIMIZERS]
