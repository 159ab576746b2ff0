"""Device presets, lookup and calibrated overrides (parsim/hardware.py)."""
import dataclasses

import pytest

from parsim.errors import ScenarioError
from parsim.hardware import DEVICES, DTYPES, Device, get_device

GPUS = ("v100-16gb", "v100-32gb", "a100-40gb", "a100-80gb", "h100-sxm-80gb", "h100-sxm-96gb", "h200")
GiB = 2**30


def test_preset_names_are_exactly_the_published_runs_gpu_column_plus_cpu():
    # shared/data/README.md, published_runs.csv column `gpu`
    assert set(DEVICES) == set(GPUS) | {"cpu"}


@pytest.mark.parametrize("name, dtype, peak", [
    # shared/data/README.md "GPU peaks": V100 125 fp16; A100 312 bf16/fp16; H100/H200 989 bf16, 1979 fp8
    ("v100-16gb", "fp16", 125e12), ("v100-32gb", "fp16", 125e12),
    ("a100-40gb", "bf16", 312e12), ("a100-80gb", "fp16", 312e12), ("a100-80gb", "bf16", 312e12),
    ("h100-sxm-80gb", "bf16", 989e12), ("h100-sxm-96gb", "bf16", 989e12), ("h200", "bf16", 989e12),
    ("h100-sxm-80gb", "fp8", 1979e12), ("h200", "fp8", 1979e12),
])
def test_peaks_match_the_data_readme(name, dtype, peak):
    assert get_device(name).peak_flops[dtype] == peak


@pytest.mark.parametrize("name, dtype", [("v100-32gb", "bf16"), ("v100-32gb", "tf32"),
                                         ("a100-80gb", "fp8"), ("cpu", "bf16")])
def test_missing_dtype_means_unsupported(name, dtype):
    dev = get_device(name)
    assert not dev.supports(dtype)
    with pytest.raises(ScenarioError, match=f"training.precision: {name} has no {dtype} math"):
        dev.check_dtype(dtype, key="training.precision")


def test_memory_capacity_is_binary_and_bandwidth_decimal():
    # "80GB" HBM is 80 GiB; "2039 GB/s" is 2039e9 B/s (A100 80GB datasheet)
    a100 = get_device("a100-80gb")
    assert a100.mem_bytes == 80 * GiB
    assert a100.mem_bw_Bps == 2039e9
    assert get_device("a100-40gb").mem_bw_Bps == 1555e9
    assert get_device("h200").mem_bytes == 141 * GiB and get_device("h200").mem_bw_Bps == 4.8e12


def test_nvlink_is_per_direction():
    # datasheets give both directions together: 300, 600, 900 GB/s
    assert get_device("v100-32gb").nvlink_Bps == 150e9
    assert get_device("a100-80gb").nvlink_Bps == 300e9
    assert get_device("h100-sxm-80gb").nvlink_Bps == 450e9
    assert get_device("cpu").nvlink_Bps == 0


def test_efficiencies_are_the_cited_measurements():
    # Bekman ml-engineering MAMF table: A100 271.2/312, H100 794.5/989 (bf16); fp8 1402.6/1979 (H100),
    # 1453.4/1979 (H200)
    assert get_device("a100-80gb").gemm_eff == pytest.approx(271.2 / 312, abs=5e-4)
    assert get_device("h100-sxm-80gb").gemm_eff == pytest.approx(794.5 / 989, abs=5e-4)
    assert get_device("h100-sxm-80gb").gemm_eff_for("fp8") == pytest.approx(1402.6 / 1979, abs=5e-4)
    assert get_device("h200").gemm_eff_for("fp8") == pytest.approx(1453.4 / 1979, abs=5e-4)
    assert get_device("h200").gemm_eff_for("bf16") == get_device("h200").gemm_eff
    # NVIDIA forum: 1.80 of 2.04 TB/s on A100 80GB
    assert get_device("a100-80gb").mem_eff == pytest.approx(1.80 / 2.04, abs=5e-3)


