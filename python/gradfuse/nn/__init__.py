"""Layers, parameters, the parameter arena and the initializers (gf.nn.init).

    model = gf.nn.Sequential([gf.nn.Dense(64, 128, activation="relu"), gf.nn.BatchNorm(128),
                              gf.nn.Dropout(0.2), gf.nn.Dense(128, 10)], seed=0)
    y = model.forward(x, training=True);  model.backward(dy)   # gradients in p.grad
    model.predict(x); model.predict_proba(x); model.predict_classes(x)
    model.save("model.gfm");  model = gf.load_model("model.gfm")   # architecture + weights

Custom modules subclass gf.nn.Module (see its docstring); @gf.nn.register_serializable lets
gf.load_model rebuild them.
"""

from . import init
from .layers import (
    GELU,
    Activation,
    BatchNorm,
    Dense,
    DropConnect,
    Dropout,
    Flatten,
    Identity,
    LeakyReLU,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    Standardize,
    Tanh,
)
from .module import Module, load_model, register_serializable
from .parameter import Parameter, ParameterArena

__all__ = [
    "Parameter",
    "ParameterArena",
    "Module",
    "Dense",
    "DropConnect",
    "BatchNorm",
    "Dropout",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "Tanh",
    "Sigmoid",
    "Softmax",
    "GELU",
    "Identity",
    "Flatten",
    "Sequential",
    "Standardize",
    "init",
    "register_serializable",
    "load_model",
]
