"""Built-in cluster shapes: one builder and one router per kind.

Each builder takes the parsed ``[cluster]`` values (SI floats and ints, see
``KINDS`` for the keys) and returns a :class:`Built`: the ``networkx.DiGraph`` with
the node and edge attributes listed in :mod:`parsim.topology`, the devices in rank
order, the parameter-server hosts, and a *router*, a function ``(src, dst) -> node
path`` that knows the shape and so needs no graph search: it climbs to the lowest
common switch and picks among equal paths by index (destination-mod-k, as
InfiniBand's fat-tree routing does: Zahavi, "D-Mod-K Routing Providing Non-Blocking
Traffic for Shift Permutations on Real Life Fat Trees", CCIT report 776, Technion,
2010). A router returns ``None`` for pairs it does not know (switch to switch); the
cluster then falls back to a graph search.

Figures used as defaults, with their sources:

- NVLink per GPU per direction: A100 (NVLink 3, twelve links) 600 GB/s in total, 300 GB/s
  each way (NVIDIA, "NVLink and NVSwitch", nvidia.com/data-center/nvlink; A100 Tensor Core
  GPU datasheet); H100 SXM (NVLink 4, 18 links of 50 GB/s) 900 GB/s in total, 450 GB/s each
  way (NVIDIA DGX SuperPOD H100 reference architecture, RA-11333-001, "1.5X higher bandwidth
  per GPU @ 900 GBps"; nccl issue #1264 measures 380 GB/s of the 450 GB/s one way).
- NICs: DGX A100 has eight ConnectX-6 HDR 200 Gb/s compute NICs (DGX SuperPOD A100 reference
  architecture, RA-09950-001, 2020); DGX H100 eight ConnectX-7 NDR 400 Gb/s (RA-11333-001).
- Scalable units (SU): 20 DGX A100 per SU (RA-09950-001), 32 DGX H100 per SU (RA-11333-001,
  "SUs of 32 DGX H100 systems"); one leaf switch per rail per SU, rail-optimised, spines
  joining leaves, non-blocking (as many uplinks as downlinks on every leaf).
- Latencies per hop. NVLink 1 us, so GPU-NVSwitch-GPU is 2 us: NCCL's own model charges
  0.47 / 1.9 / 3.4 us per ring step over NVLink for LL / LL128 / Simple (NVIDIA/nccl,
  src/graph/tuning.cc, ``hwLat``) and nccl-tests issue #123 measures ~3 us peer-to-peer write
  latency on a DGX A100. NIC 2 us per GPU-leaf hop, so a same-leaf network step is 4 us
  (tuning.cc ``hwLat`` NET ring: 2.7 / 4.0 / 9.6 us). Switch-to-switch 0.5 us: Quantum-2
  cut-through is ~0.13-0.33 us port to port, plus cables and adaptive routing (an estimate).
- Achieved NCCL bandwidth per link class (``nvlink_efficiency``, ``nic_efficiency``; every
  NVLink or every NIC edge of the DGX builder carries line rate x efficiency). NVIDIA GTC24
  session S62129, slide "Collective Communication Bandwidth" (nccl-tests all-reduce bus
  bandwidth, shared/data/collectives.csv rows ``gtc24_*``): NVLink3 on A100 232 GB/s of the
  300 GB/s line rate (0.77); 200 Gb RDMA 24 of 25 GB/s and 400 Gb RDMA 48 of 50 GB/s (0.96;
  nccl-tests issue #290 expects 46-48 GB/s per NDR NIC). NVLink4 on H100: the ring reaches
  ~370 of 450 GB/s, but NCCL >= 2.18 runs all-reduce (and >= 2.19 reduce-scatter and
  all-gather) on NVSwitch systems with NVLink SHARP, which reaches 476-480 GB/s bus bandwidth
  (rows ``gtc24_nvlink4_sharp_h100``, ``issue_nccltests290_h100_1node_nvls_476``), at or above
  the line rate: efficiency 1.0. The generic kinds (ring, switch, fat tree, torus; link class
  "link") keep the exact line rate.
- Ethernet (ps): 5 us per hop, an estimate of one kernel-TCP hop on 25-100 GbE; calibrate
  it (``parsim calibrate``) for a real cluster.
- PCIe 4.0 x16: 16 GT/s x 16 lanes x 128/130 / 8 = 31.5 GB/s per direction (PCI-SIG
  PCIe 4.0 base specification); 1 us per hop (tuning.cc ``hwLat`` PCI ring LL: 1.0 us).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import networkx as nx

Router = Callable[[str, str], "tuple[str, ...] | None"]
REQUIRED = object()  # marks a key without a default


@dataclass(frozen=True)
class Built:
    """What a builder returns; :func:`parsim.topology.build_cluster` wraps it in a Cluster."""
    graph: nx.DiGraph
    devices: tuple[str, ...]
    servers: tuple[str, ...]
    gpus_per_node: int
    router: Router


class BadValue(Exception):
    """A value that breaks a rule between keys; topology.py adds file and key path."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


