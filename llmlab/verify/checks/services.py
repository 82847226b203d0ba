"""services: Docker and its NVIDIA runtime, JupyterLab (answers, refuses strangers), firewall, open ports."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import ssl
import urllib.parse
from dataclasses import dataclass

from llmlab.verify.context import VerifyContext
from llmlab.verify.result import CheckResult, check, fail, ok, skip, warn
from llmlab.verify.sources import DockerState, HttpAnswer, Listener


def _docker(ctx: VerifyContext) -> DockerState:
    return ctx.once("docker", lambda: ctx.sources.docker.state(timeout=min(ctx.timeout, 5)))


@check("services.docker", "the Docker daemon answers (docker SDK), when expect.docker")
def docker_daemon(ctx: VerifyContext) -> CheckResult:
    if not ctx.settings.expect.docker:
        return skip("Docker not expected (verify.expect.docker=false)")  # not asked: the SDK import is slow
    state = _docker(ctx)
    if state.answering:
        return ok(f"Docker {state.version} answers", value=state.version, expected=True)
    return fail(
        f"Docker does not answer: {state.error}",
        value=None,
        expected=True,
        hint="systemctl status docker; journalctl -u docker (docker role)",
    )


def nvidia_runtime_expected(ctx: VerifyContext) -> bool:
    expect = ctx.settings.expect
    if expect.nvidia_runtime is not None:
        return expect.nvidia_runtime
    return expect.docker and expect.gpu_count > 0


@check(
    "services.nvidia_runtime", "Docker has the NVIDIA runtime registered (when Docker and GPUs are expected)"
)
def nvidia_runtime(ctx: VerifyContext) -> CheckResult:
    if not nvidia_runtime_expected(ctx):
        return skip("not expected (needs expect.docker and GPUs, or expect.nvidia_runtime=true)")
    state = _docker(ctx)
    if not state.answering:
        return fail(f"Docker does not answer: {state.error}", expected="nvidia", hint="see services.docker")
    runtimes = list(state.runtimes)
    if "nvidia" not in runtimes:
        return fail(
            f"runtimes: {', '.join(runtimes) or 'none'}; no 'nvidia'",
            value=runtimes,
            expected="nvidia",
            hint="install nvidia-container-toolkit and run `nvidia-ctk runtime configure --runtime=docker`",
        )
    return ok(f"runtimes: {', '.join(runtimes)}", value=runtimes, expected="nvidia")


def _jupyter_base(ctx: VerifyContext) -> str:
    url = ctx.settings.jupyter_url
    return url if url.endswith("/") else url + "/"


def _jupyter_hint(ctx: VerifyContext) -> str:
    return f"systemctl status {ctx.settings.jupyter_service}; verify.jupyter_url comes from the jupyter role"


def _jupyter_get(ctx: VerifyContext, url: str) -> HttpAnswer:
    tls = ctx.settings
    return ctx.sources.network.http_get(
        url, timeout=5, verify_tls=tls.jupyter_tls_verify, ca_file=tls.jupyter_ca_file
    )


# What an unauthenticated client must be refused: the single server's contents, the hub's user list.
JUPYTER_API = {"single": "api/contents", "hub": "hub/api/users"}


@check("services.jupyter", "JupyterLab answers at jupyter_url, when expect.jupyter")
def jupyter_up(ctx: VerifyContext) -> CheckResult:
    url = _jupyter_base(ctx)
    if not ctx.settings.expect.jupyter:
        return skip("JupyterLab not expected (verify.expect.jupyter=false)")
    answer = _jupyter_get(ctx, url)
    if answer.status is None:
        return fail(
            f"{url} does not answer: {answer.error}", expected="an HTTP answer", hint=_jupyter_hint(ctx)
        )
    if answer.status >= 500:
        return fail(f"{url} answers HTTP {answer.status}", value=answer.status, hint=_jupyter_hint(ctx))
    return ok(f"{url} answers HTTP {answer.status}", value=answer.status, expected="an HTTP answer")


@check(
    "services.jupyter_auth", "JupyterLab refuses an unauthenticated API request (401/403 or a login redirect)"
)
def jupyter_auth(ctx: VerifyContext) -> CheckResult:
    if not ctx.settings.expect.jupyter:
        return skip("JupyterLab not expected (verify.expect.jupyter=false)")
    url = urllib.parse.urljoin(_jupyter_base(ctx), JUPYTER_API[ctx.settings.jupyter_kind])
    answer = _jupyter_get(ctx, url)
    expected = "401/403 or redirect to login"
    if answer.status is None:
        return fail(
            f"cannot check, {url} does not answer: {answer.error}", expected=expected, hint=_jupyter_hint(ctx)
        )
    kw = {"value": answer.status, "expected": expected}
    if answer.status in (401, 403):
        return ok(f"unauthenticated request refused (HTTP {answer.status})", **kw)
    if 300 <= answer.status < 400 and "login" in answer.location:
        return ok(f"unauthenticated request redirected to {answer.location}", **kw)
    if 200 <= answer.status < 300:
        return fail(
            f"{url} answered HTTP {answer.status} without a token: anyone who reaches the port owns the host",
            hint="set a password or token (jupyter role, secret via ansible-vault) and restart JupyterLab",
            **kw,
        )
    return warn(
        f"{url} answered HTTP {answer.status}: not a Jupyter API answer?", hint=_jupyter_hint(ctx), **kw
    )


@check("services.jupyter_tls", "Jupyter serves the certificate it was given (verify.jupyter_tls_certfile)")
def jupyter_tls(ctx: VerifyContext) -> CheckResult:
    certfile = ctx.settings.jupyter_tls_certfile
    if not ctx.settings.expect.jupyter or certfile is None:
        return skip("no certificate to compare (verify.expect.jupyter and verify.jupyter_tls_certfile)")
    url = _jupyter_base(ctx)
    if not url.startswith("https://"):
        return fail(f"{url} is not https:// but {certfile} is configured", hint=_jupyter_hint(ctx))
    try:
        expected = ssl.PEM_cert_to_DER_cert(certfile.read_text(encoding="ascii"))
    except (OSError, ValueError) as exc:
        return fail(f"cannot read {certfile}: {exc}", hint="the jupyter role's jupyter_tls_certfile")
    served = ctx.sources.network.peer_certificate(url, timeout=5)
    if isinstance(served, str):
        return fail(f"{url} presents no certificate: {served}", hint=_jupyter_hint(ctx))
    got, want = hashlib.sha256(served).hexdigest(), hashlib.sha256(expected).hexdigest()
    if got != want:
        return fail(
            f"{url} serves a certificate (sha256 {got[:16]}...) that is not {certfile} ({want[:16]}...)",
            value=got,
            expected=want,
            hint="restart the service after a certificate change; check nothing else holds the port",
        )
    return ok(f"{url} serves {certfile} (sha256 {got[:16]}...)", value=got, expected=want)


@dataclass(frozen=True)
class FirewallState:
    tool: str
    default_deny: bool
    detail: str


def read_firewall(ctx: VerifyContext) -> FirewallState | str:
    """The inbound policy from nftables' JSON (it also shows ufw/iptables-nft rules), else `iptables -S`."""
    nft = ctx.sources.runner.run(["nft", "-j", "list", "ruleset"], timeout=ctx.timeout)
    if nft.returncode == 0:
        return _nft_state(json.loads(nft.stdout or "{}").get("nftables", []))
    legacy = ctx.sources.runner.run(["iptables", "-S", "INPUT"], timeout=ctx.timeout)
    if legacy.returncode == 0:
        policy = next(
            (line.split()[2] for line in legacy.stdout.splitlines() if line.startswith("-P INPUT")), "?"
        )
        return FirewallState("iptables", policy in ("DROP", "REJECT"), f"INPUT policy {policy}")
    errors = [(r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1] for r in (nft, legacy)]
    return "cannot read the firewall: " + "; ".join(errors)  # not installed, or not run as root


