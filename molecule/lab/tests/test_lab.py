"""Behaviour of the lab roles on a converged host (testinfra, run by `molecule verify`)."""

import json
import shlex

import pytest

PREFIX = "/opt/llmlab/env"
PY = f"{PREFIX}/bin/python"

# Runs inside the container: GET a JupyterLab URL, with or without the token; prints the status code.
HTTP_GET = r"""
import sys, urllib.request, urllib.error
url, token = sys.argv[1], sys.argv[2]
req = urllib.request.Request(url, headers={"Authorization": "token " + token} if token else {})
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None
try:
    print(urllib.request.build_opener(NoRedirect).open(req, timeout=10).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
"""


def jupyter_token(host) -> str:
    with host.sudo():
        content = host.file("/etc/jupyter/token.env").content_string
    return content.strip().split("=", 1)[1]


def http_status(host, url: str, token: str = "") -> int:
    result = host.run(f"python3 -c {shlex.quote(HTTP_GET)} {url} '{token}'")
    assert result.rc == 0, result.stderr
    return int(result.stdout.strip())


def main_pid(host, unit: str) -> int:
    return int(host.run(f"systemctl show --property MainPID --value {unit}").stdout.strip())


# --- python_env ---


@pytest.mark.parametrize("user", ["root", "alice"])
def test_the_environment_imports_the_ml_stack(host, user):
    code = (
        "import torch, transformers, peft, bitsandbytes, accelerate, datasets; "
        "print(torch.__version__, transformers.__version__, peft.__version__, bitsandbytes.__version__)"
    )
    result = host.run(f"su - {user} -c \"{PY} -c '{code}'\"")
    assert result.rc == 0, result.stderr
    assert result.stdout.split() == ["2.13.0+cpu", "5.23.0", "0.21.2", "0.50.2"]


def test_a_host_without_an_mlflow_server_has_dpo_and_tracking_clients_at_their_pins(host):
    # No mlflow role in this play and no python_env_*_version in the inventory: python_env's defaults alone
    # put TRL (method: dpo), TensorBoard and the MLflow client into every lab environment.
    code = (
        "import importlib.metadata as m, trl, mlflow.tracking; "
        "print(*(m.version(p) for p in ['trl', 'tensorboard', 'mlflow-skinny']))"
    )
    result = host.run(f"su - alice -c {shlex.quote(f'{PY} -c {shlex.quote(code)}')}")
    assert result.rc == 0, result.stderr
    assert result.stdout.split() == ["1.16.0", "2.21.0", "3.17.2"]


def test_the_environment_is_owned_by_root_and_shared_with_the_lab_group(host):
    prefix = host.file(PREFIX)
    assert prefix.user == "root"
    assert prefix.group == "llmlab"
    assert not host.run(f"su - alice -c 'touch {PREFIX}/lib/intruder'").succeeded


def test_the_environment_pip_uses_its_own_config(host):
    conf = host.file(f"{PREFIX}/pip.conf")
    assert conf.contains("^cert = /etc/llmlab-test/ca-bundle.crt$")
    assert host.run(f"{PREFIX}/bin/pip check").rc == 0


def test_uv_installed_the_ml_stack(host):
    # Every installer records itself in the distribution's INSTALLER file.
    for package in ("torch", "transformers", "peft"):
        installer = host.run(f"cat {PREFIX}/lib/python3.*/site-packages/{package}-*.dist-info/INSTALLER")
        assert installer.stdout.strip() == "uv", (package, installer.stdout, installer.stderr)


def test_a_kernel_spec_runs_the_environment(host):
    result = host.run(f"{PREFIX}/bin/jupyter kernelspec list --json")
    assert result.rc == 0, result.stderr
    spec = json.loads(result.stdout)["kernelspecs"]["llmlab"]["spec"]
    assert spec["argv"][0] == PY
    assert spec["display_name"] == "Python (llmlab)"


# --- jupyter ---


def test_jupyterlab_runs_as_the_unprivileged_service_user(host):
    service = host.service("jupyter")
    assert service.is_running
    assert service.is_enabled
    pid = main_pid(host, "jupyter")
    assert pid > 0
    owner = host.run(f"stat -c %U /proc/{pid}").stdout.strip()
    assert owner == "jupyter"
    assert host.user("jupyter").shell == "/usr/sbin/nologin"


