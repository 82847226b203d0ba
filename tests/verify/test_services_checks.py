"""services checks through fake Docker, network and command-runner answers."""

from __future__ import annotations

import json

import pytest
from verify_fakes import FakeDocker, FakeNetwork, FakeRunner, expect, make_ctx, run_check

from llmlab.verify.result import Status
from llmlab.verify.sources import CommandResult, DockerState, HttpAnswer, Listener

JUPYTER = {"verify": {"expect": {"jupyter": True}, "jupyter_url": "http://127.0.0.1:8888/lab-base/"}}
API = "http://127.0.0.1:8888/lab-base/api/contents"


def test_docker_fails_only_when_expected():
    down = FakeDocker(DockerState(False, error="Cannot connect to the Docker daemon"))
    assert run_check("services.docker", make_ctx(expect(docker=True), docker=down)).status == Status.FAIL
    up = FakeDocker(DockerState(True, "26.1.5", ("nvidia", "runc")))
    assert run_check("services.docker", make_ctx(expect(docker=False), docker=up)).status == Status.SKIP
    assert run_check("services.docker", make_ctx(expect(docker=True), docker=up)).status == Status.OK


def test_nvidia_runtime_is_required_on_gpu_hosts_with_docker():
    plain = FakeDocker(DockerState(True, "26.1.5", ("runc",)))
    result = run_check("services.nvidia_runtime", make_ctx(expect(docker=True, gpu_count=8), docker=plain))
    assert result.status == Status.FAIL and "nvidia-ctk" in result.hint
    assert (
        run_check("services.nvidia_runtime", make_ctx(expect(docker=True), docker=plain)).status
        == Status.SKIP
    )
    gpu = FakeDocker(DockerState(True, "26.1.5", ("nvidia", "runc")))
    assert (
        run_check("services.nvidia_runtime", make_ctx(expect(docker=True, gpu_count=8), docker=gpu)).status
        == Status.OK
    )


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (HttpAnswer(200), Status.FAIL),
        (HttpAnswer(403), Status.OK),
        (HttpAnswer(302, "/lab-base/login?next=%2Flab-base%2Fapi%2Fcontents"), Status.OK),
        (HttpAnswer(302, "/elsewhere"), Status.WARN),
        (HttpAnswer(404), Status.WARN),
        (HttpAnswer(None, error="Connection refused"), Status.FAIL),
    ],
)
def test_jupyter_must_refuse_an_unauthenticated_api_request(answer, status):
    result = run_check("services.jupyter_auth", make_ctx(JUPYTER, network=FakeNetwork(answers={API: answer})))
    assert result.status == status


def test_jupyter_answering_200_without_a_token_says_why_it_matters():
    result = run_check(
        "services.jupyter_auth", make_ctx(JUPYTER, network=FakeNetwork(answers={API: HttpAnswer(200)}))
    )
    assert "without a token" in result.message and "password or token" in result.hint


def test_jupyter_up_needs_an_http_answer_and_is_skipped_when_not_expected():
    base = "http://127.0.0.1:8888/lab-base/"
    assert run_check("services.jupyter", make_ctx(JUPYTER, network=FakeNetwork())).status == Status.FAIL
    login = FakeNetwork(answers={base: HttpAnswer(302, "/lab-base/login")})
    assert run_check("services.jupyter", make_ctx(JUPYTER, network=login)).status == Status.OK
    assert run_check("services.jupyter", make_ctx()).status == Status.SKIP
    assert run_check("services.jupyter_auth", make_ctx()).status == Status.SKIP


def test_a_port_open_beyond_loopback_that_is_not_allowed_fails():
    sockets = [
        Listener("0.0.0.0", 22, 1, "sshd"),
        Listener("127.0.0.1", 5432, 40, "postgres"),
        Listener("::1", 6006, 41, "tensorboard"),
        Listener("::", 8888, 50, "jupyter-lab"),
        Listener("10.0.0.5", 6379, 60, "redis-server"),
    ]
    ctx = make_ctx({"verify": {"allowed_ports": [22, 8888]}}, network=FakeNetwork(sockets=sockets))
    result = run_check("services.listening_ports", ctx)
    assert result.status == Status.FAIL
    assert (
        result.message
        == "not in allowed_ports or the contracts' listeners: 10.0.0.5:6379 (redis-server pid 60)"
    )
    assert result.value == [22, 6379, 8888]
    assert result.items == {"unexpected": 1.0}


