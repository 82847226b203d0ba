"""JupyterLab's other exposure mode: on every address, with a self-signed certificate the role makes.

A module fixture re-runs the jupyter role with TLS on 0.0.0.0; the module's last test converges the role back
to the scenario's settings (loopback, plain HTTP) and checks them, and the fixture's teardown makes sure of
it, so the other lab test modules find the service as converged whatever the order.
"""

import json
import shlex
from pathlib import Path

import pytest
import yaml

# Runs inside the container: GET a URL (HTTPS trusting only CAFILE), with or without the token.
GET = r"""
import ssl, sys, urllib.request, urllib.error
url, cafile, token = sys.argv[1], sys.argv[2], sys.argv[3]
context = ssl.create_default_context(cafile=cafile) if url.startswith("https") else None
req = urllib.request.Request(url, headers={"Authorization": "token " + token} if token else {})
try:
    print(urllib.request.urlopen(req, timeout=10, context=context).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
"""
CERT = "/etc/jupyter/tls/jupyter.crt"
JUPYTER_ONLY = "- hosts: all\n  become: true\n  roles: [jupyter]\n"
FIREWALL = Path(__file__).parents[3] / "playbooks" / "firewall.yml"


def status(host, url: str, token: str = "") -> int:
    with host.sudo():
        result = host.run(f"python3 -c {shlex.quote(GET)} {url} {CERT} '{token}'")
    assert result.rc == 0, result.stderr
    return int(result.stdout.strip())


def verify_jupyter(host) -> dict[str, str]:
    """The status of verify's Jupyter checks, from the host config (the jupyter role's contract)."""
    with host.sudo():
        run = host.run("llmlab verify --only services.jupyter,services.jupyter_auth --json")
    assert run.rc in (0, 1, 2), run.stderr
    return {check["id"]: check["status"] for check in json.loads(run.stdout)["checks"]}


def token(host) -> str:
    with host.sudo():
        return host.file("/etc/jupyter/token.env").content_string.strip().split("=", 1)[1]


@pytest.fixture(scope="module")
def jupyter_playbook(tmp_path_factory):
    path = tmp_path_factory.mktemp("plays") / "jupyter.yml"
    path.write_text(JUPYTER_ONLY, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tls_on_every_address(run_playbook, jupyter_playbook):
    try:
        tls = {"jupyter_ip": "0.0.0.0", "jupyter_tls_self_signed": True}
        run = run_playbook(jupyter_playbook, extra_vars=tls, timeout=600)
        assert run.returncode == 0, run.messages or run.stderr[-2000:]
        yield
    finally:
        back = run_playbook(jupyter_playbook, timeout=600)
        assert back.returncode == 0, back.messages or back.stderr[-2000:]


def test_tls_answers_on_the_container_address_with_the_token_only(host, tls_on_every_address):
    address = host.check_output("hostname -i").split()[0]
    # The certificate names localhost and the host's name: connect by name, trusting only that certificate.
    assert status(host, "https://localhost:8888/api/status", token(host)) == 200
    assert status(host, "https://localhost:8888/api/status") == 403
    connect = f"import socket; socket.create_connection(({address!r}, 8888), 3)"
    assert host.run(f"python3 -c {shlex.quote(connect)}").rc == 0, f"JupyterLab should listen on {address}"


def test_tls_refuses_plain_http(host, tls_on_every_address):
    code = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8888/api/status', timeout=10)"
    assert host.run(f"python3 -c {shlex.quote(code)}").rc != 0


def test_the_key_is_readable_by_the_service_user_only(host, tls_on_every_address):
    with host.sudo():
        key = host.file("/etc/jupyter/tls/jupyter.key")
        assert key.user == "root" and key.group == "jupyter" and key.mode == 0o640
        subject = host.check_output(f"openssl x509 -in {CERT} -noout -ext subjectAltName")
    assert "DNS:localhost" in subject and "IP Address:127.0.0.1" in subject


def jupyter_rules(run_playbook, host) -> list[str]:
    """Run the firewall (as site.yml does after the roles) and return its rules for Jupyter's port."""
    run = run_playbook(FIREWALL, timeout=600)
    assert run.returncode == 0, run.messages or run.stderr[-2000:]
    with host.sudo():
        rules = host.check_output("iptables -S ufw-user-input").splitlines()
    return [rule for rule in rules if "--dport 8888" in rule]


def test_the_firewall_opens_what_the_contract_declares(run_playbook, host, tls_on_every_address):
    # Jupyter's contract now declares 0.0.0.0:8888 for its users: the firewall admits firewall_allowed_cidrs.
    assert jupyter_rules(run_playbook, host) == [
        "-A ufw-user-input -s 10.20.0.0/16 -p tcp -m tcp --dport 8888 -j ACCEPT"
    ]


def test_verify_trusts_the_roles_certificate_on_every_address(host, tls_on_every_address):
    assert verify_jupyter(host) == {"services.jupyter": "OK", "services.jupyter_auth": "OK"}


def test_bound_to_the_containers_own_address_verify_reaches_it_there(
    run_playbook, jupyter_playbook, host, tls_on_every_address
):
    address = host.check_output("hostname -i").split()[0]
    run = run_playbook(jupyter_playbook, extra_vars={"jupyter_ip": address, "jupyter_tls_self_signed": True})
    assert run.returncode == 0, run.messages or run.stderr[-2000:]
    with host.sudo():
        contract = yaml.safe_load(host.file("/etc/llmlab/config.d/jupyter.yaml").content_string)
    assert contract["verify"]["jupyter_url"] == f"https://{address}:8888/"
    assert contract["listeners"]["jupyter"] == {"port": 8888, "address": address, "audience": "users"}
    assert verify_jupyter(host) == {"services.jupyter": "OK", "services.jupyter_auth": "OK"}


def test_converging_without_tls_returns_to_loopback_http(run_playbook, jupyter_playbook, host):
    run = run_playbook(jupyter_playbook, timeout=600)
    assert run.returncode == 0, run.messages or run.stderr[-2000:]
    with host.sudo():
        config = host.file("/etc/jupyter/jupyter_server_config.py").content_string
    assert 'c.ServerApp.ip = "127.0.0.1"' in config
    assert "certfile" not in config
    assert status(host, "http://127.0.0.1:8888/api/status", token(host)) == 200
    assert verify_jupyter(host) == {"services.jupyter": "OK", "services.jupyter_auth": "OK"}
    assert jupyter_rules(run_playbook, host) == []  # back on loopback: the firewall closes the port again
