"""Cluster graphs, routing and fair sharing (parsim/topology.py, topologies_builtin.py)."""
import math
import random
import shutil

import networkx as nx
import pytest

from parsim.errors import ScenarioError
from parsim.topology import (TOPOLOGY_DIR, Cluster, build_cluster, draw,
                             summarize)

LINK = {"link_bandwidth": "100 GB/s", "link_latency": "5 us"}
SMALL = {
    "ring": {"topology": "ring", "gpus": 8, **LINK},
    "switch": {"topology": "switch", "gpus": 8, **LINK},
    "fat_tree": {"topology": "fat_tree", "k": 4, "oversubscription": 2, **LINK},
    "torus2d": {"topology": "torus2d", "dims": [4, 3], **LINK},
    "dgx-a100": {"topology": "dgx-a100", "nodes": 3},
    "dgx-h100": {"topology": "dgx-h100", "nodes": 2},
    "ps": {"topology": "ps", "nodes": 3, "gpus_per_node": 2, "servers": 2},
    "two-node-pcie": {"topology": "two-node-pcie"},
    "ps-ethernet": {"topology": "ps-ethernet"},
}


@pytest.fixture(params=sorted(SMALL))
def cluster(request):
    return build_cluster(SMALL[request.param])


def test_every_node_and_edge_has_exactly_the_documented_attributes(cluster):
    for name, data in cluster.graph.nodes(data=True):
        assert set(data) == {"kind", "host"}, name
        assert data["kind"] in {"device", "switch", "host"}
        assert (data["host"] == -1) == (data["kind"] == "switch"), name
    for u, v, data in cluster.graph.edges(data=True):
        assert set(data) == {"bw_Bps", "latency_s", "kind"}, (u, v)
        assert data["kind"] in {"nvlink", "pcie", "ib", "ethernet", "link"}
        assert data["bw_Bps"] > 0 and data["latency_s"] >= 0
        assert cluster.graph.has_edge(v, u)        # every built-in link is full duplex
    assert all(cluster.graph.nodes[d]["kind"] == "device" for d in cluster.devices)
    assert all(cluster.graph.nodes[s]["kind"] == "host" for s in cluster.servers)


def test_structured_routes_are_real_shortest_paths(cluster):
    """Each built-in router's path exists edge by edge and is as short as a BFS path."""
    ends = list(cluster.devices) + list(cluster.servers)
    hops = dict(nx.all_pairs_shortest_path_length(cluster.graph))
    for a in ends:
        for b in ends:
            route = cluster.route(a, b)
            assert all(cluster.graph.has_edge(u, v) for u, v in route)
            assert len(route) == hops[a][b], (a, b)
            if route:
                assert route[0][0] == a and route[-1][1] == b
                assert all(x[1] == y[0] for x, y in zip(route, route[1:]))


def test_ring_neighbours_are_one_hop_and_all_reduce_matches_the_formula():
    c = build_cluster(SMALL["ring"])
    n, size_bytes, bw_Bps, alpha_s = 8, 1e9, 100e9, 5e-6
    assert c.route("g0", "g1") == (("g0", "g1"),)
    assert c.route("g7", "g0") == (("g7", "g0"),)
    assert len(c.route("g0", "g4")) == 4                     # tie: clockwise
    assert c.route("g0", "g4")[0] == ("g0", "g1")
    # one ring step: every rank sends S/n to its right neighbour at once
    step = [(c.devices[i], c.devices[(i + 1) % n]) for i in range(n)]
    rate = c.concurrent_rate_Bps(step)
    step_s = max(c.latency_s(a, b) for a, b in step) + size_bytes / n / rate
    # Thakur, Rabenseifner, Gropp 2005: 2(n-1)a + 2(n-1)/n S/B
    assert 2 * (n - 1) * step_s == pytest.approx(
        2 * (n - 1) * alpha_s + 2 * (n - 1) / n * size_bytes / bw_Bps, rel=1e-12)
    assert rate == 100e9


