"""Flow-level network: max-min fair sharing, latency then bandwidth, flow groups, weights.

Also home of ``GraphCluster`` and small graph builders that the DES tests share:
a stand-in with the Cluster interface of docs/interfaces.md, so these tests do
not depend on parsim.topology.
"""
import math

import networkx as nx
import numpy as np
import pytest
import simpy

from parsim.engines.network import Fabric, max_min_rates


class GraphCluster:
    """Minimal object with the Cluster interface (graph, devices, servers, route, ...)."""

    def __init__(self, graph, devices, servers=(), gpus_per_node=1):
        self.name = "test"
        self.graph, self.devices, self.servers = graph, tuple(devices), tuple(servers)
        self.gpus_per_node = gpus_per_node
        self._routes = {}

    def route(self, src, dst):
        if (src, dst) not in self._routes:
            path = nx.shortest_path(self.graph, src, dst, weight="latency_s")
            self._routes[src, dst] = tuple(zip(path[:-1], path[1:]))
        return self._routes[src, dst]

    def latency_s(self, src, dst):
        return sum(self.graph.edges[e]["latency_s"] for e in self.route(src, dst))

    def bottleneck_Bps(self, src, dst):
        return min(self.graph.edges[e]["bw_Bps"] for e in self.route(src, dst))

    def host_of(self, rank):
        return self.graph.nodes[self.devices[rank]]["host"]


def _link(g, a, b, bw, lat, kind="link"):
    g.add_edge(a, b, bw_Bps=bw, latency_s=lat, kind=kind)
    g.add_edge(b, a, bw_Bps=bw, latency_s=lat, kind=kind)


def ring_cluster(n, bw=10e9, lat=1e-6):
    """n devices on a bidirectional ring of links."""
    g = nx.DiGraph()
    devs = [f"d{i:03d}" for i in range(n)]
    for i, d in enumerate(devs):
        g.add_node(d, kind="device", host=i)
    for i in range(n):
        _link(g, devs[i], devs[(i + 1) % n], bw, lat)
    return GraphCluster(g, devs)


def switch_cluster(n, bw=10e9, lat=1e-6, servers=0, server_bw=None):
    """n devices (and optional PS hosts) on one non-blocking switch."""
    g = nx.DiGraph()
    g.add_node("sw", kind="switch", host=-1)
    devs = [f"d{i:03d}" for i in range(n)]
    for i, d in enumerate(devs):
        g.add_node(d, kind="device", host=i)
        _link(g, d, "sw", bw, lat)
    srv = [f"s{j:02d}" for j in range(servers)]
    for j, s in enumerate(srv):
        g.add_node(s, kind="host", host=n + j)
        _link(g, s, "sw", server_bw or bw, lat)
    return GraphCluster(g, devs, srv)


def leaf_spine_cluster(leaves, per_leaf, dev_bw, up_bw, lat=0.0):
    """Two-level tree: per_leaf devices per leaf switch, one uplink per leaf to a spine."""
    g = nx.DiGraph()
    g.add_node("spine", kind="switch", host=-1)
    devs = []
    for l in range(leaves):
        leaf = f"leaf{l}"
        g.add_node(leaf, kind="switch", host=-1)
        _link(g, leaf, "spine", up_bw, lat)
        for i in range(per_leaf):
            d = f"d{l}_{i}"
            g.add_node(d, kind="device", host=l)
            _link(g, d, leaf, dev_bw, lat)
            devs.append(d)
    return GraphCluster(g, devs, gpus_per_node=per_leaf)


def hosts_cluster(hosts, g_per_host, intra_bw, inter_bw, intra_lat, inter_lat):
    """Hosts with an intra-host switch (NVLink-like) and one NIC per device to a core switch."""
    g = nx.DiGraph()
    g.add_node("core", kind="switch", host=-1)
    devs = []
    for h in range(hosts):
        nv = f"nv{h}"
        g.add_node(nv, kind="switch", host=h)
        for i in range(g_per_host):
            d = f"h{h}g{i}"
            g.add_node(d, kind="device", host=h)
            _link(g, d, nv, intra_bw, intra_lat / 2, "nvlink")
            _link(g, d, "core", inter_bw, inter_lat / 2, "ib")
            devs.append(d)
    return GraphCluster(g, devs, gpus_per_node=g_per_host)


def check_max_min(rates, flows, cap):
    """networkx validate_flows style: capacity respected, every flow has a bottleneck.

    flows: list of edge lists; cap: dict edge -> capacity.
    """
    load = {e: 0.0 for e in cap}
    for r, path in zip(rates, flows):
        for e in path:
            load[e] += r
    for e, c in cap.items():
        assert load[e] <= c * (1 + 1e-9), (e, load[e], c)
    for r, path in zip(rates, flows):
        assert any(load[e] >= cap[e] * (1 - 1e-9)
                   and all(r >= q * (1 - 1e-9) for q, p in zip(rates, flows) if e in p)
                   for e in path), ("no bottleneck", r, path)


