"""``parsim check FILE``: train a scenario's (small) model serially and under its layout.

The scenario's model, layout and training settings become a
:func:`parsim.numerics.check.run_check` config; the collectives run through the
discrete-event network (:class:`parsim.numerics.des_executor.DesExecutor`) on the
scenario's cluster by default, so one run proves the arithmetic and times the
communication. Exit 0 when the layout computes what one device computes (or is one that
is not meant to: asynchronous parameter server with staleness, ``sync_rule =
"sum_params"``), 1 when a synchronous layout does not, 2 for a scenario it cannot run.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import time

from parsim.errors import ScenarioError

MAX_PARAMS = 5_000_000          # numerics train in float64 numpy on the CPU
MAX_TOKENS_PER_STEP = 65_536    # transformer: global_batch · seq_len


def add_arguments(p) -> None:
    p.add_argument("file", help="scenario .toml (an MLP or a small transformer)")
    p.add_argument("--steps", type=int, metavar="N",
                   help="training steps (default: training.steps)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (non-finite numbers as null)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a key, VALUE in TOML syntax (repeatable)")
    p.add_argument("--executor", choices=("des", "reference"), default="des",
                   help="run collectives through the DES network (default, also times "
                        "them) or the reference executor (apply_steps)")


# ---- scenario -> run_check config ------------------------------------------------------

def mlp_params(sizes) -> int:
    return int(sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:])))


def lm_params(V: int, d: int, L: int, T: int) -> int:
    """Parameters of :mod:`parsim.numerics.transformer`'s GPT-2 style LM (untied head)."""
    return 2 * V * d + T * d + L * (12 * d * d + 13 * d) + 2 * d


def scenario_config(sc, steps: int | None = None) -> tuple[dict, list[str]]:
    """The run_check config for scenario ``sc`` and notes on what was simplified."""
    m, tr, par, file = sc.model, sc.training, sc.parallel, sc.file
    notes: list[str] = []
    if m.kind == "collective":
        raise ScenarioError("parsim check trains a model; this scenario is a bare collective "
                            "(give model.kind = 'mlp' or a small transformer)",
                            file=file, key="model.kind")
    for key, val in (("cp", par.cp), ("ep", par.ep)):
        if val > 1:
            raise ScenarioError(f"parallel.{key} = {val}: parsim check runs dp, tp, pp (vpp), "
                                f"ZeRO and parameter-server layouts; set parallel.{key} = 1",
                                file=file, key=f"parallel.{key}")
    limit = f"numerics run on small models (at most {MAX_PARAMS:,} parameters)"
    if m.kind == "mlp":
        n = mlp_params(m.sizes)
        if n > MAX_PARAMS:
            raise ScenarioError(f"MLP {'-'.join(map(str, m.sizes))} has {n:,} parameters; "
                                f"{limit}", file=file, key="model.sizes")
        model = {"model": "mlp", "sizes": tuple(m.sizes)}
    else:
        n = lm_params(m.vocab, m.hidden, m.layers, m.seq_len)
        name = m.name or "transformer"
        if n > MAX_PARAMS:
            raise ScenarioError(f"{name} has about {n:,} parameters; {limit}, e.g. "
                                f"layers = 2, hidden = 64, heads = 4, vocab = 256, "
                                f"seq_len = 32", file=file, key="model")
        if tr.global_batch * m.seq_len > MAX_TOKENS_PER_STEP:
            raise ScenarioError(f"global_batch · seq_len = {tr.global_batch * m.seq_len:,} "
                                f"tokens per step; numerics run at most "
                                f"{MAX_TOKENS_PER_STEP:,}", file=file, key="training.global_batch")
        if m.num_experts > 1:
            raise ScenarioError(f"{m.num_experts} experts: numerics have no MoE layer; set "
                                f"model.num_experts = 1", file=file, key="model.num_experts")
        model = {"model": "lm", "vocab": m.vocab, "d_model": m.hidden, "n_heads": m.heads,
                 "n_layers": m.layers, "seq_len": m.seq_len}
        differs = [k for k, v in (("ffn_hidden", m.ffn_hidden != 4 * m.hidden),
                                  ("kv_heads", m.kv_heads != m.heads),
                                  ("gated_mlp", m.gated_mlp), ("norm", m.norm != "layernorm"),
                                  ("position", m.position != "learned")) if v]
        if differs:
            notes.append(f"numerics use a GPT-2 block (d_ff = 4·hidden, full heads, GELU, "
                         f"layernorm, learned positions); ignored: {', '.join(differs)}")
    algorithm = par.algorithm
    if algorithm in ("auto", "hierarchical"):
        if par.dp > 1 and par.grad_sync == "allreduce":
            notes.append(f"parallel.algorithm = {algorithm!r} runs as 'ring'")
        algorithm = "ring"
    if par.stage_layers:
        notes.append("parallel.stage_layers ignored: stages get contiguous, even splits")
    cfg = dict(model, dp=par.dp, tp=par.tp, pp=par.pp, vpp=par.vpp, schedule=par.schedule,
               zero=par.zero, grad_sync=par.grad_sync, algorithm=algorithm,
               ps_mode=par.ps_mode, staleness=par.staleness, ps_servers=par.ps_servers,
               sync_rule=tr.sync_rule, micro_batch=tr.micro_batch,
               global_batch=tr.global_batch, lr=float(tr.lr), optimizer=tr.optimizer,
               steps=int(steps if steps is not None else tr.steps), seed=tr.seed,
               dtype="float64")
    if cfg["steps"] < 1:
        raise ScenarioError(f"{cfg['steps']}: expected a positive integer", key="--steps")
    return cfg, notes


