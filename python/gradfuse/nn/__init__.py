"""Parameters and (as they arrive) layers."""
from .parameter import Parameter, ParameterArena

__all__ = ["Parameter", "ParameterArena"]