def test_switch_path_is_two_hops_and_pays_two_latencies():
    c = build_cluster(SMALL["switch"])
    assert c.route("g0", "g5") == (("g0", "sw"), ("sw", "g5"))
    assert c.latency_s("g0", "g5") == pytest.approx(10e-6, rel=1e-12)
    assert c.bottleneck_Bps("g0", "g5") == 100e9
    # incast: 7 senders to g0 share the sw -> g0 edge
    assert c.concurrent_rate_Bps([(d, "g0") for d in c.devices[1:]]) == pytest.approx(100e9 / 7)


def test_fat_tree_oversubscription_shows_up_across_pods_only():
    c = build_cluster(SMALL["fat_tree"])          # k = 4: 16 hosts, 4 per pod, 2 per edge
    assert len(c.devices) == 16
    cross_pod = [(c.devices[i], c.devices[(i + 4) % 16]) for i in range(16)]
    same_edge = [(c.devices[i], c.devices[i ^ 1]) for i in range(16)]
    assert c.concurrent_rate_Bps(cross_pod) == pytest.approx(100e9 / 2)
    assert c.concurrent_rate_Bps(same_edge) == pytest.approx(100e9)
    assert len(c.route("h0", "h15")) == 6 and len(c.route("h0", "h1")) == 2
    flat = build_cluster({**SMALL["fat_tree"], "oversubscription": 1})
    assert flat.concurrent_rate_Bps(cross_pod) == pytest.approx(100e9)   # non-blocking


def test_fat_tree_default_k_is_the_smallest_that_fits():
    c = build_cluster({"topology": "fat_tree", "gpus": 20, **LINK})     # k = 6 holds 54
    assert len(c.devices) == 20
    assert sum(1 for n in c.graph if n.startswith("c")) == 9         # (k/2)^2 cores


def test_torus_uses_dimension_order_routing():
    c = build_cluster(SMALL["torus2d"])
    nodes = [u for u, _ in c.route("t0.0", "t2.1")] + ["t2.1"]
    assert nodes == ["t0.0", "t1.0", "t2.0", "t2.1"]                    # x first, then y
    assert [u for u, _ in c.route("t0.0", "t2.2")] == ["t0.0", "t1.0", "t2.0"]  # y wraps 0 -> 2
    assert [u for u, _ in c.route("t0.0", "t3.2")] == ["t0.0", "t3.0"]   # wrap: 3 -> 0 is 1 hop
    assert len(c.graph.edges) == 4 * 4 * 3                                # 4 neighbours each


# achieved NCCL rates: line rate x nvlink_efficiency / nic_efficiency (topologies_builtin)
@pytest.mark.parametrize("kind, nvlink_Bps, nic_Bps", [("dgx-a100", 300e9 * 0.77, 200e9 / 8 * 0.96),
                                                       ("dgx-h100", 450e9, 400e9 / 8 * 0.96)])
def test_dgx_intra_node_rate_is_nvlink_and_inter_node_rate_is_the_nic(kind, nvlink_Bps, nic_Bps):
    c = build_cluster({"topology": kind, "nodes": 2, "gpu": "h100-sxm", "price_per_gpu_hour": 2})
    assert len(c.devices) == 16 and c.gpus_per_node == 8 and c.host_of(9) == 1
    d = c.devices
    intra = [(d[i], d[(i + 1) % 8]) for i in range(8)]          # ring inside node 0
    inter = [(d[i], d[i + 8]) for i in range(8)]                # each GPU to its rail peer
    assert c.concurrent_rate_Bps(intra) == pytest.approx(nvlink_Bps)
    assert c.concurrent_rate_Bps(inter) == pytest.approx(nic_Bps)
    assert c.latency_s(d[0], d[1]) == pytest.approx(2e-6)       # 2 NVLink hops of 1 us
    assert c.latency_s(d[0], d[8]) == pytest.approx(4e-6)       # GPU-leaf-GPU, 2 us each
    assert [u for u, _ in c.route(d[0], d[8])] == ["n0.g0", "su0.leaf0"]


