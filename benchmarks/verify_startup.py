"""Wall time of `llmlab --help` (goal < 0.5 s) and `llmlab verify --level 1` (goal < 3 s) on this machine.

Baselines measured in the same run: `python -c pass` (interpreter start-up) and `python -c "import torch"`
(the floor of level 1: its software checks import torch once, in the lab environment's python).
Usage: .venv/bin/python benchmarks/verify_startup.py [--runs N] [--config PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

GOALS = {"llmlab --help": 0.5, "llmlab verify --level 1": 3.0}


def wall(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--config", type=Path, help="host config for verify (default: its usual lookup)")
    args = parser.parse_args()
    python = sys.executable
    llmlab = str(Path(python).with_name("llmlab"))
    config = ["--config", str(args.config)] if args.config else []
    commands = {
        "python -c pass": [python, "-c", "pass"],
        "python -c 'import torch'": [python, "-c", "import torch"],
        "llmlab --help": [llmlab, "--help"],
        "llmlab verify --level 1": [llmlab, *config, "verify", "--level", "1"],
    }
    wall(commands["llmlab --help"], 1)  # warm the page cache once
    load = os.getloadavg()[0]
    results = {name: wall(argv, args.runs) for name, argv in commands.items()}
    base = statistics.median(results["python -c pass"])
    print(f"{os.cpu_count()} CPUs, load average {load:.2f} at start, {args.runs} runs each (median / min)")
    print(f"{'command':28} {'median s':>9} {'min s':>7} {'x python':>9}  goal")
    for name, times in results.items():
        median = statistics.median(times)
        goal = GOALS.get(name)
        verdict = "" if goal is None else f"< {goal:g} s: {'met' if median < goal else 'NOT met'}"
        print(f"{name:28} {median:9.3f} {min(times):7.3f} {median / base:9.1f}  {verdict}")


if __name__ == "__main__":
    main()
