"""What a prediction returns: one frozen record every report reads."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Prediction:
    """Step time, throughput, where the time goes and memory, for one scenario."""
    name: str
    engine: str
    device: str
    num_gpus: int
    step_time_s: float
    samples_per_s: float
    tokens_per_s: float
    model_flops: float                 # per iteration, no recompute
    hardware_flops: float              # per iteration, recompute included
    model_tflops_per_gpu: float
    hardware_tflops_per_gpu: float
    mfu: float
    hfu: float
    peak_flops: float
    breakdown_s: dict                  # compute, bubble, exposed_comm, optimizer
    comm_s: dict                       # exposed per dimension: dp, tp, pp, ps, cp, ep
    memory_bytes: dict                 # params, grads, optimizer, activations, total, capacity
    fits_in_memory: bool
    layout: dict
    algorithm: str = ""
    notes: tuple = ()
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d


@dataclass(frozen=True)
class CollectivePrediction:
    """A collective microbenchmark: nccl-tests' time, algbw and busbw."""
    name: str
    engine: str
    op: str
    ranks: int
    size_bytes: float
    time_s: float
    algbw_GBps: float
    busbw_GBps: float
    algorithm: str
    notes: tuple = ()

    def to_json(self) -> dict:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d
