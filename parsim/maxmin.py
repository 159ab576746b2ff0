"""Max-min fair rates of flows sharing capacitated edges, by progressive filling
(Bertsekas & Gallager, *Data Networks*, 2nd ed. 1992, sec. 6.5.2): all unfrozen flows rise
together until an edge saturates; that edge's flows freeze at the level reached. One solver
for the cluster graph (:meth:`parsim.topology.Cluster.fair_rates_Bps`) and the
discrete-event network (:class:`parsim.engines.network.Fabric`).
"""
from __future__ import annotations

import math

import numpy as np


def max_min_rates(flow_of, edge_of, load_of, cap_Bps, n_flows: int) -> np.ndarray:
    """Max-min fair rate of each flow by progressive filling (vectorised).

    Parameters
    ----------
    flow_of, edge_of : int arrays, one entry per (flow, edge) incidence.
    load_of : float array, bytes/s the entry puts on the edge per 1 B/s of the
        flow's rate (members of a group crossing the edge × weight). Repeated
        (flow, edge) entries add up.
    cap_Bps : float array, capacity of every edge (``math.inf`` for no limit).
    n_flows : number of flows; a flow with no entries gets ``inf``.

    Returns
    -------
    rates : float array (n_flows,), bytes/s per member of each flow.

    Examples
    --------
    Two flows on one 10 B/s edge, a third alone on another:

    >>> max_min_rates([0, 1, 2], [0, 0, 1], [1.0, 1.0, 1.0], [10.0, 4.0], 3).tolist()
    [5.0, 5.0, 4.0]
    """
    flow_of = np.asarray(flow_of, dtype=np.int64)
    load_of = np.asarray(load_of, dtype=float)
    used, e_local = np.unique(np.asarray(edge_of, dtype=np.int64), return_inverse=True)
    residual = np.asarray(cap_Bps, dtype=float)[used].copy()
    rates = np.zeros(n_flows)
    frozen = np.bincount(flow_of, minlength=n_flows) == 0
    rates[frozen] = math.inf
    while not frozen.all():
        live = ~frozen[flow_of]
        load = np.bincount(e_local, weights=load_of * live, minlength=len(used))
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(load > 0, residual / load, math.inf)
        delta = share.min()
        rates[~frozen] += delta
        if not math.isfinite(delta):
            break
        residual = np.maximum(residual - load * delta, 0.0)
        full = (load > 0) & (share <= delta * (1 + 1e-12))
        hit = np.bincount(flow_of, weights=(full[e_local] & live), minlength=n_flows)
        frozen |= hit > 0
    return rates
