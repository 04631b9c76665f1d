"""Optimizers with torch.optim's API, each step one fused kernel call per parameter group; gradient
clipping with torch.nn.utils' API (clip_grad_norm_, clip_grad_value_), one fused call per list."""

from . import (
    lr_scheduler,  # the learning-rate schedules: gf.optim.lr_scheduler.StepLR, ...
    optimizers,
    schedulefree,
)
from .clip import clip_grad_norm_, clip_grad_norm_per_param_, clip_grad_value_, grad_norm
from .optimizer import Optimizer, required
from .optimizers import *  # noqa: F403 - the optimizer classes, listed in optimizers.__all__
from .schedulefree import *  # noqa: F403 - SGDScheduleFree, AdamWScheduleFree

__all__ = [
    "Optimizer",
    "required",
    *optimizers.__all__,
    *schedulefree.__all__,
    "lr_scheduler",
    "clip_grad_norm_",
    "clip_grad_value_",
    "clip_grad_norm_per_param_",
    "grad_norm",
]