@pytest.mark.parametrize("name", sorted(DEVICES))
def test_every_figure_has_a_source_and_sane_ranges(name):
    dev = DEVICES[name]
    figures = {"peak_flops", "mem_bytes", "mem_bw_Bps", "sm_count", "gemm_eff", "mem_eff",
               "launch_s", "attn_eff"}
    assert figures <= set(dev.sources), figures - set(dev.sources)
    assert all(isinstance(v, str) and len(v) > 10 for v in dev.sources.values())
    assert set(dev.peak_flops) <= set(DTYPES)
    assert 0 < dev.gemm_eff <= 1 and 0 < dev.mem_eff <= 1
    assert dev.attn_eff is None or 0 < dev.attn_eff <= 1
    assert 0 < dev.launch_s < 1e-4
    assert (dev.sm_count == 0) == (name == "cpu")


def test_cpu_preset_is_derived_from_its_documented_parts():
    # 16 cores x 2.5 GHz x 32 FLOP/cycle; 4 channels DDR4-3200 x 8 bytes
    cpu = get_device("cpu")
    assert cpu.peak_flops == {"fp32": 16 * 2.5e9 * 32}
    assert cpu.mem_bw_Bps == pytest.approx(4 * 3200e6 * 8)


def test_lookup_is_case_insensitive():
    assert get_device(" H200 ") is DEVICES["h200"]


def test_unknown_device_names_key_file_and_suggests():
    with pytest.raises(ScenarioError, match=r"^s\.toml: cluster\.gpu: unknown device 'a100-80g'; "
                                            r"did you mean 'a100-80gb'\? one of: "):
        get_device("a100-80g", file="s.toml")
    with pytest.raises(ScenarioError, match=r"^cluster\.nodes\[0\]\.gpu: unknown device 'gaudi3'; one of: "):
        get_device("gaudi3", key="cluster.nodes[0].gpu")
    with pytest.raises(ScenarioError, match="must be a device name"):
        get_device(3)


def test_devices_are_frozen_and_hashable():
    dev = get_device("a100-80gb")
    with pytest.raises(dataclasses.FrozenInstanceError):
        dev.gemm_eff = 0.5
    assert {dev: 1}[get_device("a100-80gb")] == 1


class TestOverrides:
    def test_unit_strings_and_numbers(self):
        base = get_device("h100-sxm-80gb")
        dev = base.with_overrides({"mem_bw_Bps": "3 TB/s", "mem_bytes": "80 GB", "launch_s": "4 us",
                                   "gemm_eff": 0.75, "sm_count": 114, "nvlink_Bps": "400 Gb/s"},
                                  file="profiles/h100.toml")
        assert dev.mem_bw_Bps == 3e12
        assert dev.mem_bytes == 80e9
        assert dev.launch_s == pytest.approx(4e-6)
        assert (dev.gemm_eff, dev.sm_count, dev.nvlink_Bps) == (0.75, 114, 50e9)
        assert dev.sources["gemm_eff"] == "profile profiles/h100.toml"
        assert dev.sources["peak_flops"] == base.sources["peak_flops"]
        assert base.mem_bw_Bps == 3.35e12  # the preset is untouched

    def test_per_dtype_tables_merge(self):
        dev = get_device("h100-sxm-80gb").with_overrides(
            {"peak_flops": {"bf16": "900 TFLOPS"}, "gemm_eff_by_dtype": {"bf16": 0.7}})
        assert dev.peak_flops["bf16"] == 900e12 and dev.peak_flops["fp8"] == 1979e12
        assert dev.gemm_eff_for("bf16") == 0.7 and dev.gemm_eff_for("fp8") == pytest.approx(0.709)
        assert dev.sources["peak_flops"] == "override"

    def test_attn_eff_can_be_removed(self):
        assert get_device("a100-80gb").with_overrides({"attn_eff": None}).attn_eff is None

    @pytest.mark.parametrize("mapping, key, message", [
        ({"gemm_ef": 0.8}, "device.gemm_ef", "unknown device field; did you mean 'gemm_eff'"),
        ({"colour": 1}, "device.colour", "unknown device field; one of: name, "),
        ({"mem_bw_Bps": "fast"}, "device.mem_bw_Bps", "cannot read 'fast'"),
        ({"mem_bw_Bps": "3 TB"}, "device.mem_bw_Bps", "cannot read unit"),
        ({"gemm_eff": 1.2}, "device.gemm_eff", r"1\.2: gemm_eff must be an efficiency in \(0, 1\]"),
        ({"gemm_eff": "0.8"}, "device.gemm_eff", "must be a number"),
        ({"sm_count": 1.5}, "device.sm_count", "non-negative integer"),
        ({"peak_flops": {"fp4": 1e15}}, "device.peak_flops.fp4", "unknown dtype"),
        ({"peak_flops": 1e15}, "device.peak_flops", "must be a table"),
        ({"peak_flops": {"bf16": "0 TFLOPS"}}, "device.peak_flops", "positive FLOP rate"),
    ])
    def test_errors_name_the_key(self, mapping, key, message):
        with pytest.raises(ScenarioError, match=rf"^p\.toml: {key}: .*{message}"):
            get_device("a100-80gb").with_overrides(mapping, file="p.toml")


