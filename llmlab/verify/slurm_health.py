"""`llmlab verify --slurm-health`: verify's quick subset as Slurm's node health check.

Slurm runs it as HealthCheckProgram (every HealthCheckInterval) and in the job prolog. On a FAIL the node
drains itself with the reason `llmlab: <check ids>`; when the checks pass again it resumes, but only a node
that llmlab drained: a node drained for any other reason (an administrator's) is left as it is.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from llmlab.verify.result import CheckResult, Status
from llmlab.verify.sources import CommandRunner

# The quick subset: what breaks a node for jobs and can be read in well under the 10 s budget (the slow
# level-1 checks - torch import, pip check, the Docker SDK, JupyterLab - are left to the verify timer).
# gpu.processes is left out: a running job holds GPU memory by design.
HEALTH_CHECKS: tuple[str, ...] = (
    "system.disk_root",
    "system.inodes_root",
    "system.disk_model_store",
    "gpu.count",
    "gpu.driver",
    "gpu.ecc_errors",
    "gpu.row_remap",
    "gpu.retired_pages",
    "gpu.temperature",
    "gpu.xid",
    "services.firewall",
    "services.listening_ports",
    "models.store_writable",
)
REASON_PREFIX = "llmlab:"
SCONTROL_TIMEOUT = 5.0
# Slurm's reason field is limited; ids beyond this are summarised.
MAX_REASON = 200


@dataclass(frozen=True)
class NodeState:
    """A node as `scontrol show node NAME --oneliner` reports it."""

    name: str
    state: str  # e.g. IDLE, IDLE+DRAIN, MIXED+DRAIN, ALLOCATED
    reason: str  # without Slurm's " [user@time]" suffix; "" when none

    @property
    def flags(self) -> set[str]:
        return set(self.state.upper().split("+"))

    @property
    def drained(self) -> bool:
        """DRAIN set: draining (jobs still running) or drained."""
        return "DRAIN" in self.flags

    @property
    def drained_by_llmlab(self) -> bool:
        return self.drained and self.reason.startswith(REASON_PREFIX)


_FIELD = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_]*)=")


def parse_node(text: str) -> NodeState:
    """Parse one node of `scontrol show node NAME --oneliner` (or its multi-line form).

    Values may contain spaces (Reason=...), so a field runs until the next ` Key=`.
    """
    text = " ".join(text.split())
    matches = list(_FIELD.finditer(text))
    fields: dict[str, str] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        fields[m.group(1)] = text[m.end() : end].strip()
    if "NodeName" not in fields:
        raise ValueError(f"not scontrol node output: {text[:120]!r}")
    # A reason may hold anything, even "=": it ends at Slurm's " [user@time]" suffix where that is present.
    stamped = re.search(r"(?:^|\s)Reason=(.*?)\s*\[[^\]\s]+@[^\]\s]+\]", text)
    reason = (stamped.group(1) if stamped else fields.get("Reason", "")).strip()
    if reason in ("(null)", "none"):
        reason = ""
    return NodeState(fields["NodeName"], fields.get("State", ""), reason)


def failing_ids(results: list[CheckResult]) -> list[str]:
    return [r.id for r in results if r.status == Status.FAIL]


def drain_reason(ids: list[str]) -> str:
    reason = f"{REASON_PREFIX} {', '.join(ids)}"
    if len(reason) > MAX_REASON:
        reason = reason[: MAX_REASON - 4].rsplit(",", 1)[0] + ", ..."
    return reason


@dataclass(frozen=True)
class Decision:
    action: str  # drain, resume, none
    reason: str
    why: str


def decide(node: NodeState, failing: list[str]) -> Decision:
    """What to do with the node, given the failing check ids."""
    if failing:
        wanted = drain_reason(failing)
        if node.drained and not node.drained_by_llmlab:
            return Decision("none", node.reason, "already drained by someone else: their reason is kept")
        if node.drained_by_llmlab and node.reason == wanted:
            return Decision("none", wanted, "already drained by llmlab for these checks")
        return Decision("drain", wanted, "checks failed")
    if node.drained_by_llmlab:
        return Decision("resume", "", "checks pass again and llmlab had drained the node")
    if node.drained:
        return Decision("none", node.reason, "drained by someone else: left drained")
    return Decision("none", "", "healthy")


class SlurmError(RuntimeError):
    pass


def _scontrol(runner: CommandRunner, args: list[str]) -> str:
    done = runner.run(["scontrol", *args], timeout=SCONTROL_TIMEOUT)
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").splitlines()[-1]
        raise SlurmError(f"scontrol {' '.join(args)}: {detail}")
    return done.stdout


def read_node(runner: CommandRunner, name: str) -> NodeState:
    return parse_node(_scontrol(runner, ["show", "node", name, "--oneliner"]))


def apply(runner: CommandRunner, name: str, results: list[CheckResult]) -> dict[str, str]:
    """Read the node, decide, and drain or resume it; returns what was done (for the JSON report)."""
    node = read_node(runner, name)
    decision = decide(node, failing_ids(results))
    if decision.action == "drain":
        _scontrol(runner, ["update", f"NodeName={name}", "State=DRAIN", f"Reason={decision.reason}"])
    elif decision.action == "resume":
        _scontrol(runner, ["update", f"NodeName={name}", "State=RESUME"])
    return {
        "node": name,
        "state_before": node.state,
        "reason_before": node.reason,
        "action": decision.action,
        "reason": decision.reason,
        "why": decision.why,
    }


def default_node_name(environ: dict[str, str]) -> str:
    """$SLURMD_NODENAME (set for the prolog), else the short host name."""
    return environ.get("SLURMD_NODENAME") or socket.gethostname().split(".", 1)[0]


def prometheus_prefixed(text: str) -> str:
    """verify's metrics under their own names, so that they can sit beside the timer's textfile."""
    return text.replace("llmlab_verify_", "llmlab_slurm_health_")
