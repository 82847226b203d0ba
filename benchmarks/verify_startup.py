"""Wall time of `llmlab --help` (goal < 0.5 s) and `llmlab verify --level 1`, cold (goal < 3 s) and warm
(goal < 1 s), on this machine.

Cold: no kept lab-probe answer, so the lab environment's python imports torch (llmlab/verify/probe_cache.py).
Warm: the answer of the run before is reused, as on a timer's second run with the environment unchanged.
Baselines measured in the same run: `python -c pass` (interpreter start-up) and `python -c "import torch"`
(the floor of a cold level 1). The runs use a cache directory of their own (XDG_CACHE_HOME), removed at the
end. Besides wall time it reports the CPU seconds each command used (its processes together): a busy machine
distorts that less.
Usage: .venv/bin/python benchmarks/verify_startup.py [--runs N] [--config PATH]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

GOALS = {"llmlab --help": 0.5, "llmlab verify --level 1, cold": 3.0, "llmlab verify --level 1, warm": 1.0}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    argv: list[str], runs: int, before: Callable[[], object] = lambda: None
) -> tuple[list[float], list[float]]:
    """(wall seconds, CPU seconds) per run; `before` runs untimed ahead of each."""
    walls, cpus = [], []
    for _ in range(runs):
        before()
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
    verify = [llmlab, *config, "verify", "--level", "1"]
    commands = {
        "python -c pass": [python, "-c", "pass"],
        "python -c 'import torch'": [python, "-c", "import torch"],
        "llmlab --help": [llmlab, "--help"],
        "llmlab verify --level 1, cold": verify,
        "llmlab verify --level 1, warm": verify,
        # what level 1 costs besides the lab probe
        "  ... --skip software": [*verify, "--skip", "software"],
    }
    cache_home = Path(tempfile.mkdtemp(prefix="verify-startup-"))
    os.environ["XDG_CACHE_HOME"] = str(cache_home)  # the children's; the user's own cache stays as it was

    def forget() -> None:
        shutil.rmtree(cache_home / "llmlab", ignore_errors=True)

    measure(commands["llmlab --help"], 1)  # warm the page cache once
    load = os.getloadavg()[0]
    results = {}
    try:
        for name, argv in commands.items():
            results[name] = measure(argv, args.runs, forget if name.endswith("cold") else lambda: None)
    finally:
        shutil.rmtree(cache_home, ignore_errors=True)
    python_s = statistics.median(results["python -c pass"][0])
    torch_s = statistics.median(results["python -c 'import torch'"][0])
    print(f"{os.cpu_count()} CPUs, load average {load:.2f} at start, {args.runs} runs each")
    header = f"{'wall median':>11} {'wall min':>8} {'CPU s':>6} {'x python':>8} {'x torch':>7}"
    print(f"{'command':30} {header}  goal")
    for name, (walls, cpus) in results.items():
        median = statistics.median(walls)
        goal = GOALS.get(name)
        verdict = "" if goal is None else f"< {goal:g} s: {'met' if median < goal else 'NOT met'}"
        print(
            f"{name:30} {median:11.3f} {min(walls):8.3f} {statistics.median(cpus):6.2f} "
            f"{median / python_s:8.1f} {median / torch_s:7.2f}  {verdict}"
        )


if __name__ == "__main__":
    main()
