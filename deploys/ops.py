"""The day-2 operations, run with pyinfra's API over the targets of an Ansible inventory.

Each action connects to the hosts (pyinfra's ssh, docker or local connector), adds its operations with
`add_op`, runs them with `run_ops`, and turns the outcome into one `HostResult` per host. Hosts are
expected to be provisioned by playbooks/site.yml: nothing here creates the lab environment, the config
or the services.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyinfra import host as current_host
from pyinfra.api import Config, FactBase, Inventory, State, operation
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.host import Host
from pyinfra.api.operation import OperationMeta, add_op
from pyinfra.api.operations import run_ops
from pyinfra.operations import files, server

from deploys.inventory import DeployError, Target
from deploys.wheel import INSTALLED_FINGERPRINT_SCRIPT, Wheel, cached_wheel, default_cache_dir

DIST_DIR = "/var/lib/llmlab/dist"  # where the llmlab role keeps the wheel, too
MANIFEST_DIR = "/var/lib/llmlab/manifests"
RC_MARKER = "__llmlab_deploys_rc="
NO_ENV = "no-env"
EXIT_NOT_INSTALLED = 127


@dataclass
class HostResult:
    """What one action did on one host."""

    host: str
    ok: bool
    changed: bool = False
    status: str = ""  # deploy/sync: changed | unchanged | failed; verify: OK | WARN | FAIL | ERROR
    detail: str = ""
    failing: list[str] = field(default_factory=list)  # verify: ids of FAIL/WARN checks
    report: dict[str, Any] | None = None  # the JSON document llmlab printed, when there is one

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "ok": self.ok,
            "changed": self.changed,
            "status": self.status,
            "detail": self.detail,
            "failing": self.failing,
            "report": self.report,
        }


class LlmlabInstalled(FactBase[str]):
    """The fingerprint of the llmlab installed in the lab environment, `absent`, or `no-env`."""

    def command(self, python: str) -> str:  # type: ignore[override]
        py = shlex.quote(python)
        script = shlex.quote(INSTALLED_FINGERPRINT_SCRIPT)
        return f"if [ -x {py} ]; then {py} -c {script}; else echo {NO_ENV}; fi"

    def process(self, output: list[str]) -> str:  # type: ignore[override]
        return "\n".join(output).strip()


@operation()
def install_wheel(python: str, wheel_path: str, fingerprint: str) -> Iterator[str]:
    """Install the uploaded wheel into the lab environment unless the same content is installed."""
    installed = current_host.get_fact(LlmlabInstalled, python=python)
    if installed == fingerprint:
        current_host.noop("this llmlab wheel is already installed")
        return
    pip = f"{shlex.quote(python)} -m pip install --quiet --disable-pip-version-check"
    # Same version, new code: pip would keep the installed copy, so the package itself is reinstalled
    # (its dependencies untouched), then pip adds any dependency that is missing - as the llmlab role does.
    yield f"{pip} --no-deps --force-reinstall {shlex.quote(wheel_path)}"
    yield f"{pip} {shlex.quote(wheel_path)}"


def _container_state(container: str) -> str | None:
    """Why a docker target cannot be used, or None when its container is running."""
    try:
        done = subprocess.run(
            ["docker", "container", "inspect", "--format", "{{.State.Running}}", container],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot ask Docker about container {container!r}: {exc}"
    if done.returncode != 0:
        return f"container {container!r} does not exist ({done.stderr.strip() or 'docker inspect failed'})"
    if done.stdout.strip() != "true":
        return f"container {container!r} is not running; start it first"
    return None


@dataclass
class Session:
    """Connected pyinfra state over the targets that could be reached."""

    state: State
    hosts: dict[str, Host]  # inventory_hostname -> connected pyinfra host
    targets: dict[str, Target]
    unreachable: dict[str, str]  # inventory_hostname -> why

    def failed(self, name: str) -> bool:
        return self.hosts[name] in self.state.failed_hosts


@contextmanager
def connect(targets: list[Target]) -> Iterator[Session]:
    """Connect to every target; the ones that cannot be reached are reported, not fatal."""
    unreachable: dict[str, str] = {}
    usable: list[Target] = []
    for target in targets:
        # pyinfra's docker connector would start a *new* container from an image of that name (and
        # commit and remove it afterwards) when no such container exists: refuse before connecting.
        problem = _container_state(target.container) if target.container else None
        if problem:
            unreachable[target.name] = problem
        else:
            usable.append(target)
    if not usable:
        yield Session(State(), {}, {}, unreachable)
        return
    inventory = Inventory(([(t.pyinfra_name, dict(t.data)) for t in usable], {}))
    state = State(inventory, Config(CONNECT_TIMEOUT=30))
    by_pyinfra_name = {t.pyinfra_name: t for t in usable}
    hosts = {by_pyinfra_name[h.name].name: h for h in inventory}
    with contextlib.suppress(PyinfraError):  # raised when every host failed to connect; reported below
        connect_all(state)
    for name, h in list(hosts.items()):
        if getattr(h.connector, "no_stop", True) is False:
            # The container stopped after the check above and pyinfra started it: never let pyinfra's
            # disconnect commit and remove a container this tool does not own.
            h.connector.no_stop = True  # type: ignore[attr-defined]
        if h not in state.active_hosts:
            unreachable[name] = f"cannot connect to {by_pyinfra_name[h.name].pyinfra_name}"
            del hosts[name]
    session = Session(state, hosts, {t.name: t for t in usable}, unreachable)
    try:
        yield session
    finally:
        if hosts:
            disconnect_all(state)


def _run(session: Session) -> None:
    if not session.hosts:
        return
    with contextlib.suppress(PyinfraError):  # raised when every host failed; each result says why
        run_ops(session.state)


def _error_text(*metas: OperationMeta | None) -> str:
    for meta in metas:
        if meta is not None and meta.is_complete() and meta.did_error():
            return (meta.stderr or meta.stdout).strip()[-2000:] or "the command failed"
    return "not run: an earlier operation failed on this host"


def _unreachable(session: Session, status: str) -> list[HostResult]:
    return [
        HostResult(name, ok=False, status=status, detail=why) for name, why in session.unreachable.items()
    ]


def _order(results: list[HostResult], targets: list[Target]) -> list[HostResult]:
    rank = {t.name: i for i, t in enumerate(targets)}
    return sorted(results, key=lambda r: rank.get(r.host, len(rank)))


def _split_rc(meta: OperationMeta) -> tuple[int, str]:
    """(exit code, stdout) of a command wrapped by `_with_rc`."""
    lines = meta.stdout_lines
    if not lines or not lines[-1].startswith(RC_MARKER):
        raise DeployError(f"unexpected output (no exit code line): {meta.stdout[-500:]}")
    return int(lines[-1].removeprefix(RC_MARKER)), "\n".join(lines[:-1])


def _with_rc(executable: str, args: list[str]) -> str:
    """A command that always succeeds for pyinfra and reports the real exit code on its last line."""
    exe = shlex.quote(executable)
    quoted = " ".join(shlex.quote(a) for a in args)
    return (
        f"if [ -x {exe} ]; then {exe} {quoted}; echo {RC_MARKER}$?; "
        f"else echo 'no llmlab at {executable}' >&2; echo {RC_MARKER}{EXIT_NOT_INSTALLED}; fi"
    )


def _not_installed(target: Target) -> str:
    return (
        f"llmlab is not installed at {target.prefix}/bin/llmlab: provision the host with playbooks/site.yml "
        f"(or run `python -m deploys deploy`)"
    )


# --- deploy ---------------------------------------------------------------------------------------------


def deploy(targets: list[Target], source: Path) -> list[HostResult]:
    """Build the wheel from `source` (or take it from the controller's cache), upload it and install it into
    each host's lab environment."""
    return _deploy_wheel(targets, cached_wheel(source, default_cache_dir()))


def _deploy_wheel(targets: list[Target], wheel: Wheel) -> list[HostResult]:
    results: list[HostResult] = []
    with connect(targets) as session:
        results += _unreachable(session, "failed")
        metas: dict[str, tuple[OperationMeta, OperationMeta, OperationMeta]] = {}
        remote_wheel = f"{DIST_DIR}/{wheel.path.name}"
        for name, h in session.hosts.items():
            target = session.targets[name]
            python = f"{target.prefix}/bin/python"
            try:
                installed = h.get_fact(LlmlabInstalled, python=python)
            except PyinfraError as exc:
                results.append(HostResult(name, ok=False, status="failed", detail=f"cannot inspect: {exc}"))
                continue
            if installed == NO_ENV:
                results.append(
                    HostResult(
                        name,
                        ok=False,
                        status="failed",
                        detail=f"no lab environment at {target.prefix} ({python} is missing): "
                        "provision the host with playbooks/site.yml first",
                    )
                )
                continue
            put = add_op(
                session.state,
                files.put,
                name="Upload the llmlab wheel",
                src=str(wheel.path),
                dest=remote_wheel,
                mode="644",
                host=h,
            )[h]
            install = add_op(
                session.state,
                install_wheel,
                name="Install llmlab into the lab environment",
                python=python,
                wheel_path=remote_wheel,
                fingerprint=wheel.fingerprint,
                host=h,
            )[h]
            version = add_op(
                session.state,
                server.shell,
                name="Show the installed llmlab version",
                commands=[f"{shlex.quote(target.prefix)}/bin/llmlab --version"],
                host=h,
            )[h]
            metas[name] = (put, install, version)
        _run(session)
        for name, (put, install, version) in metas.items():
            if session.failed(name):
                results.append(HostResult(name, ok=False, status="failed", detail=_error_text(put, install)))
                continue
            changed = put.did_change() or install.did_change()
            installed = version.stdout.strip() or f"llmlab {wheel.version}"
            action = "installed" if install.did_change() else "already installed"
            results.append(
                HostResult(
                    name,
                    ok=True,
                    changed=changed,
                    status="changed" if changed else "unchanged",
                    detail=f"{installed} ({action}, {wheel.path.name} {wheel.fingerprint[:12]})",
                )
            )
    return _order(results, targets)


# --- verify ---------------------------------------------------------------------------------------------


def verify(
    targets: list[Target], level: int = 1, only: list[str] | None = None, skip: list[str] | None = None
) -> list[HostResult]:
    """Run `llmlab verify --json` on each host; a host's status is the report's summary status, and it passes
    when the report says so (summary.passed, over the inventory's llmlab_verify_pass_codes)."""
    args = ["verify", "--json", "--level", str(level)]
    if only:
        args += ["--only", ",".join(only)]
    if skip:
        args += ["--skip", ",".join(skip)]
    results: list[HostResult] = []
    with connect(targets) as session:
        results += _unreachable(session, "ERROR")
        metas: dict[str, OperationMeta] = {}
        for name, h in session.hosts.items():
            target = session.targets[name]
            codes = target.verify_pass_codes
            host_args = [*args, "--pass-codes", ",".join(map(str, codes))] if codes else args
            metas[name] = add_op(
                session.state,
                server.shell,
                name="Run llmlab verify",
                commands=[_with_rc(f"{target.prefix}/bin/llmlab", host_args)],
                host=h,
            )[h]
        _run(session)
        for name, meta in metas.items():
            results.append(_verify_result(name, session, meta))
    return _order(results, targets)


def _verify_result(name: str, session: Session, meta: OperationMeta) -> HostResult:
    if session.failed(name) or not meta.is_complete():
        return HostResult(name, ok=False, status="ERROR", detail=_error_text(meta))
    try:
        rc, stdout = _split_rc(meta)
    except DeployError as exc:
        return HostResult(name, ok=False, status="ERROR", detail=str(exc))
    if rc == EXIT_NOT_INSTALLED:
        return HostResult(name, ok=False, status="ERROR", detail=_not_installed(session.targets[name]))
    try:
        report = json.loads(stdout)
        summary = report["summary"]
        status = str(summary["status"])
    except (ValueError, KeyError, TypeError):
        why = meta.stderr.strip() or stdout.strip()
        return HostResult(name, ok=False, status="ERROR", detail=f"llmlab verify exited {rc}: {why[-1500:]}")
    if not isinstance(summary.get("passed"), bool):
        return HostResult(
            name,
            ok=False,
            status="ERROR",
            detail="the host's llmlab reports no summary.passed (older than this checkout): "
            "run `python -m deploys deploy` first",
            report=report,
        )
    failing = [c["id"] for c in report.get("checks", []) if c.get("status") in ("FAIL", "WARN")]
    counts = summary.get("counts", {})
    detail = ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f"; exit {rc}"
    return HostResult(
        name, ok=summary["passed"], status=status, detail=detail, failing=failing, report=report
    )


# --- models sync ----------------------------------------------------------------------------------------


def check_manifest(manifest: Path) -> None:
    """Validate the manifest on the controller with llmlab's own schema before any host sees it."""
    if not manifest.is_file():
        raise DeployError(f"manifest {manifest}: no such file")
    from llmlab.config import ConfigError
    from llmlab.models.sync import load_sync_manifest

    try:
        load_sync_manifest(manifest)
    except ConfigError as exc:
        raise DeployError(f"manifest {exc}") from None


def models_sync(targets: list[Target], manifest: Path) -> list[HostResult]:
    """Upload the manifest and run `llmlab models sync MANIFEST --json`; changed comes from its JSON."""
    check_manifest(manifest)
    remote = f"{MANIFEST_DIR}/{manifest.name}"
    results: list[HostResult] = []
    with connect(targets) as session:
        results += _unreachable(session, "failed")
        metas: dict[str, tuple[OperationMeta, OperationMeta]] = {}
        for name, h in session.hosts.items():
            llmlab = f"{session.targets[name].prefix}/bin/llmlab"
            put = add_op(
                session.state,
                files.put,
                name="Upload the model manifest",
                src=str(manifest),
                dest=remote,
                mode="644",
                host=h,
            )[h]
            run = add_op(
                session.state,
                server.shell,
                name="Run llmlab models sync",
                commands=[_with_rc(llmlab, ["models", "sync", remote, "--json", "--quiet"])],
                host=h,
            )[h]
            metas[name] = (put, run)
        _run(session)
        for name, (put, run) in metas.items():
            results.append(_sync_result(name, session, put, run))
    return _order(results, targets)


def _sync_result(name: str, session: Session, put: OperationMeta, run: OperationMeta) -> HostResult:
    if session.failed(name) or not run.is_complete():
        return HostResult(name, ok=False, status="failed", detail=_error_text(put, run))
    try:
        rc, stdout = _split_rc(run)
    except DeployError as exc:
        return HostResult(name, ok=False, status="failed", detail=str(exc))
    if rc == EXIT_NOT_INSTALLED:
        return HostResult(name, ok=False, status="failed", detail=_not_installed(session.targets[name]))
    try:
        report = json.loads(stdout)
        ok, changed = bool(report["ok"]), bool(report.get("changed", False))
    except (ValueError, KeyError, TypeError):
        why = run.stderr.strip() or stdout.strip()
        return HostResult(
            name, ok=False, status="failed", detail=f"llmlab models sync exited {rc}: {why[-1500:]}"
        )
    models = report.get("models", [])
    actions = "; ".join(
        f"{m['action']} {m['name']}" + (f" ({m['detail']})" if m.get("detail") else "") for m in models
    )
    failing = [m["name"] for m in models if m.get("action") == "failed"]
    if "error" in report:
        actions = f"{actions}; {report['error']}" if actions else str(report["error"])
    status = "failed" if not ok else ("changed" if changed else "unchanged")
    return HostResult(
        name,
        ok=ok,
        changed=changed,
        status=status,
        detail=actions or "no models",
        failing=failing,
        report=report,
    )