def expected_exact(cfg) -> bool:
    """Whether the layout must reproduce serial training (synchronous, averaging)."""
    if cfg["sync_rule"] != "average":
        return False
    return not (cfg["grad_sync"] == "ps" and cfg["ps_mode"] == "async" and cfg["staleness"] > 0)


def check_scenario(sc, *, steps=None, executor="des") -> dict:
    """Run the check for a loaded scenario; the run_check result plus scenario, config,
    notes, expected_exact, ok, comm (simulated collectives, DES executor only), wall_s."""
    from parsim.numerics.check import run_check
    cfg, notes = scenario_config(sc, steps)
    des = None
    if executor == "des":
        from parsim.numerics.des_executor import DesExecutor
        from parsim.topology import build_cluster
        des = DesExecutor(build_cluster(sc.cluster, file=sc.file))
    t0 = time.perf_counter()
    r = run_check(cfg, executor=des)
    r["wall_s"] = time.perf_counter() - t0
    r.update(scenario=sc.name, file=sc.file, config=cfg, notes=notes,
             parameters=(mlp_params(cfg["sizes"]) if cfg["model"] == "mlp" else
                         lm_params(cfg["vocab"], cfg["d_model"], cfg["n_layers"],
                                   cfg["seq_len"])),
             expected_exact=expected_exact(cfg), executor=executor)
    r["ok"] = bool(r["exact"]) or not r["expected_exact"]
    if des is not None:
        by: dict[str, dict] = {}
        moved = [rec for rec in des.records if rec["steps"]]     # not 1-rank identities
        sends = [rec for rec in moved if rec["schedule"] == "p2p"]
        colls = [rec for rec in moved if rec["schedule"] != "p2p"]
        for rec in moved:
            key = f"{rec['schedule']} n={rec['n_ranks']}"
            e = by.setdefault(key, {"count": 0, "bytes": 0, "seconds": 0.0})
            e["count"] += 1
            e["bytes"] += rec["bytes"]
            e["seconds"] += rec["seconds"]
        n = cfg["steps"]
        r["comm"] = {
            "cluster": getattr(des.cluster, "name", ""), "total_s": des.total_s,
            "seconds_per_step": des.total_s / n, "collectives": len(colls),
            "collectives_per_step": len(colls) / n, "sends": len(sends),
            "sends_per_step": len(sends) / n,
            "by_schedule": {k: {"count_per_step": v["count"] / n,
                                "bytes_per_step": v["bytes"] / n,
                                "seconds_per_step": v["seconds"] / n} for k, v in by.items()},
        }
        if cfg["tp"] > 1 or (cfg["dp"] > 1 and cfg["pp"] > 1):
            notes.append("collectives placed on the first devices of the cluster (group "
                         "rank i on device i), not on each group's own devices")
    return r


# ---- BLAS threads ------------------------------------------------------------------------

_BLAS_PREFIXES = ("scipy_openblas_", "openblas_")
_BLAS_SUFFIXES = ("64_", "")


