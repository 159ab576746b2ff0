"""Cluster description → ``networkx.DiGraph`` of devices, switches and links; routing.

:func:`build_cluster` turns a scenario's ``[cluster]`` table into a :class:`Cluster`.
``topology`` names, in this order of lookup:

1. a path to a TOML file (it ends in ``.toml`` or holds a ``/``), relative to the
   scenario file's folder, then to the working directory;
2. a file ``topologies/NAME.toml`` at the repository root (beside ``parsim/``), beside
   the scenario's folder, or under the working directory;
3. a built-in kind: ``ring``, ``switch``, ``fat_tree``, ``torus2d``, ``dgx-a100``,
   ``dgx-h100``, ``ps`` (keys, defaults and sources in :mod:`parsim.topologies_builtin`).

``topologies/dgx-a100.toml`` and ``dgx-h100.toml`` repeat the built-in defaults, so
when the folder is not installed the built-in kind of the same name gives the same
cluster. Keys the topology does not own and ignores: ``gpu``, ``profile``,
``price_per_gpu_hour``, ``cpu``. Any other unknown key is an error.

Graph (one edge per direction; a full-duplex link is two edges):

- node attributes, exactly: ``kind`` in {"device", "switch", "host"}; ``host``, the
  server (machine) index, -1 for switches.
- edge attributes, exactly: ``bw_Bps`` (bytes/s, this direction), ``latency_s`` (per
  hop), ``kind`` (link class: "nvlink", "pcie", "ib", "ethernet", "link").

Routes are deterministic. Built-in shapes route by their structure in O(path length)
(up to the lowest common switch, parallel paths chosen by destination index); other
graphs take the fewest hops, breadth first with neighbours in sorted name order, one
search per source, cached. Bundles of parallel links are one edge with the summed
bandwidth. Latency adds per hop; a flow's bandwidth is its route's narrowest edge,
shared max-min fairly with the other flows on each edge.

Topology file formats. A *parameterised* file names a built-in kind and default values;
the scenario's ``[cluster]`` keys override them, and when the table gives any size key
(``nodes``, ``workers``, ``gpus``, ``dims``, ``k``) the file's size keys are dropped::

    kind = "dgx-h100"
    nodes = 4
    nic_bandwidth = "400 Gb/s"

An *explicit* file lists nodes and links; devices take ranks in file order::

    name = "two-node-pcie"        # optional
    gpus_per_node = 2             # optional; default: most devices on one host
    servers = []                  # optional: names of parameter-server host nodes
    [[nodes]]
    name = "n0.g0"
    kind = "device"               # device | switch | host
    host = 0                      # machine index; -1 (the default) for switches
    [[links]]
    a = "n0.g0"
    b = "n0.pcie"
    bandwidth = "31.5 GB/s"       # each direction
    latency = "1 us"              # per hop
    kind = "pcie"                 # nvlink | pcie | ib | ethernet | link (default)
    bidirectional = true          # default; false adds only the a -> b edge

>>> c = build_cluster({"topology": "ring", "gpus": 4, "link_bandwidth": "100 GB/s",
...                    "link_latency": "5 us"})
>>> c.route("g0", "g1")
(('g0', 'g1'),)
>>> c.concurrent_rate_Bps([("g0", "g1"), ("g1", "g2"), ("g2", "g3"), ("g3", "g0")])
100000000000.0
"""
from __future__ import annotations

import math
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np

from .atomic import write_via
from .errors import ParsimError, ScenarioError, did_you_mean, one_of
from .maxmin import max_min_rates
from .topologies_builtin import KINDS, REQUIRED, BadValue, Router
from .units import parse_bandwidth, parse_time

IGNORED_KEYS = frozenset({"gpu", "profile", "price_per_gpu_hour", "cpu"})
SIZE_KEYS = frozenset({"nodes", "workers", "gpus", "dims", "k"})
NODE_KINDS = ("device", "switch", "host")
LINK_KINDS = ("nvlink", "pcie", "ib", "ethernet", "link")
TOPOLOGY_DIR = Path(__file__).resolve().parent.parent / "topologies"
_CACHE_MAX = 1 << 20  # routes kept before the cache is cleared


