"""SGD and Adam as elementwise updates, so a shard of a tensor updates exactly as the
whole tensor would (what ZeRO and the parameter server rely on).

``update(param, grad, state, t)`` changes ``param`` (and ``state``) in place; ``t`` counts
steps from 1. Adam: Kingma & Ba, ICLR 2015, Algorithm 1 (bias-corrected moments).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SGD:
    """θ ← θ − lr · g."""

    lr: float = 0.1
    state_per_param = 0          # optimizer-state elements held per parameter

    def init(self, param) -> dict:
        return {}

    def update(self, param, grad, state, t: int) -> None:
        param -= self.lr * grad


@dataclass(frozen=True)
class Adam:
    """m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;  θ ← θ − lr · m̂ / (√v̂ + ε)."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    state_per_param = 2

    def init(self, param) -> dict:
        return {"m": np.zeros_like(param), "v": np.zeros_like(param)}

    def update(self, param, grad, state, t: int) -> None:
        m, v = state["m"], state["v"]
        m *= self.beta1
        m += (1 - self.beta1) * grad
        v *= self.beta2
        v += (1 - self.beta2) * grad * grad
        m_hat = m / (1 - self.beta1 ** t)
        v_hat = v / (1 - self.beta2 ** t)
        param -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


def make_optimizer(name: str, lr: float):
    """``"sgd"`` or ``"adam"`` with learning rate ``lr``."""
    if name == "sgd":
        return SGD(lr)
    if name == "adam":
        return Adam(lr)
    raise ValueError(f"optimizer = {name!r}: expected 'sgd' or 'adam'")
