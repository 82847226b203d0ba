"""Which TCP ports the host firewall admits from anywhere, read from `iptables -S` / `ip6tables -S`.

services.listening_ports uses it to tell a job's listener that only the cluster peers can reach (the
firewall admits those ports from specific source addresses only, e.g. the trusted cluster peers) from one
that is open to the world. ufw and iptables-nft both show their rules there.

The reading is conservative: only ACCEPT rules are considered (a DROP before an ACCEPT is ignored), so a port
is called closed to the world only when no ACCEPT rule reachable from INPUT admits new connections to it from
any source. A rule restricted by source address, input interface, connection state, destination address or a
protocol other than TCP admits no stranger.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

ALL_PORTS: tuple[tuple[int, int], ...] = ((1, 65535),)
_ANY_SOURCE = {"0.0.0.0/0", "::/0"}


@dataclass
class Exposure:
    """The INPUT policy drops by default, and these TCP port ranges are admitted from any source."""

    default_deny: bool
    world_open: list[tuple[int, int]] = field(default_factory=list)

    def open_to_world(self, port: int) -> bool:
        return not self.default_deny or any(lo <= port <= hi for lo, hi in self.world_open)


@dataclass(frozen=True)
class _Rule:
    chain: str
    target: str
    restricted: bool  # admits only some sources / states / interfaces / protocols
    ports: tuple[tuple[int, int], ...] | None  # None: every port


def _ports(spec: str) -> tuple[tuple[int, int], ...]:
    ranges = []
    for part in spec.split(","):
        lo, _, hi = part.partition(":")
        ranges.append((int(lo or 1), int(hi or lo or 65535)))
    return tuple(ranges)


def _parse_rule(words: list[str]) -> _Rule:
    chain, target, restricted, ports = words[1], "", False, None
    i = 2
    while i < len(words):
        word = words[i]
        if word == "!":  # "! -s x": a negated match still restricts
            restricted = True
            i += 1
            continue
        nxt = words[i + 1] if i + 1 < len(words) else ""
        takes_value = bool(nxt) and nxt != "!" and not (nxt.startswith("-") and not nxt[1:2].isdigit())
        value = nxt if takes_value else ""
        if word in ("-j", "-g"):
            target = value
        elif word == "-s":
            restricted = restricted or value not in _ANY_SOURCE
        elif word in ("-i", "-d", "--ctstate", "--state", "--dst-type", "--src-type", "--src-range"):
            restricted = True
        elif word == "-p":
            restricted = restricted or value not in ("tcp", "all", "6")
        elif word in ("--dport", "--dports", "--destination-port", "--destination-ports"):
            ports = _ports(value)
        i += 2 if takes_value else 1
    return _Rule(chain, target, restricted, ports)


def _intersect(a: tuple | None, b: tuple | None) -> tuple | None:
    if a is None:
        return b
    if b is None:
        return a
    out = [(max(x[0], y[0]), min(x[1], y[1])) for x in a for y in b if max(x[0], y[0]) <= min(x[1], y[1])]
    return tuple(out)


def parse_rules(text: str) -> Exposure:
    """An Exposure from `iptables -S` output (all chains of the filter table)."""
    policy = ""
    rules: dict[str, list[_Rule]] = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) >= 3 and words[0] == "-P" and words[1] == "INPUT":
            policy = words[2]
        elif len(words) >= 2 and words[0] == "-A":
            rule = _parse_rule(words)
            rules.setdefault(rule.chain, []).append(rule)
    open_ranges: list[tuple[int, int]] = []

    def walk(chain: str, restricted: bool, ports: tuple | None, seen: frozenset[str]) -> None:
        for rule in rules.get(chain, []):
            r = restricted or rule.restricted
            p = _intersect(ports, rule.ports)
            if r or p == ():
                continue
            if rule.target == "ACCEPT":
                open_ranges.extend(p if p is not None else ALL_PORTS)
            elif rule.target in rules and rule.target not in seen:
                walk(rule.target, r, p, seen | {rule.target})

    walk("INPUT", False, None, frozenset({"INPUT"}))
    return Exposure(policy in ("DROP", "REJECT"), sorted(set(open_ranges)))


def read_exposure(run) -> Exposure | str:
    """Both address families: a port is open to the world if either admits it. `run(argv)` -> CommandResult.

    Returns a message instead when the rules cannot be read (not root, no iptables).
    """
    exposures = []
    for tool in ("iptables", "ip6tables"):
        done = run([tool, "-S"])
        if done.returncode != 0:
            return f"cannot read the firewall with {tool} -S: {(done.stderr.strip() or 'no output')}"
        exposures.append(parse_rules(done.stdout))
    return Exposure(
        all(e.default_deny for e in exposures),
        sorted({r for e in exposures for r in e.world_open}),
    )
