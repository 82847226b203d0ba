"""Wall time of `llmlab --help` (goal < 0.5 s) and `llmlab verify --level 1` (goal < 3 s) on this machine.

Baselines measured in the same run: `python -c pass` (interpreter start-up) and `python -c "import torch"`
(the floor of level 1: its software checks import torch once, in the lab environment's python). Besides wall
time it reports the CPU seconds each command used (its processes together): a busy machine distorts that less.
Usage: .venv/bin/python benchmarks/verify_startup.py [--runs N] [--config PATH]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

GOALS = {"llmlab --help": 0.5, "llmlab verify --level 1": 3.0}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(argv: list[str], runs: int) -> tuple[list[float], list[float]]:
    """(wall seconds, CPU seconds) per run."""
    walls, cpus = [], []
    for _ in range(runs):
        cpu, start = cpu_seconds(), time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        walls.append(time.perf_counter() - start)
        cpus.append(cpu_seconds() - cpu)
    return walls, cpus


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
        # what level 1 costs besides the lab probe's torch import
        "  ... --skip software": [llmlab, *config, "verify", "--level", "1", "--skip", "software"],
    }
    measure(commands["llmlab --help"], 1)  # warm the page cache once
    load = os.getloadavg()[0]
    results = {name: measure(argv, args.runs) for name, argv in commands.items()}
    python_s = statistics.median(results["python -c pass"][0])
    torch_s = statistics.median(results["python -c 'import torch'"][0])
    print(f"{os.cpu_count()} CPUs, load average {load:.2f} at start, {args.runs} runs each")
    header = f"{'wall median':>11} {'wall min':>8} {'CPU s':>6} {'x python':>8} {'x torch':>7}"
    print(f"{'command':28} {header}  goal")
    for name, (walls, cpus) in results.items():
        median = statistics.median(walls)
        goal = GOALS.get(name)
        verdict = "" if goal is None else f"< {goal:g} s: {'met' if median < goal else 'NOT met'}"
        print(
            f"{name:28} {median:11.3f} {min(walls):8.3f} {statistics.median(cpus):6.2f} "
            f"{median / python_s:8.1f} {median / torch_s:7.2f}  {verdict}"
        )


if __name__ == "__main__":
    main()
