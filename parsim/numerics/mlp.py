"""A multi-layer perceptron with its backward pass written out (no autograd).

Parameters are a plain dict: ``W{i}`` of shape ``(d_i, d_{i+1})`` and ``b{i}`` of shape
``(d_{i+1},)`` for layer ``i`` of ``sizes = [d_0, d_1, ..., d_L]``. Every layer but the
last is followed by ReLU; the loss is the mean softmax cross-entropy over the batch::

    h_0 = x;  h_{i+1} = relu(h_i W_i + b_i)  (i < L-1);  logits = h_{L-1} W_{L-1} + b_{L-1}
    loss = -(1/b) Σ_n log softmax(logits_n)[y_n]

Each op's forward and backward sit side by side, as in micrograd's ``engine.py``; the
transformer (``transformer.py``) and the sharded blocks (``blocks.py``) reuse these ops.
Float64 is used for exactness checks; any float dtype works.
"""
from __future__ import annotations

import numpy as np


def init_mlp(sizes, rng: np.random.Generator, dtype=np.float64) -> dict[str, np.ndarray]:
    """He-initialised weights (std sqrt(2/d_in)) and zero biases, drawn from ``rng``."""
    params = {}
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"W{i}"] = (rng.standard_normal((d_in, d_out)) * np.sqrt(2.0 / d_in)).astype(dtype)
        params[f"b{i}"] = np.zeros(d_out, dtype)
    return params


def n_layers(params: dict) -> int:
    """Number of linear layers in an MLP parameter dict."""
    return sum(1 for k in params if k.startswith("W"))


# ---- ops: forward and backward side by side --------------------------------------------

def linear_fwd(x, W, b=None):
    """y = x W + b: (..., d_in) @ (d_in, d_out) -> (..., d_out); ``b=None`` adds nothing."""
    y = x @ W
    return y if b is None else y + b


def linear_bwd(dy, x, W):
    """Gradients of y = x W + b: dx (..., d_in), dW (d_in, d_out), db (d_out,)."""
    d_in, d_out = W.shape
    x2, dy2 = x.reshape(-1, d_in), dy.reshape(-1, d_out)      # (n, d_in), (n, d_out)
    return dy @ W.T, x2.T @ dy2, dy2.sum(0)


def relu_fwd(x):
    """max(x, 0), any shape."""
    return np.maximum(x, 0)


def relu_bwd(dy, y):
    """Gradient through ReLU given its output ``y`` (dy where y > 0)."""
    return dy * (y > 0)


def xent_fwd(logits, labels):
    """Mean softmax cross-entropy: logits (..., C), int labels (...) -> (loss, probs (n, C))."""
    C = logits.shape[-1]
    z = logits.reshape(-1, C)                                  # (n, C)
    z = z - z.max(-1, keepdims=True)                           # stable log-softmax
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))        # (n, C)
    y = labels.reshape(-1)
    loss = -logp[np.arange(len(y)), y].mean()
    return loss, np.exp(logp)


def xent_bwd(probs, labels, shape, scale=1.0):
    """d(scale · mean loss)/d logits = scale · (softmax − onehot)/n, reshaped to ``shape``."""
    y = labels.reshape(-1)
    d = probs.copy()                                           # (n, C)
    d[np.arange(len(y)), y] -= 1.0
    return (d * (scale / len(y))).reshape(shape)


# ---- the whole network ----------------------------------------------------------------

def forward(params, x, labels):
    """Loss and the activations backward needs. x (b, d_0), labels (b,) ints."""
    L = n_layers(params)
    hs = [x]                                                   # inputs of each layer
    for i in range(L):
        a = linear_fwd(hs[-1], params[f"W{i}"], params[f"b{i}"])   # (b, d_{i+1})
        hs.append(relu_fwd(a) if i < L - 1 else a)
    loss, probs = xent_fwd(hs[-1], labels)
    return loss, (hs, probs, labels)


def backward(params, cache) -> dict[str, np.ndarray]:
    """Gradients of the mean loss with respect to every parameter."""
    hs, probs, labels = cache
    L = n_layers(params)
    dy = xent_bwd(probs, labels, hs[-1].shape)                 # (b, d_L)
    grads = {}
    for i in reversed(range(L)):
        if i < L - 1:
            dy = relu_bwd(dy, hs[i + 1])
        dy, grads[f"W{i}"], grads[f"b{i}"] = linear_bwd(dy, hs[i], params[f"W{i}"])
    return grads


def loss_and_grads(params, x, labels):
    """(mean loss, grads) of the MLP on one batch; the single-device reference."""
    loss, cache = forward(params, x, labels)
    return loss, backward(params, cache)