def _nft_state(objects: list[dict]) -> FirewallState:
    chains = [o["chain"] for o in objects if "chain" in o]
    inputs = [c for c in chains if c.get("hook") == "input" and c.get("family") in ("ip", "inet")]
    if not inputs:
        return FirewallState("nftables", False, "no input chain: inbound traffic is not filtered")
    rules = [o["rule"] for o in objects if "rule" in o]

    def accepts_everything(chain: dict) -> bool:
        return any(
            r["family"] == chain["family"]
            and r["table"] == chain["table"]
            and r["chain"] == chain["name"]
            and r.get("expr") == [{"accept": None}]
            for r in rules
        )

    denying = [c for c in inputs if c.get("policy") == "drop" and not accepts_everything(c)]
    names = ", ".join(f"{c['family']} {c['table']} {c['name']} policy {c.get('policy')}" for c in inputs)
    return FirewallState("nftables", bool(denying), names)


@check(
    "services.firewall", "a firewall filters inbound traffic with a default-deny policy, when expect.firewall"
)
def firewall(ctx: VerifyContext) -> CheckResult:
    expected = ctx.settings.expect.firewall
    state = read_firewall(ctx)
    if isinstance(state, str):
        if not expected:
            return skip(f"firewall not expected; {state}")
        return fail(
            state, expected="default deny", hint="run verify as root; install nftables (firewall role)"
        )
    value = f"{state.tool}: {state.detail}"
    if not expected:
        return skip(
            f"firewall not expected (verify.expect.firewall=false); {value}", value=state.default_deny
        )
    if not state.default_deny:
        return fail(
            f"no default-deny inbound policy ({value})",
            value=False,
            expected="default deny",
            hint="apply the firewall role (input chain policy drop, allow only verify.allowed_ports)",
        )
    return ok(f"default-deny inbound ({value})", value=True, expected="default deny")


