"""Seeded synthetic data that a model can actually learn.

* :func:`teacher_batches` labels Gaussian inputs with the argmax of a fixed random
  teacher MLP, so a student of the same shape can drive the loss far below ln(C), the
  loss of a model that learned nothing (ln 10 = 2.3026 for 10 classes).
* :func:`markov_batches` draws token sequences from a fixed random Markov chain in which
  every token has two likely successors, so the next-token loss can fall from ln(V)
  towards the chain's entropy rate (:func:`markov_entropy_rate`).

All randomness comes from one ``np.random.default_rng(seed)``; the same seed gives the
same batches, so a serial and a parallel run see identical data.
"""
from __future__ import annotations

import numpy as np

from parsim.numerics import mlp


def teacher_batches(seed: int, steps: int, batch: int, d_in: int, n_classes: int,
                    hidden: int = 32, dtype=np.float64) -> list[tuple[np.ndarray, np.ndarray]]:
    """``steps`` batches of (x (batch, d_in), y (batch,)) labelled by a random teacher."""
    rng = np.random.default_rng(seed)
    teacher = mlp.init_mlp([d_in, hidden, n_classes], rng)
    for k in teacher:                                  # biases too, so classes are mixed
        if k.startswith("b"):
            teacher[k] = rng.standard_normal(teacher[k].shape) * 0.5
    out = []
    for _ in range(steps):
        x = rng.standard_normal((batch, d_in))
        h = mlp.relu_fwd(x @ teacher["W0"] + teacher["b0"])
        y = np.argmax(h @ teacher["W1"] + teacher["b1"], axis=1)
        out.append((x.astype(dtype), y))
    return out


def markov_chain(seed: int, vocab: int, p_top: float = 0.8) -> np.ndarray:
    """Transition matrix (V, V): each token goes to one successor with ``p_top``, to a
    second with 1 - p_top."""
    rng = np.random.default_rng(seed)
    P = np.zeros((vocab, vocab))
    for i in range(vocab):
        a, b = rng.choice(vocab, size=2, replace=False)
        P[i, a], P[i, b] = p_top, 1.0 - p_top
    return P


def markov_entropy_rate(P: np.ndarray) -> float:
    """Entropy per token in nats, -Σ_i π_i Σ_j P_ij ln P_ij, with π the stationary law."""
    w, vecs = np.linalg.eig(P.T)
    pi = np.abs(np.real(vecs[:, np.argmin(np.abs(w - 1))]))
    pi /= pi.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(P > 0, P * np.log(P), 0.0).sum(1)
    return float(pi @ h)


def markov_batches(seed: int, steps: int, batch: int, seq_len: int, vocab: int) -> list[np.ndarray]:
    """``steps`` batches of token ids (batch, seq_len + 1) from :func:`markov_chain`."""
    P = markov_chain(seed, vocab)
    rng = np.random.default_rng(seed + 1)
    cdf = np.cumsum(P, axis=1)
    out = []
    for _ in range(steps):
        tok = np.empty((batch, seq_len + 1), dtype=np.int64)
        tok[:, 0] = rng.integers(0, vocab, batch)
        for t in range(seq_len):
            u = rng.random(batch)[:, None]
            tok[:, t + 1] = np.minimum((u > cdf[tok[:, t]]).sum(1), vocab - 1)
        out.append(tok)
    return out
