"""Schedule-free SGD and AdamW (Defazio et al. 2024, "The Road Less Scheduled"), with the names,
defaults, state keys (z, exp_avg_sq), group entries (k, train_mode, weight_sum, lr_max,
scheduled_lr) and train()/eval() swap of the schedulefree package 1.4.1, each step one fused kernel
pass (the kernel table's sgd_schedulefree / adamw_schedulefree rows).

Three sequences: z (plain SGD / Adam-style steps, in the state), x (a weighted average of the z's:
the weights to evaluate and save) and y = lerp(x, z, 1 - beta1) (where gradients are taken). Only
two are stored: while training (optimizer.train()) the parameters hold y; optimizer.eval() moves
them to x, train() back to y. gf.train.fit switches for you: train() before each epoch's steps,
eval() before validation, the epoch-end callbacks (checkpoints, early stopping) and after training,
so an evaluation or a save sees x. In your own loop call them as with schedulefree.

step() in eval mode raises (the gradients were taken at x, not y) unless nothing was stepped yet
(then x = y = z and the optimizer enters train mode itself).
"""

from __future__ import annotations

import contextlib

import numpy as np

from .optimizer import Optimizer
from .optimizers import _nonneg  # torch's check of a number that is not a kernel argument (0-d arrays too)


def _lerp(start: np.ndarray, end: np.ndarray, weight: float) -> None:
    """start = lerp(start, end, weight) in place, from the nearer end as torch.lerp_ computes it."""
    if abs(weight) < 0.5:
        start += weight * (end - start)
    else:
        start[...] = end - (end - start) * (1.0 - weight)


# the group entries schedulefree keeps, as a fresh optimizer has them (each step writes them)
_FRESH_ENTRIES = dict(k=0, train_mode=False, weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0)


class _ScheduleFree(Optimizer):
    """What both schedule-free optimizers share: the schedule (warmup, averaging weight), the
    train/eval swap and the group entries schedulefree keeps."""

    _scalar_keys: dict = {}  # no per-parameter step: the counter is the group's "k", as in schedulefree
    _group_step = True
    # the group entries each step writes: not hyperparameters, no new check when they change
    _not_hyper = ("params", "param_names", "k", "train_mode", "weight_sum", "lr_max", "scheduled_lr")

    def _beta1(self, group: dict) -> float:
        raise NotImplementedError

    def _validate_extra(self, group):
        _nonneg(group, "warmup_steps", "warmup_steps value")
        _nonneg(group, "r", "r value")
        _nonneg(group, "weight_lr_power", "weight_lr_power value")

    # ---- the schedule: schedulefree's per-group numbers for the step being taken ------------------
    @staticmethod
    def _schedule(group: dict) -> tuple[dict, float]:
        """(the group entries after this step, the averaging weight ckp1 of this step)."""
        k, warmup = group["k"], group["warmup_steps"]
        lr = group["lr"] * ((k + 1) / warmup if k < warmup else 1.0)
        lr_max = max(lr, group["lr_max"])
        weight = ((k + 1) ** group["r"]) * (lr_max ** group["weight_lr_power"])
        weight_sum = group["weight_sum"] + weight
        ckp1 = weight / weight_sum if weight_sum != 0 else 0.0
        return {"k": k + 1, "scheduled_lr": lr, "lr_max": lr_max, "weight_sum": weight_sum}, ckp1

    def step(self, grads=None, closure=None, *, grad_scale=None):
        if not self.param_groups[0]["train_mode"] and any(slot.state for rec in self._groups for slot in rec.slots):
            raise RuntimeError(
                f"{type(self).__name__}.step() in eval mode: the parameters hold the averaged weights x, "
                "not y where gradients belong. Call optimizer.train() before the training steps "
                "(and optimizer.eval() before evaluating or saving); gf.train.fit does both."
            )
        return super().step(grads, closure, grad_scale=grad_scale)

    def _step(self, grads: list, grad_scale) -> bool:
        # Every group's schedule advances once per applied step, whichever of its parameters have
        # gradients (as schedulefree's); computed after the base class checked the hyperparameters.
        # A refused or skipped step changes nothing. A step before any train() call (nothing
        # stepped yet, so x = y = z) puts the optimizer in train mode.
        self._pending = {}
        try:
            applied = super()._step(grads, grad_scale)
            if applied:
                for group in self.param_groups:
                    entries = self._pending.get(id(group)) or self._schedule(group)
                    group.update(entries[0], train_mode=True)
        finally:
            self._pending = None
        return applied

    def _step_scalars(self, group, scalars):
        entries = self._pending.get(id(group))
        if entries is None:
            entries = self._pending[id(group)] = self._schedule(group)
        out = {"lr": entries[0]["scheduled_lr"], "average_weight": entries[1]}
        if self._takes_step:
            out["step"] = entries[0]["k"]
        return out

    def _fill_state(self, group, slot, key, view):
        if key == "z":
            view[...] = slot.data  # z starts at the parameter (schedulefree: torch.clone(p))
        else:
            view.fill(0.0)

    # ---- the swap ---------------------------------------------------------------------------------
    def train(self) -> None:
        """Parameters to y (where gradients are taken): call before training steps."""
        self._swap(True)

    def eval(self) -> None:
        """Parameters to x (the averaged weights): call before evaluating, predicting or saving."""
        self._swap(False)

    def _swap(self, to_train: bool) -> None:
        moved = False
        for group, rec in zip(self.param_groups, self._groups):
            if bool(group["train_mode"]) == to_train:
                continue
            beta1 = self._beta1(group)
            weight = 1.0 - beta1 if to_train else 1.0 - 1.0 / beta1
            for slot in rec.slots:
                z = slot.state.get("z")
                if z is not None:
                    _lerp(slot.data, z, weight)
                    moved = True
            group["train_mode"] = to_train
        if moved and any(c is not None for c in self.compute_copies()):
            self.refresh_compute_copies()

    @contextlib.contextmanager
    def eval_weights(self):
        """with opt.eval_weights(): ... -- the parameters hold x inside, and go back to the mode they
        were in after (a checkpoint written mid-training holds x)."""
        was_training = bool(self.param_groups[0]["train_mode"])
        self.eval()
        try:
            yield self
        finally:
            if was_training:
                self.train()