# ----------------------------------------------------------------------------- helpers
class _Graph:
    """Collects nodes and links, then makes the DiGraph in two bulk calls (fast)."""

    def __init__(self):
        self.nodes: list = []
        self.edges: list = []
        self._attrs: dict = {}  # one template dict per attribute set; networkx copies it

    def node(self, name: str, kind: str, host: int) -> str:
        attrs = self._attrs.get((kind, host)) or self._attrs.setdefault(
            (kind, host), {"kind": kind, "host": host})
        self.nodes.append((name, attrs))
        return name

    def link(self, a: str, b: str, bw_Bps: float, latency_s: float, kind: str) -> None:
        """One edge each way (a link is full duplex: bw_Bps in each direction)."""
        key = (bw_Bps, latency_s, kind)
        attrs = self._attrs.get(key) or self._attrs.setdefault(
            key, {"bw_Bps": bw_Bps, "latency_s": latency_s, "kind": kind})
        self.edges.append((a, b, attrs))
        self.edges.append((b, a, attrs))

    def graph(self) -> nx.DiGraph:
        g = nx.DiGraph()
        g.add_nodes_from(self.nodes)
        g.add_edges_from(self.edges)
        return g


def _tree_router(parent: dict[str, str]) -> Router:
    """Route on a tree: climb from both ends to the lowest common ancestor."""
    def chain(x):
        out = [x]
        while out[-1] in parent:
            out.append(parent[out[-1]])
        return out

    def route(src, dst):
        up, down = chain(src), chain(dst)
        if up[-1] != down[-1]:
            return None
        on_down = {n: i for i, n in enumerate(down)}
        for i, n in enumerate(up):
            if n in on_down:
                return tuple(up[: i + 1]) + tuple(reversed(down[: on_down[n]]))
        return None
    return route


def flat_size(p: dict) -> tuple[int, int]:
    """(devices, gpus_per_node) of a flat kind from gpus, or nodes x gpus_per_node.

    ``gpus_per_node`` only groups devices into hosts (``host_of``); it adds no links.
    It defaults to 1 with ``gpus`` and to 8 with ``nodes`` (as parsim.scenario counts).
    """
    gpn = p.get("gpus_per_node")
    if p.get("gpus") is not None:
        n, gpn = p["gpus"], gpn or 1
        if p.get("nodes") is not None and p["nodes"] * gpn != n:
            raise BadValue("gpus", f"{n} differs from nodes x gpus_per_node = {p['nodes'] * gpn}")
    elif p.get("nodes") is not None:
        gpn = gpn or 8
        n = p["nodes"] * gpn
    else:
        raise BadValue("gpus", "missing: give gpus (or nodes and gpus_per_node)")
    if n % gpn:
        raise BadValue("gpus_per_node", f"{gpn} must divide gpus = {n}")
    return n, gpn


