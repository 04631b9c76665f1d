"""Penalties on the parameters, added to the loss and to the gradients in one fused pass over the
arena (gf.ops.penalty): L1 (l1 sum |w|), L2 ((l2 / 2) sum w^2, so that its gradient l2 w is torch's
weight_decay) and the elastic net (both). Only parameters with regularize=True (weights, not biases
or batch-norm parameters, by default) and a gradient are penalized.

    reg = gf.regularizers.L2(1e-4)
    value = reg(model.parameters())   # adds to each p.grad; returns the penalty to add to the loss
"""

from __future__ import annotations

from . import ops

__all__ = ["Regularizer", "L1", "L2", "ElasticNet"]


class Regularizer:
    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        if not (l1 >= 0 and l2 >= 0):
            raise ValueError(f"penalty strengths must be >= 0, got l1={l1}, l2={l2}")
        self.l1, self.l2 = float(l1), float(l2)

    def __call__(self, parameters) -> float:
        """Add the penalty's gradient to each penalized parameter's .grad; return the penalty."""
        chosen = [p for p in parameters if p.regularize and p.trainable and p.grad is not None]
        if not chosen or (self.l1 == 0 and self.l2 == 0):
            return 0.0
        return ops.penalty([p.data for p in chosen], [p.grad for p in chosen], l1=self.l1, l2=self.l2)

    def __repr__(self):
        return f"{type(self).__name__}(l1={self.l1}, l2={self.l2})"


class L1(Regularizer):
    def __init__(self, l1: float):
        super().__init__(l1=l1)


class L2(Regularizer):
    def __init__(self, l2: float):
        super().__init__(l2=l2)


class ElasticNet(Regularizer):
    """l1 sum |w| + (l2 / 2) sum w^2."""
