"""The NumPy twins of gradfuse's kernels: same names and signatures, written for clarity.

They are the readable reference, the fallback where the extension cannot run, and the oracle of
the parity tests.
"""
from . import activation, batchnorm, clip, dense, dropout, loss, optim

__all__ = ["optim", "batchnorm", "dropout", "activation", "dense", "loss", "clip"]
