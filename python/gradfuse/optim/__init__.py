"""Optimizers with torch.optim's API, each step one fused kernel call per parameter group."""
from .optimizer import Optimizer, required
from .optimizers import SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, Lion, NAdam, RAdam, RMSprop, Rprop
from . import lr_scheduler  # the learning-rate schedules: gf.optim.lr_scheduler.StepLR, ...

__all__ = ["Optimizer", "required", "SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adadelta", "Adamax",
           "NAdam", "RAdam", "Rprop", "Lion", "lr_scheduler"]