@dataclass(frozen=True, eq=False)
class Cluster:
    """A cluster graph with cached, deterministic routing (see the module docstring)."""
    name: str
    graph: nx.DiGraph
    devices: tuple[str, ...]
    servers: tuple[str, ...] = ()
    gpus_per_node: int = 1
    router: Router | None = field(default=None, repr=False)
    _routes: dict = field(default_factory=dict, init=False, repr=False)
    _trees: dict = field(default_factory=dict, init=False, repr=False)

    def route(self, src: str, dst: str) -> tuple[tuple[str, str], ...]:
        """Edges from ``src`` to ``dst`` (``()`` when equal); deterministic and cached."""
        key = (src, dst)
        edges = self._routes.get(key)
        if edges is None:
            for x in key:
                if x not in self.graph:
                    raise KeyError(f"node {x!r} is not in cluster {self.name!r}")
            path = (src,) if src == dst else (self.router and self.router(src, dst)) \
                or self._search(src, dst)
            edges = tuple(zip(path, path[1:]))
            if len(self._routes) >= _CACHE_MAX:
                self._routes.clear()
            self._routes[key] = edges
        return edges

    def latency_s(self, src: str, dst: str) -> float:
        """Sum of the per-hop latencies on the route, in seconds (0 when src == dst)."""
        adj = self.graph.adj
        return sum(adj[u][v]["latency_s"] for u, v in self.route(src, dst))

    def bottleneck_Bps(self, src: str, dst: str) -> float:
        """Narrowest edge bandwidth on the route in bytes/s (``math.inf`` when src == dst)."""
        adj = self.graph.adj
        return min((adj[u][v]["bw_Bps"] for u, v in self.route(src, dst)), default=math.inf)

    def concurrent_rate_Bps(self, pairs) -> float:
        """The slowest flow's max-min fair rate when all ``(src, dst)`` pairs send at once.

        Under max-min fairness the slowest rate is min over edges e of B_e / n_e, with
        n_e the flows crossing e (the first edge progressive filling saturates; Bertsekas
        and Gallager, *Data Networks*, 2nd ed. 1992, sec. 6.5.2), so one count per edge
        suffices: O(total route length). ``math.inf`` when no flow crosses an edge.
        """
        count = Counter(e for s, d in pairs for e in self.route(s, d))
        adj = self.graph.adj
        return min((adj[u][v]["bw_Bps"] / n for (u, v), n in count.items()), default=math.inf)

    def fair_rates_Bps(self, pairs) -> list[float]:
        """Max-min fair rate of every flow (progressive filling, :mod:`parsim.maxmin`), in
        the order given; ``math.inf`` for a flow that crosses no edge."""
        adj = self.graph.adj
        routes = [self.route(s, d) for s, d in pairs]
        index = {}
        edge_of = [index.setdefault(e, len(index)) for r in routes for e in r]
        flow_of = [i for i, r in enumerate(routes) for _ in r]
        cap = [adj[u][v]["bw_Bps"] for u, v in index]
        return max_min_rates(flow_of, edge_of, np.ones(len(edge_of)), cap, len(routes)).tolist()

    def host_of(self, rank: int) -> int:
        """Server (machine) index holding device ``rank``."""
        return self.graph.nodes[self.devices[rank]]["host"]

    def _search(self, src: str, dst: str) -> tuple[str, ...]:
        """Fewest hops, neighbours in sorted order; one BFS tree per source, cached."""
        pred = self._trees.get(src)
        if pred is None:
            pred, frontier = {src: None}, [src]
            while frontier:
                nxt = []
                for u in frontier:
                    for v in sorted(self.graph.successors(u)):
                        if v not in pred:
                            pred[v] = u
                            nxt.append(v)
                frontier = nxt
            if len(self._trees) >= 256:
                self._trees.clear()
            self._trees[src] = pred
        if dst not in pred:
            raise ScenarioError(f"no path from {src!r} to {dst!r} in cluster {self.name!r}")
        path = [dst]
        while path[-1] != src:
            path.append(pred[path[-1]])
        return tuple(reversed(path))