def _rates(flows, cap):
    edges = sorted(cap)
    idx = {e: i for i, e in enumerate(edges)}
    flow_of = [f for f, path in enumerate(flows) for _ in path]
    edge_of = [idx[e] for path in flows for e in path]
    return max_min_rates(flow_of, edge_of, np.ones(len(edge_of)),
                         np.array([cap[e] for e in edges]), len(flows))


def test_two_flows_on_one_link_halve_the_rate():
    assert _rates([["a"], ["a"]], {"a": 10.0}).tolist() == [5.0, 5.0]


def test_textbook_max_min_example():
    # Bertsekas & Gallager sec. 6.5.2 shape: long flow over links a, b; one short on each.
    # Link a (cap 1) is shared by 3 flows -> 1/3 each; the flow on b alone gets 2 - 1/3.
    flows = [["a", "b"], ["a"], ["a"], ["b"]]
    rates = _rates(flows, {"a": 1.0, "b": 2.0})
    assert rates == pytest.approx([1 / 3, 1 / 3, 1 / 3, 5 / 3], rel=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_random_flows_respect_capacity_and_have_a_bottleneck(seed):
    rng = np.random.default_rng(seed)
    cap = {e: float(c) for e, c in enumerate(rng.uniform(1, 10, 12))}
    flows = [list(rng.choice(12, size=rng.integers(1, 5), replace=False))
             for _ in range(rng.integers(1, 30))]
    check_max_min(_rates(flows, cap), flows, cap)


def test_weight_counts_replicated_flows_on_shared_links():
    # One entity standing for 3 flows plus one plain flow on a 8 B/s link -> 2 B/s each.
    rates = max_min_rates([0, 1], [0, 0], [3.0, 1.0], [8.0], 2)
    assert rates.tolist() == [2.0, 2.0]


def test_unlimited_links_give_infinite_rate():
    assert max_min_rates([0], [0], [1.0], [math.inf], 1).tolist() == [math.inf]


def _line():
    g = nx.DiGraph()
    _link(g, "a", "b", 10.0, 1.0)
    _link(g, "b", "c", 10.0, 1.0)
    return g


def test_trace_of_two_flows_sharing_a_link():
    # f1: a->c, 30 B from t=0; f2: b->c, 10 B from t=1. Latency 2 s and 1 s.
    env, log = simpy.Environment(), []
    fab = Fabric(env, _line(), trace=log)

    def later():
        yield env.timeout(1.0)
        yield fab.transfer([("b", "c")], 10.0, name="f2")

    fab.transfer([("a", "c")], 30.0, name="f1")
    env.process(later())
    env.run()
    # f1 streams alone at 10 B/s from t=2; f2 joins at t=2 too (1 s late, 1 s latency):
    # both share b->c at 5 B/s; f2 ends at 4 (10 B), f1 has 20 left, alone again: ends at 6.
    assert log == [("start f1", 2.0), ("start f2", 2.0), ("end f2", 4.0), ("end f1", 6.0)]


def test_latency_is_paid_once_then_bandwidth():
    env = simpy.Environment()
    fab = Fabric(env, _line())
    fab.transfer([("a", "c")], 50.0)
    env.run()
    assert env.now == pytest.approx(2.0 + 5.0, rel=1e-12)


def test_flow_group_equals_its_members_as_single_flows():
    # Ring step on 4 ring-linked nodes: each member has its own link, so the group's
    # lock-step rate equals each single flow's rate.
    g = nx.DiGraph()
    for i in range(4):
        _link(g, i, (i + 1) % 4, 4.0, 0.5)
    pairs = [(i, (i + 1) % 4) for i in range(4)]
    times = []
    for grouped in (True, False):
        env = simpy.Environment()
        fab = Fabric(env, g)
        if grouped:
            fab.transfer(pairs, 8.0)
        else:
            for pr in pairs:
                fab.transfer([pr], 8.0)
        env.run()
        times.append(env.now)
    assert times == [2.5, 2.5]


def test_identical_active_sets_reuse_one_rate_computation():
    env = simpy.Environment()
    fab = Fabric(env, _line())

    def steps():
        for _ in range(10):
            yield fab.transfer([("a", "b"), ("b", "c")], 10.0)

    env.process(steps())
    env.run()
    assert env.now == pytest.approx(10 * (1.0 + 1.0), rel=1e-12)
    assert fab.rate_computations == 1


def test_weighted_transfer_is_slowed_by_its_replicas():
    env = simpy.Environment()
    fab = Fabric(env, _line())
    fab.transfer([("a", "b")], 10.0, weight=4.0)    # 4 identical flows on a->b
    env.run()
    assert env.now == pytest.approx(1.0 + 10.0 / (10.0 / 4), rel=1e-12)
    assert fab.flows == 4.0