def test_loopback_and_allowed_listeners_pass():
    sockets = [Listener("::ffff:127.0.0.1", 9000), Listener("0.0.0.0", 22)]
    result = run_check("services.listening_ports", make_ctx(network=FakeNetwork(sockets=sockets)))
    assert result.status == Status.OK


def nft(*objects: dict) -> CommandResult:
    return CommandResult(0, json.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}}, *objects]}))


def chain(policy: str, family: str = "inet", hook: str = "input") -> dict:
    return {"chain": {"family": family, "table": "filter", "name": "input", "hook": hook, "policy": policy}}


def rule(*expr: dict) -> dict:
    return {"rule": {"family": "inet", "table": "filter", "chain": "input", "expr": list(expr)}}


ACCEPT_SSH = {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}}


@pytest.mark.parametrize(
    ("ruleset", "status"),
    [
        (nft(chain("drop"), rule(ACCEPT_SSH, {"accept": None})), Status.OK),
        (nft(chain("accept")), Status.FAIL),
        (nft(chain("drop"), rule({"accept": None})), Status.FAIL),  # a drop policy after an accept-all rule
        (nft(chain("drop", hook="forward")), Status.FAIL),  # docker's forward chain is not inbound filtering
        (nft(), Status.FAIL),
    ],
)
def test_firewall_default_deny_is_read_from_nftables_json(ruleset, status):
    runner = FakeRunner({("nft", "-j", "list", "ruleset"): ruleset})
    assert run_check("services.firewall", make_ctx(expect(firewall=True), runner=runner)).status == status


def test_firewall_falls_back_to_iptables_and_fails_when_nothing_can_be_read():
    legacy = FakeRunner(
        {
            ("iptables", "-S", "INPUT"): CommandResult(
                0, "-P INPUT DROP\n-A INPUT -p tcp --dport 22 -j ACCEPT\n"
            )
        }
    )
    assert run_check("services.firewall", make_ctx(expect(firewall=True), runner=legacy)).status == Status.OK
    nothing = run_check("services.firewall", make_ctx(expect(firewall=True), runner=FakeRunner()))
    assert nothing.status == Status.FAIL
    assert nothing.message == "cannot read the firewall: nft: command not found; iptables: command not found"
    assert run_check("services.firewall", make_ctx(runner=FakeRunner())).status == Status.SKIP


HUB = {
    "verify": {"expect": {"jupyter": True}, "jupyter_url": "https://127.0.0.1:8888/", "jupyter_kind": "hub"}
}


@pytest.mark.parametrize(("answer", "status"), [(HttpAnswer(403), Status.OK), (HttpAnswer(200), Status.FAIL)])
def test_a_hub_must_refuse_an_unauthenticated_request_for_its_user_list(answer, status):
    network = FakeNetwork(answers={"https://127.0.0.1:8888/hub/api/users": answer})
    assert run_check("services.jupyter_auth", make_ctx(HUB, network=network)).status == status


def _pem(der: bytes) -> str:
    import ssl

    return ssl.DER_cert_to_PEM_cert(der)


def test_jupyter_must_serve_the_certificate_it_was_given(tmp_path):
    given = tmp_path / "jupyter.crt"
    given.write_text(_pem(b"the certificate the role made"), encoding="ascii")
    config = {"verify": {**HUB["verify"], "jupyter_tls_certfile": str(given)}}
    url = "https://127.0.0.1:8888/"
    same = FakeNetwork(certificates={url: b"the certificate the role made"})
    assert run_check("services.jupyter_tls", make_ctx(config, network=same)).status == Status.OK
    other = FakeNetwork(certificates={url: b"somebody else's certificate"})
    result = run_check("services.jupyter_tls", make_ctx(config, network=other))
    assert result.status == Status.FAIL and "is not" in result.message
    assert run_check("services.jupyter_tls", make_ctx(config, network=FakeNetwork())).status == Status.FAIL
    assert run_check("services.jupyter_tls", make_ctx(HUB, network=same)).status == Status.SKIP