# ----------------------------------------------------------------------------- loading
def build_cluster(table: dict, *, file: str | None = None) -> Cluster:
    """Build the :class:`Cluster` a scenario's ``[cluster]`` table describes.

    Raises :class:`~parsim.errors.ScenarioError` naming the file and key (e.g.
    ``cluster.link_bandwidth``) for an unknown topology or key, a wrong type or unit, a
    size the shape cannot hold, or a missing or malformed topology file.
    """
    if not isinstance(table, dict):
        raise ScenarioError("must be a table [cluster]", file=file, key="cluster")
    topo = table.get("topology")
    if not isinstance(topo, str) or not topo:
        raise ScenarioError(f"give topology = {one_of(_choices(file))}, or a .toml file path",
                            file=file, key="cluster.topology")
    given = {k: v for k, v in table.items() if k not in IGNORED_KEYS and k != "topology"}
    origin = {k: (file, f"cluster.{k}") for k in given}
    path = _find_file(topo, file)
    if path is None:
        if topo not in KINDS:
            choices = _choices(file)
            raise ScenarioError(f"unknown topology {topo!r}{did_you_mean(topo, choices)}; "
                                f"{one_of(choices)}, or a path to a .toml file",
                                file=file, key="cluster.topology")
        return _from_kind(topo, topo, given, origin, file)
    doc = _read_toml(path)
    if "kind" in doc:
        kind = doc["kind"]
        if kind not in KINDS:
            raise ScenarioError(f"unknown kind {kind!r}{did_you_mean(kind, KINDS)}; "
                                f"{one_of(KINDS)}", file=str(path), key="kind")
        defaults = {k: v for k, v in doc.items() if k not in ("kind", "name", "description")}
        if SIZE_KEYS & set(given):  # the scenario sizes the cluster: drop the file's size
            defaults = {k: v for k, v in defaults.items() if k not in SIZE_KEYS}
        origin = {**{k: (str(path), k) for k in defaults}, **origin}
        return _from_kind(kind, doc.get("name", path.stem), {**defaults, **given}, origin, file)
    if given:
        k = sorted(given)[0]
        raise ScenarioError(f"{path.name} lists every node and link, so the cluster takes "
                            f"no key {k!r}; remove it", file=file, key=f"cluster.{k}")
    return _from_explicit(doc, path)


def _from_kind(kind, name, values, origin, file) -> Cluster:
    spec = KINDS[kind][1]
    p = {}
    for k, raw in values.items():
        if k not in spec:
            f, key = origin[k]
            raise ScenarioError(f"unknown key for topology {kind!r}{did_you_mean(k, spec)}; "
                                f"{one_of(sorted(spec))}", file=f, key=key)
        p[k] = _parse(spec[k][0], raw, *origin[k])
    for k, (vtype, default) in spec.items():
        if k in p:
            continue
        if default is REQUIRED:
            raise ScenarioError(f"missing; topology {kind!r} needs it", file=file, key=f"cluster.{k}")
        p[k] = None if default is None else _parse(vtype, default, file, f"cluster.{k}")
    try:
        built = KINDS[kind][0](p)
    except BadValue as err:
        f, key = origin.get(err.key, (file, f"cluster.{err.key}"))
        raise ScenarioError(str(err), file=f, key=key) from err
    return Cluster(name, built.graph, built.devices, built.servers, built.gpus_per_node,
                   built.router)


def _parse(vtype: str, raw, file, key):
    """One raw TOML value → SI value, or a ScenarioError naming file and key."""
    def bad(what):
        return ScenarioError(f"{raw!r} is not {what}", file=file, key=key)
    if vtype in ("bandwidth", "time"):
        try:
            value = (parse_bandwidth if vtype == "bandwidth" else parse_time)(raw)
        except ParsimError as err:
            raise ScenarioError(err.detail, file=file, key=key) from err
        if vtype == "bandwidth" and value <= 0:
            raise bad('a positive bandwidth, e.g. "100 GB/s"')
        return value
    if vtype == "int":
        if not isinstance(raw, int) or isinstance(raw, bool) or raw < 1:
            raise bad("a positive integer")
        return raw
    if vtype == "ratio":
        if not isinstance(raw, (int, float)) or isinstance(raw, bool) or not 0 < raw < math.inf:
            raise bad("a positive number (down:up bandwidth, e.g. 1, 2 or 3)")
        return float(raw)
    if vtype == "efficiency":
        if not isinstance(raw, (int, float)) or isinstance(raw, bool) or not 0 < raw <= 1:
            raise bad("an efficiency in (0, 1], e.g. 0.77")
        return float(raw)
    if vtype == "dims":
        if not (isinstance(raw, list) and len(raw) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in raw)):
            raise bad("two positive integers, e.g. [4, 4]")
        return tuple(raw)
    options = vtype.split(":", 1)[1].split(",")
    if raw not in options:
        raise ScenarioError(f"{raw!r}{did_you_mean(raw, options)}; {one_of(options)}",
                            file=file, key=key)
    return raw