class SGDScheduleFree(_ScheduleFree):
    """Schedule-free SGD (schedulefree.SGDScheduleFree): lr=1.0, momentum in (0, 1), no schedule
    needed; warmup_steps gives a linear warmup; weight decay is an L2 term taken at y."""

    _kernel = "sgd_schedulefree"

    def __init__(
        self,
        params,
        lr=1.0,
        momentum=0.9,
        weight_decay=0,
        warmup_steps=0,
        r=0.0,
        weight_lr_power=2,
        foreach=None,
        *,
        maximize=False,
        skip_nonfinite=False,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            r=r,
            warmup_steps=warmup_steps,
            weight_lr_power=weight_lr_power,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
            **_FRESH_ENTRIES,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _beta1(self, group):
        return group["momentum"]


class AdamWScheduleFree(_ScheduleFree):
    """Schedule-free AdamW (schedulefree.AdamWScheduleFree): lr=0.0025, betas=(0.9, 0.999); no
    first-moment buffer (z and the averaging replace it), the second moment bias-corrected; weight
    decay (L2 at y) added to the normalised step; warmup_steps gives a linear warmup."""

    _kernel = "adamw_schedulefree"

    def __init__(
        self,
        params,
        lr=0.0025,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        warmup_steps=0,
        r=0.0,
        weight_lr_power=2.0,
        foreach=None,
        *,
        maximize=False,
        skip_nonfinite=False,
    ):
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            r=r,
            warmup_steps=warmup_steps,
            weight_lr_power=weight_lr_power,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
            **_FRESH_ENTRIES,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _beta1(self, group):
        return group["betas"][0]


# fit's switches: they act on schedule-free optimizers and leave every other one alone.
def train_weights(optimizer) -> None:
    """Parameters to the training point y (schedule-free optimizers; others: nothing to do)."""
    if isinstance(optimizer, _ScheduleFree):
        optimizer.train()


def eval_weights(optimizer) -> None:
    """Parameters to the evaluation point x (schedule-free optimizers; others: nothing to do)."""
    if isinstance(optimizer, _ScheduleFree):
        optimizer.eval()


def holding_eval_weights(optimizer):
    """with holding_eval_weights(opt): ... -- the parameters hold x inside (schedule-free
    optimizers), and return to the mode they were in after; for other optimizers nothing changes."""
    return optimizer.eval_weights() if isinstance(optimizer, _ScheduleFree) else contextlib.nullcontext()


__all__ = ["SGDScheduleFree", "AdamWScheduleFree"]
