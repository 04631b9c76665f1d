"""Layers, parameters, the parameter arena and the initializers (gf.nn.init).

    model = gf.nn.Sequential([gf.nn.Dense(64, 128, activation="relu"), gf.nn.BatchNorm(128),
                              gf.nn.Dropout(0.2), gf.nn.Dense(128, 10)], seed=0)
    y = model.forward(x, training=True);  model.backward(dy)   # gradients in p.grad
"""
from . import init
from .layers import (GELU, Activation, BatchNorm, Dense, DropConnect, Dropout, Flatten, Identity, LeakyReLU, ReLU,
                     Sequential, Sigmoid, Softmax, Standardize, Tanh)
from .module import Module
from .parameter import Parameter, ParameterArena

__all__ = ["Parameter", "ParameterArena", "Module", "Dense", "DropConnect", "BatchNorm", "Dropout", "Activation",
           "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Softmax", "GELU", "Identity", "Flatten", "Sequential",
           "Standardize", "init"]