def _search_dirs(file) -> list[Path]:
    dirs = [TOPOLOGY_DIR]
    if file:
        dirs.append(Path(file).resolve().parent.parent / "topologies")
    dirs.append(Path.cwd() / "topologies")
    out = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in out:
            out.append(d.resolve())
    return out


def _choices(file) -> list[str]:
    stems = {p.stem for d in _search_dirs(file) for p in d.glob("*.toml")}
    return sorted(set(KINDS) | stems)


def _find_file(topo: str, file) -> Path | None:
    if topo.endswith(".toml") or "/" in topo or "\\" in topo:
        p = Path(topo).expanduser()
        tried = ([Path(file).parent / p] if file and not p.is_absolute() else []) + [p]
        for c in tried:
            if c.is_file():
                return c
        raise ScenarioError(f"topology file {topo!r} not found (looked at "
                            f"{', '.join(str(c) for c in tried)})", file=file, key="cluster.topology")
    for d in _search_dirs(file):
        if (d / f"{topo}.toml").is_file():
            return d / f"{topo}.toml"
    return None


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"not valid TOML: {err}", file=str(path)) from err
    except OSError as err:
        raise ScenarioError(f"cannot read: {err.strerror}", file=str(path)) from err


_FILE_KEYS = ("name", "description", "gpus_per_node", "servers", "nodes", "links")
_NODE_KEYS = ("name", "kind", "host")
_LINK_KEYS = ("a", "b", "bandwidth", "latency", "kind", "bidirectional")


def _check_keys(table, allowed, file, prefix):
    if not isinstance(table, dict):
        raise ScenarioError("must be a table", file=file, key=prefix.rstrip("."))
    for k in table:
        if k not in allowed:
            raise ScenarioError(f"unknown key{did_you_mean(k, allowed)}; {one_of(allowed)}",
                                file=file, key=f"{prefix}{k}")


def _from_explicit(doc: dict, path: Path) -> Cluster:
    """An explicit ``[[nodes]]`` / ``[[links]]`` file (format in the module docstring)."""
    f = str(path)
    _check_keys(doc, _FILE_KEYS, f, "")
    if not isinstance(doc.get("nodes"), list) or not doc["nodes"]:
        raise ScenarioError("missing; list [[nodes]] (or give kind = a built-in)", file=f, key="nodes")
    g = nx.DiGraph()
    devices = []
    for i, nd in enumerate(doc["nodes"]):
        _check_keys(nd, _NODE_KEYS, f, f"nodes[{i}].")
        name, kind, host = nd.get("name"), nd.get("kind"), nd.get("host", -1)
        if not isinstance(name, str) or not name or name in g:
            raise ScenarioError(f"{name!r}: need a unique, non-empty name", file=f, key=f"nodes[{i}].name")
        if kind not in NODE_KINDS:
            raise ScenarioError(f"{kind!r}{did_you_mean(kind, NODE_KINDS)}; {one_of(NODE_KINDS)}",
                                file=f, key=f"nodes[{i}].kind")
        if not isinstance(host, int) or isinstance(host, bool) or host < -1 \
                or (kind == "switch") != (host == -1):
            raise ScenarioError(f"{host!r}: a switch has host = -1, a {kind} a machine index >= 0",
                                file=f, key=f"nodes[{i}].host")
        g.add_node(name, kind=kind, host=host)
        if kind == "device":
            devices.append(name)
    for i, ln in enumerate(doc.get("links", [])):
        _check_keys(ln, _LINK_KEYS, f, f"links[{i}].")
        ends = [ln.get("a"), ln.get("b")]
        for end, x in zip("ab", ends):
            if x not in g:
                raise ScenarioError(f"{x!r} is not a node{did_you_mean(x, g)}", file=f,
                                    key=f"links[{i}].{end}")
        for k in ("bandwidth", "latency"):
            if k not in ln:
                raise ScenarioError("missing", file=f, key=f"links[{i}].{k}")
        attrs = {"bw_Bps": _parse("bandwidth", ln["bandwidth"], f, f"links[{i}].bandwidth"),
                 "latency_s": _parse("time", ln["latency"], f, f"links[{i}].latency"),
                 "kind": _parse("choice:" + ",".join(LINK_KINDS), ln.get("kind", "link"), f,
                                f"links[{i}].kind")}
        both = ln.get("bidirectional", True)
        if not isinstance(both, bool):
            raise ScenarioError(f"{both!r} is not true or false", file=f, key=f"links[{i}].bidirectional")
        for u, v in [tuple(ends)] + ([tuple(reversed(ends))] if both else []):
            if g.has_edge(u, v):
                raise ScenarioError(f"a second link {u} -> {v}; give one link with the summed "
                                    "bandwidth", file=f, key=f"links[{i}]")
            g.add_edge(u, v, **attrs)
    servers = doc.get("servers", [])
    if not isinstance(servers, list) or any(g.nodes.get(s, {}).get("kind") != "host" for s in servers):
        raise ScenarioError(f"{servers!r}: must list names of host nodes", file=f, key="servers")
    ends = devices + list(servers)
    if not devices:
        raise ScenarioError("no node of kind 'device'", file=f, key="nodes")
    reach = nx.descendants(g, ends[0]) | {ends[0]}
    lost = [x for x in ends if x not in reach or ends[0] not in nx.descendants(g, x) | {x}]
    if lost:
        raise ScenarioError(f"{lost[0]!r} and {ends[0]!r} cannot reach each other; add links",
                            file=f, key="links")
    per_host = Counter(g.nodes[d]["host"] for d in devices)
    gpn = doc.get("gpus_per_node", max(per_host.values()))
    if not isinstance(gpn, int) or isinstance(gpn, bool) or gpn < 1:
        raise ScenarioError(f"{gpn!r} is not a positive integer", file=f, key="gpus_per_node")
    return Cluster(doc.get("name", path.stem), g, tuple(devices), tuple(servers), gpn)


