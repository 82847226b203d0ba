"""Which ports the firewall admits from anywhere, and listening_ports' use of it (a job's listeners)."""

from __future__ import annotations

from pathlib import Path

from verify_fakes import FakeNetwork, FakeRunner, make_ctx, run_check

from llmlab.verify.exposure import parse_rules
from llmlab.verify.result import Status
from llmlab.verify.sources import CommandResult, Listener

# `iptables -S` on a cluster member converged by molecule/cluster: ufw, SSH and port 8000 from anywhere,
# every TCP port from the two peers.
UFW = (Path(__file__).parent / "ufw-cluster-iptables.txt").read_text()


def test_ufw_rules_open_ssh_and_8000_to_the_world_and_the_rest_to_peers_only() -> None:
    exposure = parse_rules(UFW)
    assert exposure.default_deny
    assert exposure.world_open == [(22, 22), (8000, 8000)]
    assert not exposure.open_to_world(29500) and not exposure.open_to_world(41234)
    assert exposure.open_to_world(8000)


def test_accept_policy_or_an_unrestricted_accept_opens_everything() -> None:
    assert parse_rules("-P INPUT ACCEPT\n").open_to_world(29500)
    assert parse_rules("-P INPUT DROP\n-A INPUT -j ACCEPT\n").open_to_world(29500)
    rules = "-P INPUT DROP\n-N x\n-A INPUT -p tcp -j x\n-A x -m multiport --dports 100:200,300 -j ACCEPT\n"
    exposure = parse_rules(rules)
    assert exposure.world_open == [(100, 200), (300, 300)]


def test_restricted_accepts_admit_no_stranger() -> None:
    rules = "\n".join(
        [
            "-P INPUT DROP",
            "-A INPUT -i lo -j ACCEPT",
            "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-A INPUT -p udp -m udp --dport 5353 -j ACCEPT",
            "-A INPUT -s 10.0.0.7/32 -p tcp -j ACCEPT",
            "-A INPUT ! -s 10.0.0.0/8 -p tcp --dport 9 -j ACCEPT",
        ]
    )
    assert parse_rules(rules).world_open == []


def firewall(v4: str, v6: str = "-P INPUT DROP\n") -> FakeRunner:
    return FakeRunner(
        {("iptables", "-S"): CommandResult(0, v4, ""), ("ip6tables", "-S"): CommandResult(0, v6, "")}
    )


JOB = [
    Listener("0.0.0.0", 22),
    Listener("0.0.0.0", 6818, 7, "slurmd"),
    Listener("0.0.0.0", 29500, 9, "torchrun"),
]


def test_a_job_listener_reachable_only_from_peers_is_not_a_fail() -> None:
    ctx = make_ctx(
        {"verify": {"allowed_ports": [22, 6818], "expect": {"firewall": True}}},
        network=FakeNetwork(sockets=JOB),
        runner=firewall(UFW),
    )
    result = run_check("services.listening_ports", ctx)
    assert result.status == Status.OK, result.message
    assert "reachable only from admitted sources (firewall): 29500" in result.message


def test_a_listener_open_to_the_world_still_fails() -> None:
    sockets = [*JOB, Listener("0.0.0.0", 8000, 11, "python3")]
    ctx = make_ctx(
        {"verify": {"allowed_ports": [22, 6818], "expect": {"firewall": True}}},
        network=FakeNetwork(sockets=sockets),
        runner=firewall(UFW),
    )
    result = run_check("services.listening_ports", ctx)
    assert result.status == Status.FAIL
    assert result.message.startswith("not in allowed_ports or the contracts' listeners: 0.0.0.0:8000")
    assert result.items == {"unexpected": 1.0}


def test_unreadable_rules_or_no_firewall_expected_keep_the_strict_check() -> None:
    unreadable = make_ctx(
        {"verify": {"allowed_ports": [22, 6818], "expect": {"firewall": True}}},
        network=FakeNetwork(sockets=JOB),
        runner=FakeRunner(),
    )
    result = run_check("services.listening_ports", unreadable)
    assert result.status == Status.FAIL and "cannot read the firewall" in result.message
    no_firewall = make_ctx(
        {"verify": {"allowed_ports": [22, 6818]}}, network=FakeNetwork(sockets=JOB), runner=firewall(UFW)
    )
    assert run_check("services.listening_ports", no_firewall).status == Status.FAIL
