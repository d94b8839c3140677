"""Whether bfloat16 would speed up the evaluation's sweeps on this CPU: float32 against bfloat16 matmul GFLOP/s.

The sweeps are compute-bound dense matmuls (``benchmarks/evaluation_speed.py``: U-FIDO and CLUE reach 0.5-0.6 of
the float32 matmul rate), so a bfloat16 mode could only pay where the CPU has native bfloat16 arithmetic (AVX512-BF16
or AMX); without it oneDNN converts to float32 and the rate stays the same. This probe times square matmuls of both
dtypes in one process (the median of ``--repeats`` after a warm-up) and writes
``benchmarks/results/bf16_matmul.json`` with the CPU's SIMD flags.

Usage::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bf16_matmul.py [--sizes 1024 2048] [--repeats 5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from machine import machine_info, matmul_gflops, write_benchmark

from common.runs import setup_logging

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048], help="matmul sizes n (n x n x n)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per size and dtype (median reported)")
    parser.add_argument("--out", default=str(RESULTS / "bf16_matmul.json"), help="JSON output path")
    args = parser.parse_args(argv)
    result = {"machine": machine_info(), "repeats": args.repeats, "command": "python benchmarks/bf16_matmul.py",
              "sizes": {}}
    for n in args.sizes:
        f32, bf16 = (matmul_gflops(n, args.repeats, dtype) for dtype in ("float32", "bfloat16"))
        result["sizes"][str(n)] = {"float32_gflops": f32, "bfloat16_gflops": bf16, "bfloat16_speedup": bf16 / f32}
    return write_benchmark(args.out, result)


if __name__ == "__main__":
    setup_logging()
    main()