def test_dgx_cross_su_goes_through_a_spine_and_stays_non_blocking():
    c = build_cluster({"topology": "dgx-h100", "nodes": 64})    # 2 scalable units of 32
    d = c.devices
    path = [u for u, _ in c.route("n0.g3", "n33.g3")] + ["n33.g3"]
    assert path == ["n0.g3", "su0.leaf3", "spine1", "su1.leaf3", "n33.g3"]
    assert c.latency_s("n0.g3", "n33.g3") == pytest.approx(2e-6 + 0.5e-6 + 0.5e-6 + 2e-6)
    shift = [(d[i], d[(i + 32 * 8) % len(d)]) for i in range(len(d))]   # every GPU to the other SU
    assert c.concurrent_rate_Bps(shift) == pytest.approx(50e9 * 0.96)


def test_dgx_overrides_and_gpus_key():
    c = build_cluster({"topology": "dgx-h100", "gpus": 32, "nic_bandwidth": "100 Gb/s",
                       "nvlink_bandwidth": "200 GB/s", "nic_latency": "3 us"})
    assert len(c.devices) == 32
    assert c.bottleneck_Bps("n0.g0", "n1.g0") == pytest.approx(12.5e9 * 0.96)
    assert c.bottleneck_Bps("n0.g0", "n0.g1") == 200e9
    assert c.latency_s("n0.g0", "n1.g0") == pytest.approx(6e-6)


def test_parameter_server_incast_is_the_server_nic():
    c = build_cluster({"topology": "ps", "nodes": 4, "gpus_per_node": 1, "servers": 1,
                       "nic_bandwidth": "25 Gb/s"})
    assert c.servers == ("ps0",) and c.graph.nodes["ps0"] == {"kind": "host", "host": 4}
    push = [(d, "ps0") for d in c.devices]
    # Li et al. OSDI 2014: n workers share the server NIC, each gets B/n
    assert c.concurrent_rate_Bps(push) == pytest.approx(25e9 / 8 / 4)
    assert [u for u, _ in c.route("w0.g0", "ps0")] == ["w0.g0", "w0", "eth"]


def test_fair_rates_are_max_min_fair_and_agree_with_the_slowest_flow():
    c = build_cluster({"topology": "dgx-h100", "nodes": 4})
    rng = random.Random(7)
    pairs = [(rng.choice(c.devices), rng.choice(c.devices)) for _ in range(300)]
    pairs = [(a, b) for a, b in pairs if a != b]
    rates = c.fair_rates_Bps(pairs)
    assert min(rates) == pytest.approx(c.concurrent_rate_Bps(pairs), rel=1e-12)
    load, top = {}, {}
    for (a, b), r in zip(pairs, rates):
        for e in c.route(a, b):
            load[e] = load.get(e, 0.0) + r
            top[e] = max(top.get(e, 0.0), r)
    adj = c.graph.adj
    for e, total in load.items():                   # capacities hold
        assert total <= adj[e[0]][e[1]]["bw_Bps"] * (1 + 1e-9)
    for (a, b), r in zip(pairs, rates):             # every flow has a bottleneck
        assert any(load[e] >= adj[e[0]][e[1]]["bw_Bps"] * (1 - 1e-9) and top[e] <= r * (1 + 1e-9)
                   for e in c.route(a, b))


def test_max_min_rates_handles_empty_and_infinite():
    c = build_cluster(SMALL["ring"])
    assert c.fair_rates_Bps([]) == []
    a = c.devices[0]
    assert c.fair_rates_Bps([(a, a)]) == [math.inf]          # no edge crossed
    assert c.concurrent_rate_Bps([]) == math.inf
    assert c.concurrent_rate_Bps([("g1", "g1")]) == math.inf
    assert c.latency_s("g1", "g1") == 0 and c.bottleneck_Bps("g1", "g1") == math.inf