class TestCalibratedProfiles:
    # The [device] table `parsim calibrate` writes (parsim/calibrate/session.py): base, the machine's
    # name / mem_bytes / sm_count, measured peaks (the best GEMM rate) with gemm_eff = mem_eff = 1.
    GPU_TABLE = {"base": "gpu", "name": "NVIDIA H100 80GB HBM3", "mem_bytes": 85520809984,
                 "sm_count": 132, "peak_flops": {"bf16": 780e12, "fp32": 50e12},
                 "mem_bw_Bps": 3.0e12, "launch_s": 4e-6, "gemm_eff": 1.0, "mem_eff": 1.0,
                 "sources": {"peak_flops": "measured, torch.matmul"}}

    def test_gpu_profile_applies(self):
        base = get_device("h100-sxm-80gb")
        dev = base.with_overrides(self.GPU_TABLE, file="profiles/h100.toml")
        assert dev.name == "NVIDIA H100 80GB HBM3" and dev.gemm_eff == 1.0
        assert dev.peak_flops["bf16"] == 780e12 and dev.peak_flops["fp8"] == 1979e12
        assert dev.sources["peak_flops"] == "measured, torch.matmul"
        # fp8 was not measured: its preset efficiency still applies to its datasheet peak
        assert dev.gemm_eff_for("fp8") == pytest.approx(0.709)
        # attention was not measured: its FLOP rate stays the preset's 0.55 * 989e12
        assert dev.attn_eff * 780e12 == pytest.approx(0.55 * 989e12)

    def test_measured_peak_drops_the_presets_per_dtype_efficiency(self):
        dev = get_device("h100-sxm-80gb").with_overrides({"peak_flops": {"fp8": 1.4e15}, "gemm_eff": 1.0})
        assert dev.gemm_eff_for("fp8") == 1.0

    def test_cpu_profile_with_fp64_and_core_count(self):
        table = {"base": "cpu", "name": "AMD EPYC", "sm_count": 16, "peak_flops": {"fp32": 1e12, "fp64": 5e11},
                 "mem_bw_Bps": 8e10, "launch_s": 2e-6, "gemm_eff": 1.0, "mem_eff": 1.0}
        dev = get_device("cpu").with_overrides(table, file="profiles/host.toml")
        assert dev.kind == "cpu" and dev.peak_flops["fp64"] == 5e11 and dev.sm_count == 16

    def test_profile_of_another_kind_is_refused(self):
        with pytest.raises(ScenarioError, match=r"p\.toml: device\.base: the profile measured a cpu but "
                                                r"a100-80gb is a gpu"):
            get_device("a100-80gb").with_overrides({"base": "cpu"}, file="p.toml")
        with pytest.raises(ScenarioError, match="device.base: 'tpu' must be gpu or cpu"):
            get_device("a100-80gb").with_overrides({"base": "tpu"})
        with pytest.raises(ScenarioError, match="device.sources"):
            get_device("a100-80gb").with_overrides({"sources": {"gemm_eff": 3}})


def test_device_constructor_rejects_broken_invariants():
    with pytest.raises(AssertionError, match="mem_eff"):
        Device(name="x", peak_flops={"fp32": 1e12}, mem_bytes=1, mem_bw_Bps=1, sm_count=1,
               gemm_eff=0.5, mem_eff=0, launch_s=0)
