"""Optimizers with torch.optim's API, each step one fused kernel call per parameter group."""
from .optimizer import Optimizer, required
from .optimizers import SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, Lion, NAdam, RAdam, RMSprop, Rprop

__all__ = ["Optimizer", "required", "SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adadelta", "Adamax",
           "NAdam", "RAdam", "Rprop", "Lion"]
