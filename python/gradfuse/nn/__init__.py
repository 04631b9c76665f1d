"""Parameters, initializers (gf.nn.init) and (as they arrive) layers."""
from . import init
from .parameter import Parameter, ParameterArena

__all__ = ["Parameter", "ParameterArena", "init"]
