"""benchmarks/machine.py: the benchmarks' machine record and how they write their JSON."""
import json
from pathlib import Path

import pytest

from benchmarks.machine import machine_info
from common.version import SIMD_FLAGS


def test_machine_info_records_the_cpu_features_timings_depend_on():
    info = machine_info(gpus=[], cpus=3)
    assert info["cpus"] == 3 and info["gpus"] == []  # extras are added, and win over the measured entries
    assert set(info["simd"]) <= set(SIMD_FLAGS)
    assert info["tensorflow"] and info["platform"]
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo on this platform")
    flags = next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split()
    assert info["simd"] == [f for f in SIMD_FLAGS if f in flags]
    assert info["cpu_model"]


def test_write_benchmark_records_the_end_load_and_writes_atomically(tmp_path):
    from benchmarks.machine import write_benchmark

    result = write_benchmark(tmp_path / "b.json", {"machine": {"load_average_start": [0.0, 0.0, 0.0]}, "x": 1.5})
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved == result and saved["x"] == 1.5 and len(saved["machine"]["load_average_end"]) == 3
    assert not list(tmp_path.glob("*.tmp*"))