def test_builds_and_routes_are_deterministic():
    a, b = (build_cluster({"topology": "fat_tree", "gpus": 54, **LINK}) for _ in range(2))
    assert list(a.graph.nodes(data=True)) == list(b.graph.nodes(data=True))
    assert list(a.graph.edges(data=True)) == list(b.graph.edges(data=True))
    assert [a.route(x, y) for x in a.devices for y in a.devices] == \
           [b.route(x, y) for x in b.devices for y in b.devices]


def test_search_fallback_breaks_ties_by_sorted_name():
    g = nx.DiGraph()
    for n in "adcb":
        g.add_node(n, kind="device" if n in "ad" else "switch", host=0 if n in "ad" else -1)
    for u, v in [("a", "c"), ("a", "b"), ("c", "d"), ("b", "d")]:
        g.add_edge(u, v, bw_Bps=1.0, latency_s=0.0, kind="link")
    c = Cluster("diamond", g, ("a", "d"))
    assert c.route("a", "d") == (("a", "b"), ("b", "d"))
    with pytest.raises(ScenarioError, match="no path from 'd' to 'a'"):
        c.route("d", "a")
    with pytest.raises(KeyError, match="'zz'"):
        c.route("a", "zz")


def test_parameterised_files_equal_the_built_in_kinds():
    for kind in ("dgx-a100", "dgx-h100"):
        from_file = build_cluster({"topology": kind, "nodes": 3})
        built_in = build_cluster({"topology": str(TOPOLOGY_DIR / f"{kind}.toml"), "nodes": 3})
        assert list(from_file.graph.edges(data=True)) == list(built_in.graph.edges(data=True))
    ps = build_cluster({"topology": "ps-ethernet", "nodes": 3})     # table overrides file
    assert len(ps.devices) == 24 and len(ps.servers) == 2
    assert ps.bottleneck_Bps("w0.g0", "ps1") == 25e9 / 8


def test_explicit_file_and_relative_path(tmp_path):
    c = build_cluster({"topology": "two-node-pcie"})
    assert c.devices == ("n0.g0", "n0.g1", "n1.g0", "n1.g1") and c.gpus_per_node == 2
    assert [c.host_of(r) for r in range(4)] == [0, 0, 1, 1]
    assert [u for u, _ in c.route("n0.g1", "n1.g0")] == ["n0.g1", "n0.pcie", "tor", "n1.pcie"]
    assert c.bottleneck_Bps("n0.g0", "n1.g0") == 12.5e9
    assert c.latency_s("n0.g0", "n1.g0") == pytest.approx(1e-6 + 2e-6 + 2e-6 + 1e-6)
    shutil.copy(TOPOLOGY_DIR / "two-node-pcie.toml", tmp_path / "mine.toml")
    (tmp_path / "sub").mkdir()
    scenario = tmp_path / "sub" / "s.toml"
    c2 = build_cluster({"topology": "../mine.toml"}, file=str(scenario))
    assert c2.devices == c.devices