# ----------------------------------------------------------------------------- ring
def build_ring(p: dict) -> Built:
    """Devices g0..g(n-1), each joined to its two neighbours (one edge per direction).

    Routing takes the shorter way round, clockwise (increasing index) on a tie, so a
    ring all-reduce step (every rank to its right neighbour) uses n disjoint edges and
    costs a + chunk/B: in all 2(n-1)a + 2(n-1)/n S/B (Thakur et al. 2005).
    """
    n, gpn = flat_size(p)
    gb = _Graph()
    names = [gb.node(f"g{i}", "device", i // gpn) for i in range(n)]
    for i in range(n if n > 2 else n - 1):  # n = 2: one neighbour; n = 1: none
        gb.link(names[i], names[(i + 1) % n], p["link_bandwidth"], p["link_latency"], "link")
    index = {x: i for i, x in enumerate(names)}

    def route(src, dst):
        i, j = index.get(src), index.get(dst)
        if i is None or j is None:
            return None
        step = 1 if (j - i) % n <= (i - j) % n else -1
        hops = (j - i) % n if step == 1 else (i - j) % n
        return tuple(names[(i + step * h) % n] for h in range(hops + 1))
    return Built(gb.graph(), tuple(names), (), gpn, route)


# ----------------------------------------------------------------------------- switch
def build_switch(p: dict) -> Built:
    """Devices g0..g(n-1) on one switch ``sw``, one link each way per device.

    ``link_latency`` is per hop, so device to device pays 2 hops: 2 x link_latency.
    """
    n, gpn = flat_size(p)
    gb = _Graph()
    gb.node("sw", "switch", -1)
    names = [gb.node(f"g{i}", "device", i // gpn) for i in range(n)]
    for x in names:
        gb.link(x, "sw", p["link_bandwidth"], p["link_latency"], "link")
    return Built(gb.graph(), tuple(names), (), gpn, _tree_router({x: "sw" for x in names}))


# ----------------------------------------------------------------------------- fat tree
def build_fat_tree(p: dict) -> Built:
    """k-ary fat tree (Al-Fares, Loukissas, Vahdat, SIGCOMM 2008, doi:10.1145/1402958.1402967).

    k pods of k/2 edge (``p{pod}.e{i}``) and k/2 aggregation (``p{pod}.a{i}``) switches,
    (k/2)^2 cores (``c{i}.{j}``; core (i, j) joins aggregation switch i of every pod), k/2
    hosts ``h{n}`` per edge switch: k^3/4 hosts at most. ``oversubscription`` o is the ratio
    of down to up bandwidth at an edge switch: edge-aggregation links carry
    link_bandwidth / o. Only pods holding devices are built. Routing is destination-mod-k:
    towards host d (edge e, port i of its pod) go up through aggregation i and core (i, e),
    so every downward link serves one destination.
    """
    k = p.get("k")
    if p.get("gpus") is None and p.get("nodes") is None:
        if k is None:
            raise BadValue("k", "missing: give k (the switch radix) or gpus")
        p = {**p, "gpus": k ** 3 // 4}
    n, gpn = flat_size(p)
    k = _min_k(n) if k is None else k
    if k % 2:
        raise BadValue("k", f"{k} must be even (k-ary fat tree, Al-Fares et al. 2008)")
    if n > k ** 3 // 4:
        raise BadValue("gpus", f"{n} devices exceed the k = {k} fat tree's k^3/4 = "
                               f"{k ** 3 // 4} hosts; raise k to {_min_k(n)}")
    half, bw, lat = k // 2, p["link_bandwidth"], p["link_latency"]
    up_bw = bw / p["oversubscription"]
    gb = _Graph()
    pods = -(-n // (half * half))
    for i in range(half):
        for j in range(half):
            gb.node(f"c{i}.{j}", "switch", -1)
    for pod in range(pods):
        for i in range(half):
            gb.node(f"p{pod}.e{i}", "switch", -1)
            gb.node(f"p{pod}.a{i}", "switch", -1)
        for e in range(half):
            for a in range(half):
                gb.link(f"p{pod}.e{e}", f"p{pod}.a{a}", up_bw, lat, "link")
        for a in range(half):
            for j in range(half):
                gb.link(f"p{pod}.a{a}", f"c{a}.{j}", bw, lat, "link")
    names = []
    for h in range(n):
        names.append(gb.node(f"h{h}", "device", h // gpn))
        gb.link(names[-1], f"p{h // (half * half)}.e{(h // half) % half}", bw, lat, "link")
    index = {x: i for i, x in enumerate(names)}

    def route(src, dst):
        s, d = index.get(src), index.get(dst)
        if s is None or d is None:
            return None
        (sp, se), (dp, de, di) = divmod(s // half, half), (*divmod(d // half, half), d % half)
        if (sp, se) == (dp, de):
            return (src, f"p{sp}.e{se}", dst)
        if sp == dp:
            return (src, f"p{sp}.e{se}", f"p{sp}.a{di}", f"p{dp}.e{de}", dst)
        return (src, f"p{sp}.e{se}", f"p{sp}.a{di}", f"c{di}.{de}", f"p{dp}.a{di}",
                f"p{dp}.e{de}", dst)
    return Built(gb.graph(), tuple(names), (), gpn, route)


def _min_k(n: int) -> int:
    k = 2
    while k ** 3 // 4 < n:
        k += 2
    return k


# ----------------------------------------------------------------------------- torus
def build_torus2d(p: dict) -> Built:
    """x-by-y torus of devices ``t{i}.{j}`` with wrap-around links, dimension-order routing.

    A packet first moves along x, then along y, each the shorter way round (the
    increasing direction on a tie); a dimension of size 2 has one link pair, size 1 none.
    """
    x, y = p["dims"]
    gpn = p.get("gpus_per_node") or 1
    if p.get("gpus") is not None and p["gpus"] != x * y:
        raise BadValue("gpus", f"{p['gpus']} differs from dims {x} x {y} = {x * y}")
    if (x * y) % gpn:
        raise BadValue("gpus_per_node", f"{gpn} must divide {x} x {y} = {x * y} devices")
    gb = _Graph()
    name = [[f"t{i}.{j}" for j in range(y)] for i in range(x)]
    for i in range(x):
        for j in range(y):
            gb.node(name[i][j], "device", (i * y + j) // gpn)
    for i in range(x):
        for j in range(y):
            if x > 2 or (x == 2 and i == 0):
                gb.link(name[i][j], name[(i + 1) % x][j], p["link_bandwidth"], p["link_latency"], "link")
            if y > 2 or (y == 2 and j == 0):
                gb.link(name[i][j], name[i][(j + 1) % y], p["link_bandwidth"], p["link_latency"], "link")
    coord = {name[i][j]: (i, j) for i in range(x) for j in range(y)}

    def walk(a, b, size):
        step = 1 if (b - a) % size <= (a - b) % size else -1
        hops = (b - a) % size if step == 1 else (a - b) % size
        return [(a + step * h) % size for h in range(1, hops + 1)]

    def route(src, dst):
        if src not in coord or dst not in coord:
            return None
        (i, j), (k, m) = coord[src], coord[dst]
        path = [src] + [name[s][j] for s in walk(i, k, x)]
        return tuple(path + [name[k][s] for s in walk(j, m, y)])
    return Built(gb.graph(), tuple(n for row in name for n in row), (), gpn, route)


# ----------------------------------------------------------------------------- DGX
def build_dgx(p: dict) -> Built:
    """DGX servers (NVSwitch inside) on a rail-optimised, non-blocking InfiniBand fat tree.

    Per node: devices ``n{node}.g{i}`` and one switch ``n{node}.nvswitch`` (the NVSwitch
    chips as one node), an NVLink edge each way per GPU at ``nvlink_bandwidth``. Each GPU
    has its own NIC (folded into its edge) to the leaf of its rail in its scalable unit,
    ``su{u}.leaf{rail}``. Every leaf has one uplink per node slot of the SU
    (``su_nodes``, as many up as down: non-blocking), uplink s to ``spine{s}``; a spine
    node stands for all the spine (and core) capacity reached through that uplink. Each
    parallel bundle is one edge with the summed bandwidth, which keeps 16,384 GPUs at
    ~20k nodes and ~100k edges.

    Routes: same node, GPU-NVSwitch-GPU (NVLink); same SU and rail, GPU-leaf-GPU; else
    GPU-leaf-spine-leaf-GPU through ``spine{s}``, s the destination's slot in its SU
    (destination-mod-k). Cross-rail traffic takes the spine (no NCCL PXN hop over NVLink).
    """
    gpn, su_nodes = p["gpus_per_node"], p["su_nodes"]
    nodes = p["nodes"]
    if p.get("gpus") is not None:
        if p["gpus"] % gpn:
            raise BadValue("gpus", f"{p['gpus']} is not a multiple of gpus_per_node = {gpn}")
        if nodes is not None and nodes * gpn != p["gpus"]:
            raise BadValue("gpus", f"{p['gpus']} differs from nodes x gpus_per_node = {nodes * gpn}")
        nodes = p["gpus"] // gpn
    nodes = nodes or 1
    nv_bw, nv_lat = p["nvlink_bandwidth"] * p["nvlink_efficiency"], p["nvlink_latency"]
    nic_bw = p["nic_bandwidth"] * p["nic_efficiency"]
    nic_lat, sw_lat = p["nic_latency"], p["switch_latency"]
    gb = _Graph()
    units = -(-nodes // su_nodes)
    spines = [gb.node(f"spine{s}", "switch", -1) for s in range(su_nodes)]
    leaf = [[gb.node(f"su{u}.leaf{r}", "switch", -1) for r in range(gpn)] for u in range(units)]
    for row in leaf:
        for lf in row:
            for sp in spines:
                gb.link(lf, sp, nic_bw, sw_lat, "ib")
    names, info = [], {}
    for n in range(nodes):
        nvs = gb.node(f"n{n}.nvswitch", "switch", -1)
        u, slot = divmod(n, su_nodes)
        for r in range(gpn):
            d = gb.node(f"n{n}.g{r}", "device", n)
            gb.link(d, nvs, nv_bw, nv_lat, "nvlink")
            gb.link(d, leaf[u][r], nic_bw, nic_lat, "ib")
            names.append(d)
            info[d] = (n, nvs, leaf[u][r], u, r, slot)

    def route(src, dst):
        a, b = info.get(src), info.get(dst)
        if a is None or b is None:
            return None
        if a[0] == b[0]:
            return (src, a[1], dst)
        if a[3] == b[3] and a[4] == b[4]:
            return (src, a[2], dst)
        return (src, a[2], spines[b[5]], b[2], dst)
    return Built(gb.graph(), tuple(names), (), gpn, route)


# ----------------------------------------------------------------------------- PS
def build_ps(p: dict) -> Built:
    """Parameter-server cluster: worker hosts and server hosts on one Ethernet switch.

    Worker ``w{n}`` (kind host) holds ``gpus_per_node`` devices ``w{n}.g{i}``, each on an
    intra-node link (``intra_link``: "pcie" or "nvlink", star through the host, so GPU to
    GPU inside a worker is 2 hops). Servers ``ps{j}`` (kind host, host index nodes + j) and
    workers each have one NIC to switch ``eth``: ``nic_bandwidth`` for workers,
    ``server_bandwidth`` for servers, ``link_latency`` per Ethernet hop. A worker GPU to a
    server is GPU-w-eth-ps: the server NIC is where incast queues (Li et al., OSDI 2014).
    """
    workers = p.get("workers")
    if workers is not None and p.get("nodes") is not None and workers != p["nodes"]:
        raise BadValue("workers", f"{workers} differs from nodes = {p['nodes']}; give one")
    nodes = workers if workers is not None else p.get("nodes")
    gpn = p["gpus_per_node"]
    if p.get("gpus") is not None:
        if nodes is not None and nodes * gpn != p["gpus"]:
            raise BadValue("gpus", f"{p['gpus']} differs from nodes x gpus_per_node = {nodes * gpn}")
        if p["gpus"] % gpn:
            raise BadValue("gpus", f"{p['gpus']} is not a multiple of gpus_per_node = {gpn}")
        nodes = p["gpus"] // gpn
    if nodes is None:
        raise BadValue("nodes", "missing: give nodes (the worker count) or gpus")
    server_bw = p["server_bandwidth"] or p["nic_bandwidth"]
    gb = _Graph()
    gb.node("eth", "switch", -1)
    parent, names = {}, []
    for n in range(nodes):
        w = gb.node(f"w{n}", "host", n)
        gb.link(w, "eth", p["nic_bandwidth"], p["link_latency"], "ethernet")
        parent[w] = "eth"
        for i in range(gpn):
            d = gb.node(f"w{n}.g{i}", "device", n)
            gb.link(d, w, p["intra_bandwidth"], p["intra_latency"], p["intra_link"])
            parent[d] = w
            names.append(d)
    servers = []
    for j in range(p["servers"]):
        s = gb.node(f"ps{j}", "host", nodes + j)
        gb.link(s, "eth", server_bw, p["link_latency"], "ethernet")
        parent[s] = "eth"
        servers.append(s)
    return Built(gb.graph(), tuple(names), tuple(servers), gpn, _tree_router(parent))


# ----------------------------------------------------------------------------- key specs
_FLAT = {"gpus": ("int", None), "nodes": ("int", None), "gpus_per_node": ("int", None),
         "link_bandwidth": ("bandwidth", REQUIRED), "link_latency": ("time", REQUIRED)}
_DGX = {"nodes": ("int", None), "gpus": ("int", None), "gpus_per_node": ("int", 8),
        "nvlink_latency": ("time", "1 us"), "nic_latency": ("time", "2 us"),
        "switch_latency": ("time", "0.5 us")}

#: kind -> (builder, {key: (value type, default)}); default None means optional,
#: REQUIRED means the key must be given. Value types are parsed by parsim.topology.
KINDS: dict[str, tuple[Callable[[dict], Built], dict]] = {
    "ring": (build_ring, dict(_FLAT)),
    "switch": (build_switch, dict(_FLAT)),
    "fat_tree": (build_fat_tree, {**_FLAT, "k": ("int", None),
                                  "oversubscription": ("ratio", 1.0)}),
    "torus2d": (build_torus2d, {"dims": ("dims", REQUIRED), "gpus": ("int", None),
                                "gpus_per_node": ("int", None),
                                "link_bandwidth": ("bandwidth", REQUIRED),
                                "link_latency": ("time", REQUIRED)}),
    "dgx-a100": (build_dgx, {**_DGX, "nvlink_bandwidth": ("bandwidth", "300 GB/s"),
                             "nic_bandwidth": ("bandwidth", "200 Gb/s"),
                             "nvlink_efficiency": ("efficiency", 0.77),
                             "nic_efficiency": ("efficiency", 0.96),
                             "su_nodes": ("int", 20)}),
    "dgx-h100": (build_dgx, {**_DGX, "nvlink_bandwidth": ("bandwidth", "450 GB/s"),
                             "nic_bandwidth": ("bandwidth", "400 Gb/s"),
                             "nvlink_efficiency": ("efficiency", 1.0),
                             "nic_efficiency": ("efficiency", 0.96),
                             "su_nodes": ("int", 32)}),
    "ps": (build_ps, {"nodes": ("int", None), "workers": ("int", None), "gpus": ("int", None),
                      "gpus_per_node": ("int", 8), "servers": ("int", 1),
                      "nic_bandwidth": ("bandwidth", "100 Gb/s"),
                      "server_bandwidth": ("bandwidth", None),
                      "link_latency": ("time", "5 us"),
                      "intra_link": ("choice:pcie,nvlink", "pcie"),
                      "intra_bandwidth": ("bandwidth", "31.5 GB/s"),
                      "intra_latency": ("time", "1 us")}),
}