def is_loopback(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


@check(
    "services.listening_ports",
    "no TCP port listens beyond loopback unless allowed_ports or a role's contract (listeners) declares it, "
    "or, with expect.firewall, the firewall admits it only from specific sources (cluster peers)",
)
def listening_ports(ctx: VerifyContext) -> CheckResult:
    declared = {ls.port for ls in ctx.config.listeners.values() if ls.proto == "tcp"}
    allowed = set(ctx.settings.allowed_ports) | declared
    exposed = [s for s in ctx.sources.network.listeners() if not is_loopback(s.ip)]
    stray: dict[int, list[Listener]] = {}
    for s in exposed:
        if s.port not in allowed:
            stray.setdefault(s.port, []).append(s)
    # A job's listeners (torchrun's rendezvous, gloo/NCCL's ephemeral ports) are fine where the firewall
    # admits them only from the cluster peers; one the firewall admits from anywhere is still a FAIL.
    firewalled: list[int] = []
    note = ""
    if stray and ctx.settings.expect.firewall:
        from llmlab.verify.exposure import read_exposure

        exposure = read_exposure(lambda argv: ctx.sources.runner.run(argv, timeout=ctx.timeout))
        if isinstance(exposure, str):
            note = f" ({exposure})"
        else:
            firewalled = sorted(p for p in stray if not exposure.open_to_world(p))
            stray = {p: ls for p, ls in stray.items() if p not in firewalled}
    open_ports = sorted({s.port for s in exposed})
    kw = {"value": open_ports, "expected": sorted(allowed), "items": {"unexpected": float(len(stray))}}
    behind = f"; reachable only from admitted sources (firewall): {', '.join(map(str, firewalled))}"
    if stray:
        shown = [
            f"{ls[0].ip}:{port} ({ls[0].process or 'unknown'}{f' pid {ls[0].pid}' if ls[0].pid else ''})"
            for port, ls in sorted(stray.items())
        ]
        return fail(
            f"not in allowed_ports or the contracts' listeners: {', '.join(shown)}{note}"
            f"{behind if firewalled else ''}",
            hint="stop the service or bind it to 127.0.0.1; if it is meant to be reachable, allow it",
            **kw,
        )
    return ok(
        f"open beyond loopback: {', '.join(map(str, open_ports)) or 'none'}{behind if firewalled else ''}",
        **kw,
    )
