"""common.utils: the benchmarks' machine record."""

from pathlib import Path

import pytest

from common.utils import SIMD_FLAGS, machine_info


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