# ----------------------------------------------------------------------------- summary
def _fmt_bw(bw_Bps: float) -> str:
    if bw_Bps == math.inf:
        return "unlimited"
    for scale, unit in ((1e12, "TB/s"), (1e9, "GB/s"), (1e6, "MB/s")):
        if bw_Bps >= scale:
            return f"{bw_Bps / scale:.4g} {unit}"
    return f"{bw_Bps:.4g} B/s"


def _fmt_s(t_s: float) -> str:
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if t_s >= scale:
            return f"{t_s / scale:.4g} {unit}"
    return f"{t_s / 1e-9:.4g} ns"


def summarize(cluster: Cluster) -> str:
    """Text summary for ``parsim topo``: node counts, links by class, sample paths, bisection.

    The bisection figure sends rank i to rank i + n/2 for every i < n/2 at once and
    reports the slowest flow's max-min fair rate and n/2 times it.
    """
    g, devs = cluster.graph, cluster.devices
    kinds = Counter(k for _, k in g.nodes(data="kind"))
    machines = len({g.nodes[d]["host"] for d in devs})
    lines = [f"cluster {cluster.name}: {len(devs)} devices on {machines} machines "
             f"({cluster.gpus_per_node} per node), {kinds['switch']} switches, "
             f"{kinds['host']} host nodes" + (f" ({len(cluster.servers)} parameter servers)"
                                              if cluster.servers else ""),
             "links (edges, one per direction):"]
    groups = Counter((d["kind"], d["bw_Bps"], d["latency_s"]) for _, _, d in g.edges(data=True))
    for (kind, bw, lat), n in sorted(groups.items()):
        lines.append(f"  {kind:<9}{n:>8} x {_fmt_bw(bw):>11}, {_fmt_s(lat)} per hop")
    samples = [(1, "neighbour")] if len(devs) > 1 else []
    if cluster.gpus_per_node > 1 and len(devs) > cluster.gpus_per_node:
        samples.append((cluster.gpus_per_node, "first rank of the next node"))
    if len(devs) > 2:
        samples.append((len(devs) - 1, "last rank"))
    lines.append("paths from rank 0:")
    ends = [(devs[j], f"rank {j} ({label})") for j, label in samples]
    ends += [(s, f"server {s}") for s in cluster.servers[:1]]
    for dst, label in ends:
        lines.append(f"  to {label}: {len(cluster.route(devs[0], dst))} hops, "
                     f"{_fmt_s(cluster.latency_s(devs[0], dst))}, "
                     f"{_fmt_bw(cluster.bottleneck_Bps(devs[0], dst))}")
    half = len(devs) // 2
    if half:
        rate = cluster.concurrent_rate_Bps((devs[i], devs[i + half]) for i in range(half))
        lines.append(f"bisection (rank i -> i + {half} for all i < {half} at once): "
                     f"{_fmt_bw(rate)} per flow, {_fmt_bw(rate * half)} in all")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- drawing
