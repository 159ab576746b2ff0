"""Alpha-beta (Hockney) fits of measured communication times, by relative error.

Model: t(S) = α + S/B, with α the latency in seconds and B the bandwidth in bytes/s
(Hockney, "The communication challenge for MPP", Parallel Computing 20(3), 1994).

Why relative error: message sizes span 1 KiB .. 64 MiB, times span four decades. Plain
least squares fits the large messages and ignores the small ones (an R² of 0.99 once hid
10-450x errors at 1 KiB). Minimising Σ ((α + β·S_i − t_i) / t_i)², with β = 1/B, weighs
every size alike; it is a linear least-squares problem with rows scaled by 1/t_i, solved
with α, β ≥ 0 (:func:`scipy.optimize.lsq_linear`).

Where the curve bends (flat at small sizes, bandwidth-bound, slower again past ~16 MiB when
buffers leave the caches) one line cannot fit; :func:`fit_piecewise` splits the sizes into
up to three contiguous segments, each with its own (α, B), and keeps extra segments only
when they earn their parameters (BIC) and the single line misses by more than ``tol``.

>>> sizes = [1e3, 1e4, 1e5, 1e6, 1e7]
>>> fit = fit_alpha_beta(sizes, [2e-6 + s / 1e9 for s in sizes])
>>> round(fit.alpha_s * 1e6, 6), round(fit.bw_Bps / 1e9, 6)
(2.0, 1.0)
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class AlphaBeta:
    """One Hockney segment fitted over sizes ``min_bytes`` .. ``max_bytes``."""

    alpha_s: float
    bw_Bps: float                      # math.inf when the segment is flat (β = 0)
    min_bytes: float
    max_bytes: float
    rel_err: float                     # max |relative residual| over the segment's points
    rms_rel_err: float
    residuals: tuple[float, ...]       # (predicted - measured) / measured, per point
    ci_alpha_s: tuple[float, float] | None = None    # 95 % interval; None with no spare points
    ci_bw_Bps: tuple[float, float] | None = None
    ssr: float = field(default=0.0, repr=False)

    def time_s(self, size_bytes: float) -> float:
        """Predicted seconds for a message of ``size_bytes``."""
        return self.alpha_s + size_bytes / self.bw_Bps


def fit_alpha_beta(sizes_bytes, times_s, *, confidence: float = 0.95) -> AlphaBeta:
    """Fit t = α + S/B minimising the squared relative error; α ≥ 0, B > 0.

    Returns the fit with its residuals and ``confidence`` intervals (t-distribution on the
    linearised covariance; the bandwidth interval maps β ± h to 1/(β ± h)).
    """
    from scipy import optimize, stats

    size = np.asarray(sizes_bytes, dtype=float)
    t = np.asarray(times_s, dtype=float)
    if size.shape != t.shape or size.size < 2:
        raise ValueError(f"need at least two (size, time) pairs, got {size.size} and {t.size}")
    if np.any(t <= 0) or np.any(size <= 0):
        raise ValueError("sizes and times must be positive")
    design = np.column_stack([1.0 / t, size / t])          # rows of [α, β] / t
    solution = optimize.lsq_linear(design, np.ones_like(t), bounds=(0.0, np.inf),
                                   method="bvls", lsmr_tol=None)
    alpha_s, beta = (float(v) for v in solution.x)
    residuals = design @ solution.x - 1.0
    ssr = float(residuals @ residuals)
    dof = t.size - 2
    ci_alpha = ci_bw = None
    if dof > 0:
        cov = ssr / dof * np.linalg.pinv(design.T @ design)
        half = stats.t.ppf(0.5 + confidence / 2, dof) * np.sqrt(np.clip(np.diag(cov), 0, None))
        half = [float(h) for h in half]
        ci_alpha = (max(alpha_s - half[0], 0.0), alpha_s + half[0])
        ci_bw = (1.0 / (beta + half[1]) if beta + half[1] > 0 else math.inf,
                 1.0 / (beta - half[1]) if beta - half[1] > 0 else math.inf)
    return AlphaBeta(
        alpha_s=alpha_s, bw_Bps=1.0 / beta if beta > 0 else math.inf,
        min_bytes=float(size.min()), max_bytes=float(size.max()),
        rel_err=float(np.max(np.abs(residuals))),
        rms_rel_err=float(np.sqrt(ssr / t.size)), residuals=tuple(float(r) for r in residuals),
        ci_alpha_s=ci_alpha, ci_bw_Bps=ci_bw, ssr=ssr)


def fit_piecewise(sizes_bytes, times_s, *, max_segments: int = 3, min_points: int = 3,
                  tol: float = 0.10) -> list[AlphaBeta]:
    """Split sorted sizes into 1..``max_segments`` contiguous alpha-beta segments.

    Each segment holds at least ``min_points`` points; for each k the partition with the
    least squared relative error wins. More segments replace fewer only while the fewer
    miss some point by more than ``tol`` (relative) and the Bayesian information criterion
    n·ln(SSR/n) + p·ln(n), p = 3k - 1 parameters, improves.
    Returns the segments in size order.

    >>> s = [2.0 ** e for e in range(10, 28, 2)]          # 1 KiB .. 64 MiB
    >>> t = [1e-3 + x / 1e9 if x <= 2 ** 20 else 1e-3 + x / 0.5e9 for x in s]
    >>> [round(seg.bw_Bps / 1e9, 3) for seg in fit_piecewise(s, t)][-1]
    0.5
    """
    order = np.argsort(np.asarray(sizes_bytes, dtype=float))
    size = np.asarray(sizes_bytes, dtype=float)[order]
    t = np.asarray(times_s, dtype=float)[order]
    n = size.size
    fits = [[fit_alpha_beta(size, t)]]                       # best partition for k = 1, 2, ...
    for k in range(2, max_segments + 1):
        if n < k * min_points:
            break
        candidate, candidate_ssr = None, math.inf
        for cuts in itertools.combinations(range(min_points, n - min_points + 1), k - 1):
            bounds = (0,) + cuts + (n,)
            if any(b - a < min_points for a, b in zip(bounds, bounds[1:])):
                continue
            segs = [fit_alpha_beta(size[a:b], t[a:b]) for a, b in zip(bounds, bounds[1:])]
            ssr = sum(seg.ssr for seg in segs)
            if ssr < candidate_ssr:
                candidate, candidate_ssr = segs, ssr
        if candidate is not None:
            fits.append(candidate)
    best = fits[0]
    for segs in fits[1:]:
        if max(seg.rel_err for seg in best) <= tol:
            break
        if _bic(segs, n) < _bic(best, n):
            best = segs
    return best


def _bic(segments: list[AlphaBeta], n: int) -> float:
    ssr = sum(seg.ssr for seg in segments)
    params = 3 * len(segments) - 1
    return n * math.log(max(ssr, 1e-300) / n) + params * math.log(n)