def test_summarize_and_draw(tmp_path):
    c = build_cluster({"topology": "dgx-h100", "nodes": 2})
    text = summarize(c)
    assert "16 devices on 2 machines (8 per node)" in text
    assert "nvlink         32 x    450 GB/s, 1 us per hop" in text
    assert "to rank 8 (first rank of the next node): 2 hops, 4 us, 48 GB/s" in text
    assert "48 GB/s per flow, 384 GB/s in all" in text
    draw(build_cluster({"topology": "dgx-h100", "nodes": 64}), tmp_path / "big.png")
    draw(build_cluster(SMALL["ring"]), tmp_path / "ring.png")
    for name in ("big.png", "ring.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png", "ring.png"]  # no temp left


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("table, key, match", [
    ({"topology": "dgx-h10"}, "cluster.topology", "did you mean 'dgx-h100'"),
    ({"topology": "nope/missing.toml"}, "cluster.topology", "not found"),
    ({"gpus": 8}, "cluster.topology", "give topology"),
    ({"topology": "ring", "gpus": 8, "link_bandwith": "1 GB/s", "link_latency": 0},
     "cluster.link_bandwith", "did you mean 'link_bandwidth'"),
    ({"topology": "ring", "gpus": 8, "link_bandwidth": "100 parsecs", "link_latency": 0},
     "cluster.link_bandwidth", "cannot read unit 'parsecs'"),
    ({"topology": "ring", "gpus": 8, "link_bandwidth": "10 GB/s", "link_latency": "fast"},
     "cluster.link_latency", "cannot read"),
    ({"topology": "ring", "gpus": "8", **LINK}, "cluster.gpus", "not a positive integer"),
    ({"topology": "ring", "gpus": True, **LINK}, "cluster.gpus", "not a positive integer"),
    ({"topology": "ring", "gpus": 8, "link_latency": "1 us"}, "cluster.link_bandwidth", "missing"),
    ({"topology": "fat_tree", "k": 4, "gpus": 17, **LINK}, "cluster.gpus",
     "17 devices exceed the k = 4 fat tree's k\\^3/4 = 16 hosts; raise k to 6"),
    ({"topology": "fat_tree", "k": 5, **LINK}, "cluster.k", "must be even"),
    ({"topology": "fat_tree", "k": 4, "oversubscription": 0, **LINK}, "cluster.oversubscription",
     "positive number"),
    ({"topology": "torus2d", "dims": [4], **LINK}, "cluster.dims", "two positive integers"),
    ({"topology": "dgx-h100", "nodes": 2, "gpus": 24}, "cluster.gpus", "differs from nodes"),
    ({"topology": "ps", "nodes": 2, "intra_link": "pcei"}, "cluster.intra_link",
     "did you mean 'pcie'"),
    ({"topology": "two-node-pcie", "nodes": 4}, "cluster.nodes", "takes no key 'nodes'"),
])
def test_user_mistakes_raise_scenario_error_with_file_and_key(table, key, match):
    with pytest.raises(ScenarioError, match=match) as err:
        build_cluster(table, file="scenarios/x.toml")
    assert err.value.key == key and err.value.file == "scenarios/x.toml"
    assert str(err.value).startswith(f"scenarios/x.toml: {key}: ")


@pytest.mark.parametrize("text, key, match", [
    ('kind = "dgx-h100"\nnic_bandwith = "1 GB/s"\n', "nic_bandwith", "did you mean 'nic_bandwidth'"),
    ('kind = "dgx-h200"\n', "kind", "did you mean 'dgx-h100'"),
    ('[[nodes]]\nname = "g"\nkind = "device"\nhost = 0\n[[links]]\na = "g"\nb = "x"\n'
     'bandwidth = 1\nlatency = 0\n', "links[0].b", "'x' is not a node"),
    ('[[nodes]]\nname = "g"\nkind = "devce"\nhost = 0\n', "nodes[0].kind", "did you mean 'device'"),
    ('[[nodes]]\nname = "s"\nkind = "switch"\nhost = 0\n', "nodes[0].host", "host = -1"),
    ('[[nodes]]\nname = "a"\nkind = "device"\nhost = 0\n[[nodes]]\nname = "b"\nkind = "device"\n'
     'host = 1\n', "links", "cannot reach each other"),
    ('[[nodes]]\nname = "g"\nkind = "device"\nhost = 0\n[[links]]\na = "g"\nb = "g"\n'
     'bandwidth = "fast"\nlatency = 0\n', "links[0].bandwidth", "cannot read"),
    ('nodes = 3 = 4\n', None, "not valid TOML"),
])
def test_mistakes_inside_a_topology_file_name_that_file(tmp_path, text, key, match):
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=match) as err:
        build_cluster({"topology": str(path)}, file="s.toml")
    assert err.value.file == str(path) and err.value.key == key


def test_keys_the_topology_does_not_own_are_ignored():
    c = build_cluster({"topology": "switch", "gpus": 4, **LINK, "gpu": "a100-80gb",
                       "profile": "profiles/x.toml", "price_per_gpu_hour": 1.5, "cpu": "epyc"})
    assert len(c.devices) == 4
