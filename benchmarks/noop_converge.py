"""Wall time of a no-op `site.yml` over SSH (goal <= 20 s per host), next to its floor of the same run.

The benchmark starts its own Debian 12 systemd containers (tests/images/systemd-container.sh), named
llmlab-bench-noop-1..N, installs sshd and a key made for the run (through `docker exec`, as molecule/hub's
prepare step does), and from then on reaches them over SSH only: `ProxyCommand=docker exec -i %h nc 127.0.0.1
22`, as root with the run's key. The inventory is the demo host's CPU profile made light enough for a first
converge of a few minutes: no ML stack (python_env_ml_stack: false), Docker from Debian on vfs, the firewall
on (ufw in each container's own network namespace: NET_ADMIN, Docker's bridge, never the host network).

After one first converge, it times in rounds (each configuration once a round, so that a change of the shared
machine's load falls on all of them):
  * the no-op converge: `site.yml` again, with the project's ansible.cfg (pipelining, ControlPersist=60s,
    facts cached in a jsonfile between runs); every run must report changed=0;
  * the floor: a play of as many `ansible.builtin.ping` tasks as the no-op converge ran on each host (its
    recap's ok + changed), no facts, the same connection; the ratio converge / floor is what the roles add;
  * each lever, the no-op converge with one setting changed from the baseline: pipelining off, ControlPersist
    off, facts not cached between runs (gathered once per run), facts gathered by every play (Ansible's
    default `gathering = implicit`); with --roles-from DIR, the roles of another checkout (a role change's
    effect); the opt-in mitogen_linear strategy (playbooks/strategy_plugins, mitogen from the ops extra) and
    its own floor, when mitogen is installed.
Each figure is the median wall time, the least (the machine's speed varies from run to run), the controller's
CPU seconds (ansible-playbook and its children: less distorted by a busy machine) and the load average;
"paired" is the median over the rounds of the difference to the baseline run of the same round. The costliest
tasks and roles come from the profile_tasks callback (ansible.posix). The containers are removed at the end,
on failure and on Ctrl-C (--keep leaves them and the run's key for the next run, which then converges them
again instead of from scratch).

Usage: .venv/bin/python benchmarks/noop_converge.py [--hosts N] [--runs ROUNDS] [--levers NAME,...|none]
                                                    [--roles-from CHECKOUT] [--keep]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
GOAL_S = 20.0
PREFIX = "llmlab-bench-noop-"
BASELINE = "no-op converge"
FLOOR = "floor"
IMAGE = "llmlab-test/debian:12"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unr>\d+)"
    r"\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)"
)
PROFILE = re.compile(r"^(?P<task>\S.*?) -{3,} (?P<s>\d+\.\d+)s$")

# The inventory's settings besides the hosts: the demo's CPU profile (inventory/local) made light.
GROUP_VARS = {
    "base_users": [{"name": "demo"}],
    # A short package list and limits below the sandbox's hard limits (molecule/base.yml says why).
    "base_packages": ["ca-certificates", "acl", "python3-venv"],
    "base_limits_nofile": 16384,
    "base_limits_memlock": 4096,
    "python_env_ml_stack": False,
    "python_env_pip_config": {"cert": "/etc/llmlab-test/ca-bundle.crt", "timeout": 120},
    "docker_nvidia_toolkit": False,
    "docker_daemon_options": {"storage-driver": "vfs"},
    "llmlab_verify": {"expect": {"os": "debian 12"}, "thresholds": {"command_timeout_seconds": 120}},
    # The package from this checkout in every configuration: --roles-from swaps the roles, not what they
    # deploy (another checkout's package would be reinstalled on every switch, and no run would be a no-op).
    "llmlab_source_dir": str(ROOT),
}

# name: (what it changes, environment over the baseline's)
LEVERS = {
    "pipelining off": ("ANSIBLE_PIPELINING=false", {"ANSIBLE_PIPELINING": "false"}),
    "ControlPersist off": ("ssh_args -o ControlMaster=no", {"ANSIBLE_SSH_ARGS": "-o ControlMaster=no"}),
    "facts not cached": ("fact cache in memory: gathered once per run", {"ANSIBLE_CACHE_PLUGIN": "memory"}),
    "facts every play": (
        "gathering=implicit, no cache: Ansible's default",
        {"ANSIBLE_GATHERING": "implicit", "ANSIBLE_CACHE_PLUGIN": "memory"},
    ),
}


@dataclass
class Run:
    wall: float
    cpu: float  # CPU seconds of the controller's processes (ansible-playbook, its workers, ssh)
    load: float
    rc: int
    recap: dict[str, dict[str, int]]
    profile: dict[str, float] = field(default_factory=dict)
    log: Path | None = None


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load1() -> float:
    return os.getloadavg()[0]


def sh(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, text=True, **kwargs)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = ROOT / ".cache" / "bench-noop"
        self.hosts = [f"{PREFIX}{i}" for i in range(1, args.hosts + 1)]
        self.key = self.work / "id_ed25519"
        self.inventory = self.work / "inventory.yml"
        self.logs = self.work / "logs"
        self.counter = 0

    # -- hosts -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        if not self.key.exists():
            sh(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "llmlab-bench-noop",
                    "-f",
                    str(self.key),
                ]
            )
        public = self.key.with_suffix(".pub").read_text().strip()
        for host in self.hosts:
            sh(
                [
                    str(ROOT / "tests/images/systemd-container.sh"),
                    host,
                    IMAGE,
                    "--label",
                    "llmlab.bench=noop",
                    "--cap-add",
                    "NET_ADMIN",
                    "-v",
                    f"{CA_BUNDLE}:/etc/llmlab-test/ca-bundle.crt:ro",
                ]
            )
            # What an installer leaves on a real host: sshd letting root in with a key (nc: the ProxyCommand).
            script = (
                "set -e; command -v sshd >/dev/null && command -v nc >/dev/null || {"
                " for i in 1 2 3 4 5; do apt-get update -q && break; sleep 10; done;"
                " DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends"
                " openssh-server netcat-openbsd; };"
                " systemctl enable --now ssh; install -d -m 700 /root/.ssh;"
                f" grep -qxF '{public}' /root/.ssh/authorized_keys 2>/dev/null"
                f" || echo '{public}' >> /root/.ssh/authorized_keys; chmod 600 /root/.ssh/authorized_keys"
            )
            sh(["docker", "exec", host, "bash", "-c", script], stdout=subprocess.DEVNULL)
        host_vars = {
            "ansible_connection": "ssh",
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": '-o ProxyCommand="docker exec -i %h nc 127.0.0.1 22"'
            " -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        }
        hosts = {host: dict(host_vars) for host in self.hosts}
        inventory = {
            "all": {
                "children": {
                    "lab": {"children": {"cpu_lab": {"hosts": hosts}}, "vars": GROUP_VARS},
                    "docker_hosts": {"hosts": {host: {} for host in self.hosts}},
                }
            }
        }
        self.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))

    def remove(self) -> None:
        if self.args.keep:
            print(f"kept: {' '.join(self.hosts)} (remove: docker rm -f {' '.join(self.hosts)})")
            return
        subprocess.run(
            ["docker", "rm", "-f", *self.hosts],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        for path in (self.key, self.key.with_suffix(".pub"), self.inventory):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.work / "facts", ignore_errors=True)
        print(f"removed {' '.join(self.hosts)}; the logs stay in {self.logs}")

    # -- runs --------------------------------------------------------------------------------------------
    def env(self, extra: dict[str, str]) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0",
                # The run's own fact cache, not the demo's (.cache/ansible-facts).
                "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(self.work / "facts"),
                "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
                "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "all",
                "PROFILE_TASKS_SORT_ORDER": "descending",
                "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
            }
        )
        env.update(extra)
        return env

    def playbook(self, name: str, playbook: Path, extra: dict[str, str] | None = None) -> Run:
        self.counter += 1
        log = self.logs / f"{self.counter:02d}-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.log"
        argv = ["ansible-playbook", "-i", str(self.inventory), str(playbook)]
        load, cpu = load1(), cpu_seconds()
        start = time.perf_counter()
        with log.open("w") as out:
            rc = subprocess.run(
                argv, cwd=ROOT, env=self.env(extra or {}), stdout=out, stderr=subprocess.STDOUT, check=False
            ).returncode
        wall = time.perf_counter() - start
        recap: dict[str, dict[str, int]] = {}
        profile: dict[str, float] = {}
        for line in log.read_text().splitlines():
            if match := RECAP.match(line):
                recap[match["host"]] = {k: int(v) for k, v in match.groupdict().items() if k != "host"}
            elif match := PROFILE.match(line):
                profile[match["task"]] = profile.get(match["task"], 0.0) + float(match["s"])
        run = Run(wall, cpu_seconds() - cpu, (load + load1()) / 2, rc, recap, profile, log)
        status = "ok" if rc == 0 else f"FAILED rc={rc}, see {log}"
        print(
            f"  {name:36} {wall:7.1f} s  CPU {run.cpu:6.1f} s  load {run.load:5.2f}  {self.recap_text(run)}"
            f"  {status}",
            flush=True,
        )
        return run

    @staticmethod
    def recap_text(run: Run) -> str:
        if not run.recap:
            return "no recap"
        first = next(iter(run.recap.values()))
        return f"ok={first['ok']} changed={first['changed']} skipped={first['skipped']}"

    def floor_playbook(self, tasks: int) -> Path:
        path = self.work / "floor.yml"
        play = [
            {
                "name": f"Floor: {tasks} ping tasks",
                "hosts": "lab",
                "gather_facts": False,
                "tasks": [{"name": f"Ping {i}", "ansible.builtin.ping": {}} for i in range(1, tasks + 1)],
            }
        ]
        path.write_text(yaml.safe_dump(play, sort_keys=False))
        return path


def report_profile(columns: dict[str, list[Run]], top: int) -> None:
    """Seconds per run by role and the costliest tasks (profile_tasks, the mean over each column's runs)."""
    roles: dict[str, dict[str, float]] = {name: defaultdict(float) for name in columns}
    tasks: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for name, runs in columns.items():
        for run in runs:
            for task, seconds in run.profile.items():
                role = task.split(" : ", 1)[0] if " : " in task else "(playbook)"
                roles[name][role] += seconds / len(runs)
                if name == next(iter(columns)):
                    tasks[task] += seconds / len(runs)
                    counts[role] += 1
    first = next(iter(columns))
    print(f"\nseconds per run by role (profile_tasks, mean over the runs; tasks: {first!r}'s, skipped too)")
    print(f"  {'role':16}{''.join(f'{name[:26]:>28}' for name in columns)}  tasks")
    for role in sorted(roles[first], key=lambda r: -roles[first][r]):
        cells = "".join(f"{roles[name].get(role, 0.0):26.1f} s" for name in columns)
        print(f"  {role:16}{cells}  {counts[role] // len(columns[first]):5d}")
    totals = "".join(f"{sum(roles[name].values()):26.1f} s" for name in columns)
    print(f"  {'(all tasks)':16}{totals}")
    print(f"\nthe {top} costliest tasks of {first!r} (same-named tasks summed)")
    for task, seconds in sorted(tasks.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {seconds:6.2f} s  {task}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1, help="containers converged together (default 1)")
    parser.add_argument("--runs", type=int, default=2, help="rounds: each configuration runs once a round")
    parser.add_argument(
        "--levers",
        default=",".join(LEVERS),
        help=f"comma-separated, or 'none' (default: all of {', '.join(LEVERS)})",
    )
    parser.add_argument(
        "--roles-from",
        type=Path,
        help="another checkout (e.g. a worktree of main): its roles/ as a lever, to measure a role change",
    )
    parser.add_argument("--top", type=int, default=15, help="costliest tasks to list")
    parser.add_argument("--keep", action="store_true", help="leave the containers for the next run")
    args = parser.parse_args()
    site = ROOT / "playbooks/site.yml"
    floor_book = ROOT / ".cache/bench-noop/floor.yml"
    # name: (playbook, environment over the baseline's, what it changes)
    configs: dict[str, tuple[Path, dict[str, str], str]] = {
        BASELINE: (site, {}, "the project's ansible.cfg"),
        FLOOR: (floor_book, {}, "as many ping tasks as the no-op converge ran"),
    }
    if args.levers != "none":
        for name in args.levers.split(","):
            what, extra = LEVERS[name]
            configs[name] = (site, extra, what)
    if args.roles_from:
        roles = args.roles_from.resolve() / "roles"
        if not roles.is_dir():
            parser.error(f"--roles-from: no {roles}")
        configs[f"roles of {args.roles_from.name}"] = (site, {"ANSIBLE_ROLES_PATH": str(roles)}, str(roles))
    if importlib.util.find_spec("ansible_mitogen"):
        mitogen = {
            "ANSIBLE_STRATEGY": "mitogen_linear",
            # mitogen reads the host key policy from Ansible's setting, not from the inventory's
            # StrictHostKeyChecking=no (it refuses the container's unknown key otherwise).
            "ANSIBLE_HOST_KEY_CHECKING": "false",
        }
        configs["mitogen"] = (site, mitogen, "strategy mitogen_linear")
        configs["mitogen floor"] = (floor_book, mitogen, "the floor play with mitogen_linear")
        if args.roles_from:
            roles_env = {**mitogen, "ANSIBLE_ROLES_PATH": str(args.roles_from.resolve() / "roles")}
            configs[f"mitogen, roles of {args.roles_from.name}"] = (site, roles_env, "both levers at once")
    bench = Bench(args)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    failed = False
    try:
        print(
            f"{os.cpu_count()} CPUs, load average {load1():.2f}; hosts: {', '.join(bench.hosts)}; logs: "
            f"{bench.logs}",
            flush=True,
        )
        start = time.perf_counter()
        bench.start()
        print(
            f"  {'containers + sshd':36} {time.perf_counter() - start:7.1f} s  load {load1():5.2f}",
            flush=True,
        )
        first = bench.playbook("first converge", site)
        if first.rc != 0:
            return 1
        # Rounds: every configuration once a round, so a change of the machine's load falls on all of them.
        runs: dict[str, list[Run]] = {name: [] for name in configs}
        tasks = 0
        for round_ in range(1, args.runs + 1):
            for name, (playbook, extra, _) in configs.items():
                if playbook == floor_book and not tasks:
                    counts = runs[BASELINE][0].recap.values()
                    tasks = max(c["ok"] + c["changed"] for c in counts)
                    bench.floor_playbook(tasks)
                label = f"floor ({tasks} pings)" if name == FLOOR else name
                runs[name].append(bench.playbook(f"{label} {round_}", playbook, extra))
        failed = any(r.rc != 0 for r in [first, *(r for rs in runs.values() for r in rs)])
        noop = all(h["changed"] == 0 for r in runs[BASELINE] for h in r.recap.values())
        print_summary(args, bench, configs, runs, first, tasks, noop)
        columns = {BASELINE: runs[BASELINE]}
        profiled = ("roles of ", "mitogen")
        columns.update(
            {name: rs for name, rs in runs.items() if name.startswith(profiled) and "floor" not in name}
        )
        report_profile(columns, args.top)
        if failed:
            print("\nsome runs failed: see their logs above", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        failed = True
    finally:
        bench.remove()
    return 1 if failed else 0


def print_summary(args, bench, configs, runs, first, tasks, noop) -> None:
    def med(name: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in runs[name])

    n = len(bench.hosts)
    base, floor = med(BASELINE, "wall"), med(FLOOR, "wall")
    print(
        f"\nsummary: {n} host(s), {args.runs} round(s), medians; per host = wall / hosts (hosts in parallel);"
        "\npaired: the median over the rounds of (this run - the baseline run of the same round)"
    )
    print(f"  {'first converge':36} {first.wall:7.1f} s  CPU {first.cpu:6.1f} s  load {first.load:5.2f}")
    columns = f"{'wall':>9} {'min':>9} {'CPU':>9} {'load':>6} {'paired':>9} {'x floor':>8}"
    print(f"  {'configuration':36} {columns}")
    for name, (_, _, what) in configs.items():
        wall, cpu, load = med(name, "wall"), med(name, "cpu"), med(name, "load")
        least = min(r.wall for r in runs[name])
        paired = statistics.median(r.wall - b.wall for r, b in zip(runs[name], runs[BASELINE], strict=True))
        reference = med("mitogen floor", "wall") if name.startswith("mitogen") else floor
        ratio = "" if "floor" in name else f"{wall / reference:8.2f}"
        figures = f"{wall:7.1f} s {least:7.1f} s {cpu:7.1f} s {load:6.2f} {paired:+7.1f} s {ratio:>8}"
        print(f"  {name:36} {figures}  {what}")
    recap = runs[BASELINE][0].recap[bench.hosts[0]]
    print(
        f"  no-op converge per host: {base / n:.1f} s "
        f"(goal <= {GOAL_S:g} s: {'met' if base / n <= GOAL_S else 'NOT met'})"
        f"{'' if noop else ', NOT a no-op: changed > 0'}; {recap['ok'] + recap['changed']} tasks run, "
        f"{recap['skipped']} skipped; floor {floor / tasks:.3f} s per ping task; ratio {base / floor:.2f}"
    )
    if "mitogen" in runs:
        mitogen, mfloor = med("mitogen", "wall"), med("mitogen floor", "wall")
        print(
            f"  with mitogen: {mitogen / n:.1f} s per host, floor {mfloor / tasks:.3f} s per ping task, "
            f"ratio {mitogen / mfloor:.2f} (x floor above: against the mitogen floor)"
        )


if __name__ == "__main__":
    sys.exit(main())
