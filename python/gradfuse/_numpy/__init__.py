"""The NumPy twins of gradfuse's kernels: the math, written for clarity, one module per family.

They are the readable reference, the fallback where the extension cannot run, and the oracle of
the parity tests. A twin has its kernel's name and takes every argument by name, already checked
against the kernel table (gradfuse.table, gradfuse._checks); gf.ops.<kernel>.numpy is the twin
behind those checks, with the table's signature and defaults.
"""

from . import activation, batchnorm, clip, dense, dropout, loss, optim

__all__ = ["optim", "batchnorm", "dropout", "activation", "dense", "loss", "clip"]