def _openblas():
    """(get, set) num-threads functions of the OpenBLAS numpy loaded, or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower()
                            and line.split()[-1].startswith("/")})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for pre in _BLAS_PREFIXES:
            for suf in _BLAS_SUFFIXES:
                get = getattr(lib, f"{pre}get_num_threads{suf}", None)
                put = getattr(lib, f"{pre}set_num_threads{suf}", None)
                if get is not None and put is not None:
                    get.restype = ctypes.c_int
                    put.argtypes = [ctypes.c_int]
                    return get, put
    return None


@contextlib.contextmanager
def blas_threads(n: int):
    """Run with OpenBLAS limited to ``n`` threads, restored afterwards. The numerics multiply
    small matrices, where BLAS threads cost more than they give (5× slower on 2 cores);
    a user's OPENBLAS_NUM_THREADS / OMP_NUM_THREADS is respected."""
    fns = None
    if not (os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")):
        import numpy  # noqa: F401  (loads the BLAS library)
        fns = _openblas()
    if fns is None:
        yield
        return
    get, put = fns
    before = get()
    put(n)
    try:
        yield
    finally:
        put(before)


# ---- output ------------------------------------------------------------------------------

def _finite(x):
    """JSON-safe: non-finite floats -> None, numpy scalars/arrays -> Python."""
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if hasattr(x, "tolist"):
        return _finite(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def to_json(r) -> dict:
    keys = ("scenario", "file", "exact", "expected_exact", "ok", "max_rel_diff", "tolerance",
            "loss_serial", "loss_parallel", "per_tensor", "verdict", "notes", "config",
            "layout", "executor", "comm", "bytes_by_tag", "replicas_identical", "ticks",
            "peak_inflight", "wall_s")
    return _finite({k: r[k] for k in keys if k in r})


def _g(x: float) -> str:
    return f"{x:.6g}" if math.isfinite(x) else str(x)


def _seconds(s: float) -> str:
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= f:
            return f"{s / f:.4g} {unit}"
    return f"{s / 1e-9:.4g} ns" if s > 0 else "0 s"


def render(r) -> str:
    from parsim.numerics.check import describe, resolve
    c = resolve(r["config"])
    model = ("MLP " + "-".join(map(str, c["sizes"])) if c["model"] == "mlp" else
             f"LM L={c['n_layers']} d={c['d_model']} heads={c['n_heads']} V={c['vocab']} "
             f"T={c['seq_len']}")
    mb = c["micro_batch"] or c["global_batch"] // c["dp"]
    lines = [f"parsim check: {r['scenario']}",
             f"  model     {model} ({r['parameters']:,} parameters), float64",
             f"  layout    {describe(c)}",
             f"  training  {c['optimizer']} lr {c['lr']:g}, global batch {c['global_batch']}, "
             f"micro-batch {mb}, {c['steps']} steps, seed {c['seed']}, "
             f"sync_rule {c['sync_rule']}", ""]
    lines.append(f"max relative difference per tensor (tolerance {r['tolerance']:.0e}):")
    width = max(len(k) for k in r["per_tensor"])
    for k, v in r["per_tensor"].items():
        flag = "" if v <= r["tolerance"] else "   > tolerance"
        lines.append(f"  {k:<{width}}  {v:.3e}{flag}")
    lines += ["", f"  {'step':>4}  {'loss serial':>14}  {'loss parallel':>14}  {'difference':>11}"]
    for t, (a, b) in enumerate(zip(r["loss_serial"], r["loss_parallel"]), 1):
        d = b - a if math.isfinite(a) and math.isfinite(b) else float("nan")
        lines.append(f"  {t:>4}  {_g(a):>14}  {_g(b):>14}  {d:>+11.2e}")
    comm = r.get("comm")
    if comm:
        lines += ["", f"simulated communication (DES on cluster {comm['cluster']!r}, collectives "
                      f"and sends one after another): {_seconds(comm['seconds_per_step'])} per step, "
                      f"{comm['collectives_per_step']:g} collectives"
                      + (f" and {comm['sends_per_step']:g} pipeline sends"
                         if comm.get("sends_per_step") else "") + " per step"]
        for k, v in comm["by_schedule"].items():
            lines.append(f"  {k:<24} {v['count_per_step']:>6g}/step  "
                         f"{v['bytes_per_step'] / 1e6:>10.4g} MB/step  "
                         f"{_seconds(v['seconds_per_step'])}/step")
    else:
        lines += ["", "communication not timed (--executor reference)"]
    for n in r["notes"]:
        lines.append(f"note: {n}")
    lines += ["", f"verdict: {r['verdict']}"]
    if r["exact"]:
        lines.append("result: EXACT")
    elif not r["expected_exact"]:
        lines.append("result: DIFFERS, as expected for this layout (not a synchronous, "
                     "averaging update): exit 0")
    else:
        lines.append("result: NOT EXACT: this synchronous layout must match serial training")
    lines.append(f"({r['wall_s']:.2f} s)")
    return "\n".join(lines)


def run(args) -> int:
    from parsim.scenario import load_scenario
    sc = load_scenario(args.file, args.set)
    if args.steps is not None and args.steps < 1:
        raise ScenarioError(f"{args.steps}: expected a positive integer", key="--steps")
    with blas_threads(1):
        r = check_scenario(sc, steps=args.steps, executor=args.executor)
    if args.json:
        print(json.dumps(to_json(r), indent=2))
    else:
        print(render(r))
    return 0 if r["ok"] else 1