def test_jupyterlab_loaded_its_configuration_file(host):
    # A config the service cannot read is skipped with a log line, and the defaults (localhost:8888, no TLS)
    # would still pass the tests above: check the process's groups and the server's own log.
    status = host.file(f"/proc/{main_pid(host, 'jupyter')}/status").content_string
    ids = [line.split()[1:] for line in status.splitlines() if line.startswith(("Gid:", "Groups:"))]
    gids = {int(gid) for line in ids for gid in line}
    assert host.group("jupyter").gid in gids
    assert host.group("llmlab").gid in gids
    with host.sudo():
        log = host.check_output("journalctl --unit jupyter --boot --no-pager --output cat")
    assert "Exception while loading config file" not in log
    # The URL of the latest start: the configured 127.0.0.1 (JupyterLab's own default says localhost).
    urls = [line.split("] ", 1)[1] for line in log.splitlines() if ":8888/lab?token=" in line]
    assert urls and urls[-1] == "http://127.0.0.1:8888/lab?token=...", urls


def test_jupyterlab_comes_back_after_a_restart(host):
    # The first start leaves ~/.ipython behind; later starts must not try to migrate it into /etc/jupyter.
    with host.sudo():
        assert host.run("systemctl restart jupyter").rc == 0
    probe = f"python3 -c {shlex.quote(HTTP_GET)} http://127.0.0.1:8888/api/status {jupyter_token(host)}"
    assert host.run(f"for i in $(seq 60); do {probe} | grep -qx 200 && exit 0; sleep 1; done; exit 1").rc == 0
    assert main_pid(host, "jupyter") > 0


def test_jupyterlab_saves_user_settings_in_the_service_home(host):
    put = r"""
import json, sys, urllib.request
body = json.dumps({"raw": '{"theme": "JupyterLab Dark"}'}).encode()
headers = {"Authorization": "token " + sys.argv[2], "Content-Type": "application/json"}
req = urllib.request.Request(sys.argv[1], data=body, method="PUT", headers=headers)
print(urllib.request.urlopen(req, timeout=10).status)
"""
    url = "http://127.0.0.1:8888/lab/api/settings/@jupyterlab/apputils-extension:themes"
    result = host.run(f"python3 -c {shlex.quote(put)} {url} {jupyter_token(host)}")
    assert result.rc == 0 and result.stdout.strip() == "204", result.stderr
    settings = "/var/lib/jupyter/.jupyter/lab/user-settings/@jupyterlab/apputils-extension"
    assert "JupyterLab Dark" in host.file(f"{settings}/themes.jupyterlab-settings").content_string


def test_jupyterlab_answers_with_the_token(host):
    assert http_status(host, "http://127.0.0.1:8888/api/status", jupyter_token(host)) == 200


@pytest.mark.parametrize("path", ["api/status", "api/contents", "api/kernels"])
def test_jupyterlab_refuses_requests_without_the_token(host, path):
    assert http_status(host, f"http://127.0.0.1:8888/{path}") == 403
    assert http_status(host, f"http://127.0.0.1:8888/{path}", "0" * 48) == 403


def test_jupyterlab_listens_on_loopback_only(host):
    # The container's address on Docker's bridge (Docker maps the hostname to it in /etc/hosts).
    code = "import socket; socket.create_connection((socket.gethostbyname(socket.gethostname()), 8888), 3)"
    result = host.run(f"python3 -c {shlex.quote(code)}")
    assert result.rc != 0
    assert "Connection refused" in result.stderr


def test_the_token_is_readable_by_root_only(host):
    with host.sudo():
        token_file = host.file("/etc/jupyter/token.env")
        assert token_file.user == "root"
        assert token_file.mode == 0o600
    assert len(jupyter_token(host)) == 48
    assert jupyter_token(host) not in host.file("/etc/jupyter/jupyter_server_config.py").content_string


def test_the_login_url_command_shows_the_token(host):
    with host.sudo():
        url = host.check_output("/usr/local/sbin/llmlab-jupyter-url")
    assert url == f"http://localhost:8888/lab?token={jupyter_token(host)}"


def test_jupyterlab_sees_the_model_store(host):
    environ = host.run(f"tr '\\0' '\\n' < /proc/{main_pid(host, 'jupyter')}/environ").stdout.splitlines()
    assert "HF_HUB_CACHE=/models" in environ
    assert "HF_HOME=/var/lib/jupyter/.cache/huggingface" in environ


# --- model_store ---


def test_the_store_is_group_shared_and_setgid(host):
    store = host.file("/models")
    assert store.group == "llmlab"
    assert store.mode == 0o2775


def test_a_file_written_by_one_lab_user_is_readable_and_writable_by_another(host):
    try:
        # alice's umask is the default 022: the default ACL keeps her files group-writable anyway.
        alice = host.run(
            "su - alice -c 'mkdir /models/shared-test && echo from-alice > /models/shared-test/f'"
        )
        assert alice.rc == 0, alice.stderr
        assert host.run("su - bob -c 'cat /models/shared-test/f'").stdout.strip() == "from-alice"
        bob = host.run("su - bob -c 'echo from-bob >> /models/shared-test/f && touch /models/shared-test/g'")
        assert bob.rc == 0, bob.stderr
        assert host.file("/models/shared-test/g").group == "llmlab"
    finally:
        host.run("rm -rf /models/shared-test")