def _natural(name: str):
    import re
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _draw_subgraph(cluster: Cluster, max_devices: int) -> tuple[nx.Graph, int]:
    """Whole graph when small, else the first machines' devices and every route between them."""
    g = cluster.graph
    if g.number_of_nodes() <= 80:
        return g.to_undirected(as_view=True), len(cluster.devices)
    shown = [d for d in cluster.devices if cluster.graph.nodes[d]["host"] <= 1][:max_devices] \
        or list(cluster.devices[:max_devices])
    ends = shown + list(cluster.servers[:2])
    keep = set(ends)
    for a in ends:
        for b in ends:
            keep.update(x for e in cluster.route(a, b) for x in e)
    return g.subgraph(keep).to_undirected(as_view=True), len(shown)


def draw(cluster: Cluster, path_png, *, max_devices: int = 16) -> None:
    """Draw the cluster to a PNG (atomically). Big clusters show the first two machines'
    devices (at most ``max_devices``) and every switch on the routes between them.

    Devices are squares, switches circles, hosts diamonds; layers go up by hop distance
    from the devices; edge colour is the link class, width grows with bandwidth.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    sub, shown = _draw_subgraph(cluster, max_devices)
    devs = [n for n in sub if sub.nodes[n]["kind"] == "device"]
    layer = nx.multi_source_dijkstra_path_length(sub, devs, weight=None)
    if all(layer.get(n, 0) == 0 for n in sub):      # switchless (ring, torus): a circle
        pos = nx.circular_layout(sorted(sub, key=_natural))
    else:
        pos, by_layer = {}, defaultdict(list)
        for n in sub:
            by_layer[layer.get(n, 0)].append(n)
        for y, names in by_layer.items():
            names.sort(key=_natural)
            for i, n in enumerate(names):
                pos[n] = ((i + 1) / (len(names) + 1), float(y))
    colors = dict(zip(LINK_KINDS, ("tab:green", "tab:purple", "tab:blue", "tab:orange", "tab:gray")))
    fig = Figure(figsize=(max(8.0, 0.5 * len(devs)), 6.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bws = [d["bw_Bps"] for _, _, d in sub.edges(data=True)] or [1.0]
    lo, hi = math.log10(min(bws)), math.log10(max(bws))
    seen = {}
    for u, v, d in sub.edges(data=True):
        width = 0.8 + 2.5 * ((math.log10(d["bw_Bps"]) - lo) / (hi - lo) if hi > lo else 1.0)
        ax.plot(*zip(pos[u], pos[v]), color=colors[d["kind"]], lw=width, zorder=1)
        seen.setdefault(d["kind"], set()).add(d["bw_Bps"])
    marks = {"device": ("s", "tab:blue"), "switch": ("o", "lightgray"), "host": ("D", "tab:orange")}
    for kind, (m, c) in marks.items():
        pts = [pos[n] for n in sub if sub.nodes[n]["kind"] == kind]
        if pts:
            ax.scatter(*zip(*pts), marker=m, s=160, c=c, edgecolors="black", zorder=2)
    for n, (x, y) in pos.items():
        ax.annotate(n, (x, y), textcoords="offset points", xytext=(0, 9), ha="center", fontsize=6)
    ax.legend(handles=[Line2D([], [], color=colors[k], lw=2, label=f"{k}: " + ", ".join(
        _fmt_bw(b) for b in sorted(seen[k]))) for k in sorted(seen)], loc="best", fontsize=7)
    ax.set_title(f"{cluster.name}: showing {shown} of {len(cluster.devices)} devices, "
                 f"{sub.number_of_nodes()} of {cluster.graph.number_of_nodes()} nodes", fontsize=9)
    ax.set_axis_off()
    write_via(path_png, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
