"""Optimizers with torch.optim's API, each step one fused kernel call per parameter group; gradient
clipping with torch.nn.utils' API (clip_grad_norm_, clip_grad_value_), one fused call per list."""

from . import (
    lr_scheduler,  # the learning-rate schedules: gf.optim.lr_scheduler.StepLR, ...
    optimizers,
    schedulefree,
)
from .clip import clip_grad_norm_, clip_grad_norm_per_param_, clip_grad_value_, grad_norm
from .lamb import Lamb, Lars, lamb_param_groups
from .lbfgs import LBFGS
from .optimizer import Optimizer, required
from .optimizers import *  # noqa: F403 - the optimizer classes, listed in optimizers.__all__
from .schedulefree import *  # noqa: F403 - SGDScheduleFree, AdamWScheduleFree
from .second_order import (
    CGResult,
    ConjugateGradient,
    HessianFree,
    LineSearchResult,
    ModelClosure,
    Newton,
    line_search,
    linear_cg,
)
from .shaped import Adafactor, Muon, MuonWithAdamW, muon_with_adamw, newton_schulz

__all__ = [
    "Optimizer",
    "required",
    *optimizers.__all__,
    "Adafactor",
    "LBFGS",
    "Muon",
    "MuonWithAdamW",
    "muon_with_adamw",
    "newton_schulz",
    *schedulefree.__all__,
    "Lamb",
    "Lars",
    "lamb_param_groups",
    "lr_scheduler",
    "clip_grad_norm_",
    "clip_grad_value_",
    "clip_grad_norm_per_param_",
    "grad_norm",
    # the seeds' second-order methods (closure-driven: opt.step(closure))
    "ConjugateGradient",
    "Newton",
    "HessianFree",
    "ModelClosure",
    "line_search",
    "LineSearchResult",
    "linear_cg",
    "CGResult",
]

# The papers' (and DESIGN.md's) capitals; the classes keep timm's names, Lamb and Lars.
LAMB = Lamb
LARS = Lars