def test_login_shells_use_the_store_as_hugging_face_cache(host):
    env = host.run("su - alice -c 'echo $HF_HUB_CACHE $HF_HOME'").stdout.split()
    assert env == ["/models", "/home/alice/.cache/huggingface"]


def test_the_manifest_model_is_in_the_store_and_pinned(host):
    result = host.run("llmlab models list --json")
    assert result.rc == 0, result.stderr
    models = {m["name"]: m for m in json.loads(result.stdout)["models"]}
    assert models["lab/tiny-seed"]["pinned"] is True


# --- llmlab ---


def test_llmlab_is_on_the_path_and_runs_from_the_environment(host):
    assert host.file("/usr/local/bin/llmlab").linked_to == f"{PREFIX}/bin/llmlab"
    assert host.run("su - alice -c 'llmlab --help'").rc == 0


def test_verify_reports_no_failure_for_this_cpu_host(host):
    with host.sudo():
        result = host.run("llmlab verify --json")
    assert result.rc in (0, 1), result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["config_path"] == "/etc/llmlab/config.yaml"
    status = {check["id"]: check["status"] for check in report["checks"]}
    failed = {cid: s for cid, s in status.items() if s == "FAIL"}
    assert not failed, failed
    # The lab roles' own work, as verify sees it:
    for cid in (
        "software.torch",
        "software.min_versions",
        "services.jupyter",
        "services.jupyter_auth",
        "services.firewall",
        "services.listening_ports",
        "models.store_writable",
        "models.pins",
    ):
        assert status[cid] == "OK", (cid, status[cid])


def test_the_verify_timer_is_enabled_and_its_service_writes_metrics(host):
    timer = host.service("llmlab-verify.timer")
    assert timer.is_enabled
    assert timer.is_running
    with host.sudo():
        # A run the timer started may be in flight; `systemctl start` would join it and report its result.
        host.run(
            'while [ "$(systemctl show -p ActiveState --value llmlab-verify.service)" = activating ]; '
            "do sleep 1; done"
        )
        run = host.run("systemctl start llmlab-verify.service")
        journal = host.run("journalctl -u llmlab-verify.service --no-pager -n 60").stdout
        assert run.rc == 0, run.stderr + journal
        prom = host.file("/var/lib/prometheus/node-exporter/llmlab_verify.prom")
        assert prom.exists
        assert "llmlab_verify_exit_code" in prom.content_string


# --- firewall ---


def test_the_firewall_is_active_with_default_deny_inbound(host):
    with host.sudo():
        status = host.check_output("ufw status verbose")
    assert "Status: active" in status
    assert "Default: deny (incoming), allow (outgoing), deny (routed)" in status


def test_ssh_is_allowed_and_comes_first(host):
    with host.sudo():
        numbered = host.check_output("ufw status numbered").splitlines()
        rules = host.check_output("iptables -S ufw-user-input")
    first = next(line for line in numbered if line.startswith("[ 1]"))
    assert "22/tcp" in first and "ALLOW IN" in first and "Anywhere" in first
    assert "-A ufw-user-input -p tcp -m tcp --dport 22 -j ACCEPT" in rules


@pytest.mark.parametrize(
    "port, source",
    [("9100", "192.168.50.0/24"), ("5000", "10.30.0.0/16")],
    ids=["node_exporter's listener, from its contract", "an extra rule"],
)
def test_the_configured_rules_admit_only_their_networks(host, port, source):
    with host.sudo():
        rules = host.check_output("iptables -S ufw-user-input")
    assert f"-A ufw-user-input -s {source} -p tcp -m tcp --dport {port} -j ACCEPT" in rules
    assert f"--dport {port} -j ACCEPT" not in rules.replace(f"-s {source} -p tcp -m tcp --dport {port}", "")


def test_a_service_on_loopback_gets_no_rule(host):
    with host.sudo():
        rules = host.check_output("iptables -S ufw-user-input")
    assert "--dport 8888" not in rules  # Jupyter listens on 127.0.0.1 here


def test_published_docker_ports_obey_the_allowed_networks(host):
    """The docker role's DOCKER-USER rules, loaded by ufw: new connections to published ports only from
    the allowed network, and they survive a ufw reload."""
    with host.sudo():
        assert host.run("ufw reload").rc == 0
        chain = host.check_output("iptables -S DOCKER-USER")
    assert "-A DOCKER-USER -s 10.20.0.0/16 -m conntrack --ctstate DNAT -j RETURN" in chain
    assert "-A DOCKER-USER -m conntrack --ctstate DNAT -j DROP" in chain
    assert chain.index("10.20.0.0/16") < chain.index("--ctstate DNAT -j DROP")
