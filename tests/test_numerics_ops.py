"""Backward passes of the MLP and the tiny transformer against central finite differences.

Tolerance: central differences with eps = 1e-6 in float64 have truncation error ~eps² and
rounding error ~1e-16·|loss|/eps ≈ 3e-10 absolute, so derivatives are compared relative to
max(|numeric|, |analytic|, 1e-3) within 1e-6; a wrong term in a backward formula shows up
as an O(1) relative error along the random direction."""
import numpy as np
import pytest

from parsim.numerics import data, mlp, transformer
from parsim.numerics.transformer import LMConfig

EPS = 1e-6
RTOL = 1e-6
FLOOR = 1e-3


def fd_check(loss_fn, params, grads, rng, coords=2):
    """Directional derivative along a random direction per tensor, plus a few coordinates."""
    worst = 0.0
    for name, p in params.items():
        dirs = [rng.standard_normal(p.shape)]
        for _ in range(coords):
            e = np.zeros(p.shape)
            e.flat[rng.integers(p.size)] = 1.0
            dirs.append(e)
        for u in dirs:
            orig = p.copy()
            p += EPS * u
            lp = loss_fn(params)
            p[...] = orig - EPS * u
            lm = loss_fn(params)
            p[...] = orig
            numeric = (lp - lm) / (2 * EPS)
            analytic = float(np.sum(grads[name] * u))
            err = abs(numeric - analytic) / max(abs(numeric), abs(analytic), FLOOR)
            assert err < RTOL, (name, numeric, analytic)
            worst = max(worst, err)
    return worst


def test_mlp_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    params = mlp.init_mlp([12, 9, 7, 5], rng)
    x, y = data.teacher_batches(1, 1, 6, 12, 5)[0]
    loss, grads = mlp.loss_and_grads(params, x, y)
    assert set(grads) == set(params)
    fd_check(lambda p: mlp.forward(p, x, y)[0], params, grads, rng)


def test_transformer_backward_matches_finite_differences():
    cfg = LMConfig(vocab=11, d_model=8, n_heads=2, n_layers=2, seq_len=5)
    rng = np.random.default_rng(1)
    params = transformer.init_lm(cfg, rng)
    for k in params:                                   # leave the symmetric init point
        params[k] += 0.05 * rng.standard_normal(params[k].shape)
    tokens = data.markov_batches(2, 1, 3, cfg.seq_len, cfg.vocab)[0]
    loss, grads = transformer.loss_and_grads(params, tokens, cfg)
    assert set(grads) == set(params) and len(params) == 2 + 15 * cfg.n_layers + 3
    fd_check(lambda p: transformer.forward(p, tokens, cfg)[0], params, grads, rng)


@pytest.mark.parametrize("op", ["layernorm", "gelu", "attention"])
def test_transformer_ops_match_finite_differences(op):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 6))
    w = rng.standard_normal((2, 4, 6))                 # loss = Σ w · f(x)
    if op == "layernorm":
        g, b = rng.standard_normal(6), rng.standard_normal(6)
        f = lambda x: transformer.layernorm_fwd(x, g, b)[0]
        dx = transformer.layernorm_bwd(w, transformer.layernorm_fwd(x, g, b)[1], g)[0]
    elif op == "gelu":
        f = transformer.gelu_fwd
        dx = transformer.gelu_bwd(w, x)
    else:
        k, v = rng.standard_normal((2, 4, 6)), rng.standard_normal((2, 4, 6))
        f = lambda x: transformer.attention_fwd(x, k, v, 3)[0]
        dx = transformer.attention_bwd(w, transformer.attention_fwd(x, k, v, 3)[1])[0]
    fd_check(lambda p: float(np.sum(w * f(p["x"]))), {"x": x}, {"x": dx}, rng)


def test_attention_is_causal():
    """Changing the last position's keys and values leaves earlier outputs unchanged."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((1, 5, 4)) for _ in range(3))
    out = transformer.attention_fwd(q, k, v, 2)[0]
    k[:, -1], v[:, -1] = 9.0, 9.0
    out2 = transformer.attention_fwd(q, k, v, 2)[0]
    np.testing.assert_array_equal(out[:, :-1], out2[:, :-1])
    assert not np.allclose(out[:, -1], out2[:, -1])


def test_xent_of_uniform_logits_is_ln_classes():
    """A model that learned nothing scores ln C: ln 10 = 2.302585 (the article's 'loss')."""
    loss, _ = mlp.xent_fwd(np.zeros((4, 10)), np.array([0, 3, 7, 9]))
    assert loss == pytest.approx(np.log(10), rel=1e-15)
    assert np.log(10) == pytest.approx(2.302585093, rel=1e-9)


def test_data_is_learnable_and_seeded():
    P = data.markov_chain(0, 16)
    np.testing.assert_allclose(P.sum(1), 1.0, rtol=1e-15)
    # entropy rate of a chain whose every row is (0.8, 0.2): -(0.8 ln 0.8 + 0.2 ln 0.2)
    assert data.markov_entropy_rate(P) == pytest.approx(0.5004024235, rel=1e-9)
    a = data.teacher_batches(5, 2, 64, 10, 10)
    b = data.teacher_batches(5, 2, 64, 10, 10)
    np.testing.assert_array_equal(a[1][0], b[1][0])
    assert len(np.unique(a[0][1])) >= 5             # labels are spread over the classes
