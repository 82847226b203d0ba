"""MLflow, node_exporter and git for lab users on the converged hosts (testinfra, `molecule verify`).

Two hosts (molecule.yml): `lab` runs the lab environment, llmlab and MLflow with SQLite on 127.0.0.1;
`server` runs MLflow with PostgreSQL, basic auth and TLS (prepare.yml's self-signed certificate) on 0.0.0.0.
Runs are logged from the lab environment with the mlflow client and read back through MLflow's REST API (and,
for `server`, from PostgreSQL).
"""

import ipaddress
import json
import os
import shlex
import uuid
from pathlib import Path

import pytest
import testinfra
import yaml

SCENARIO = os.environ.get("MOLECULE_SCENARIO_NAME", "tracking")
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
LAB_PY = "/opt/llmlab/env/bin/python"
ADMIN = ("admin", "admin-test-password-0123")  # molecule.yml's test-only secret
PG_PASSWORD = "pg-test-password-0123"
# prepare.yml's self-signed certificate of the server: on the server (with its key), and on the lab host.
SERVER_CERT = "/etc/mlflow-tls/tls.crt"
LAB_TRUSTS = "/usr/local/share/llmlab-test/mlflow-tls.crt"


def get(name):
    return testinfra.get_host(f"ansible://{SCENARIO}-{name}?ansible_inventory={INVENTORY}")


@pytest.fixture(scope="module")
def lab():
    return get("debian12")


@pytest.fixture(scope="module")
def server():
    return get("pg-debian12")


@pytest.fixture(scope="module")
def server_url(server):
    return f"https://{address(server)}:5000"


# The HTTP helper runs on the hosts themselves (no curl there): prints "<status> <body>"; status 0 and the
# error when no HTTP response came (connection or TLS failure). HTTPS trusts only CAFILE when given.
HTTP = """
import base64, ssl, sys, urllib.request, urllib.error
url, cafile, user, password = (sys.argv[1:] + ["", "", ""])[:4]
req = urllib.request.Request(url)
if user:
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
context = ssl.create_default_context(cafile=cafile or None)
try:
    with urllib.request.urlopen(req, timeout=30, context=context) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except OSError as e:
    print(0, type(e).__name__, e)
"""


def http(host, url, auth=("", ""), cafile=""):
    args = " ".join(shlex.quote(a) for a in (url, cafile, *auth))
    out = host.check_output(f"python3 -c {shlex.quote(HTTP)} {args}")
    status, _, body = out.partition(" ")
    return int(status), body


# Logs one run with the mlflow client from the lab environment, as lab user alice; prints its run id.
LOG_RUN = """
import mlflow
mlflow.set_experiment("tracking-scenario")
with mlflow.start_run() as run:
    mlflow.log_param("marker", "{marker}")
    mlflow.log_metric("loss", 0.25)
    mlflow.log_text("hello from alice", "notes.txt")
print(run.info.run_id)
"""


def log_run(lab, marker, env=""):
    code = LOG_RUN.format(marker=marker)
    # A login shell: /etc/profile.d gives MLFLOW_TRACKING_URI unless env overrides it.
    cmd = f"{env} {LAB_PY} -c {shlex.quote(code)}"
    run = lab.run(f"su - alice -c {shlex.quote(cmd)}")
    assert run.rc == 0, run.stderr[-3000:]
    return run.stdout.strip().splitlines()[-1]


def test_mlflow_runs_as_its_unprivileged_user_and_answers_health(lab, server):
    for host, url, cafile in (
        (lab, "http://127.0.0.1:5000/health", ""),
        (server, "https://127.0.0.1:5000/health", SERVER_CERT),
    ):
        assert host.service("mlflow").is_running
        assert host.service("mlflow").is_enabled
        owner = host.check_output("stat -c %U /proc/$(systemctl show -p MainPID --value mlflow)")
        assert owner == "mlflow"
        assert http(host, url, cafile=cafile) == (200, "OK")


def address(host):
    """The container's address on Docker's bridge."""
    return host.check_output("hostname -i").split()[0]


def connects(host, ip, port):
    probe = f"import socket; socket.create_connection(('{ip}', {port}), 3)"
    return host.run(f"python3 -c {shlex.quote(probe)}").rc == 0


def test_the_sqlite_server_listens_on_loopback_only(lab):
    assert connects(lab, "127.0.0.1", 5000)
    assert not connects(lab, address(lab), 5000)


def test_login_shells_and_llmlab_get_the_tracking_uri(lab):
    assert lab.check_output("su - alice -c 'echo $MLFLOW_TRACKING_URI'") == "http://127.0.0.1:5000"
    shown = json.loads(lab.check_output("llmlab config --json"))
    assert shown["config"]["tracking_uri"] == "http://127.0.0.1:5000"
    assert (
        shown["origins"]["tracking_uri"] == "/etc/llmlab/config.d/mlflow.yaml"
    )  # the mlflow role's contract


def test_a_run_logged_from_the_lab_environment_is_listed_by_the_api(lab):
    marker = uuid.uuid4().hex
    run_id = log_run(lab, marker)
    status, body = http(lab, f"http://127.0.0.1:5000/api/2.0/mlflow/runs/get?run_id={run_id}")
    assert status == 200, body
    run = json.loads(body)["run"]
    assert {"key": "marker", "value": marker} in run["data"]["params"]
    assert [m["value"] for m in run["data"]["metrics"] if m["key"] == "loss"] == [0.25]
    # The artifact went through the server into the group-shared artifacts directory.
    found = lab.check_output(
        f"find /srv/mlflow/artifacts -path '*{run_id}*' -name notes.txt -printf '%g %m\\n'"
    )
    assert found.split() == ["llmlab", "660"], found


# `llmlab train`'s tracking set-up without the ML stack (this scenario's environment has no torch): the
# training config is loaded and checked as the command does, the tracking environment comes from the host
# config (the tracking_uri of the mlflow role's contract), and the run is started as transformers'
# MLflowCallback starts it from that environment. Prints the URI and the run id.
TRAIN_TRACKING = r"""
import os, pathlib, sys, tempfile
from llmlab.config import load_config
from llmlab.train.run import preflight
from llmlab.train.schema import load_train_config
from llmlab.train.tracking import MlflowRun, check_server, tracking_uri

assert "MLFLOW_TRACKING_URI" not in os.environ, "the URI must come from the host config"
work = pathlib.Path(tempfile.mkdtemp())
(work / "data.jsonl").write_text('{"text": "hello"}\n')
(work / f"{sys.argv[1]}.yaml").write_text(
    f"base_model: lab/tiny\ndatasets: [{{path: {work}/data.jsonl, format: text}}]\n"
    f"tracking: mlflow\noutput_dir: {work}/output\n"
)
cfg = load_train_config(work / f"{sys.argv[1]}.yaml")
preflight(cfg, resume=False)
uri = tracking_uri(cfg, load_config().tracking_uri)
check_server(uri)  # the client is in the lab environment, and the server answers
run = MlflowRun(cfg, uri)
run.start({str(work / "data.jsonl"): "0" * 64}, resume=False)
run.log_metrics(1, {"train_loss": 1.5})
run.finish({"global_step": 1}, [], completed=True)
assert not run.report()["not_logged"], run.report()
print(uri, run.run_id)
"""


def test_llmlab_train_tracking_logs_to_the_server_from_the_host_config_alone(lab):
    name = f"llmlab-train-{uuid.uuid4().hex[:12]}"
    # A login shell without the profile's MLFLOW_TRACKING_URI: the host config is the only source.
    cmd = f"env -u MLFLOW_TRACKING_URI {LAB_PY} -c {shlex.quote(TRAIN_TRACKING)} {name}"
    run = lab.run(f"su - alice -c {shlex.quote(cmd)}")
    assert run.rc == 0, run.stderr[-3000:]
    uri, run_id = run.stdout.strip().splitlines()[-1].split()
    assert uri == "http://127.0.0.1:5000"
    status, body = http(lab, f"{uri}/api/2.0/mlflow/runs/get?run_id={run_id}")
    assert status == 200, body
    logged = json.loads(body)["run"]
    assert [m["value"] for m in logged["data"]["metrics"] if m["key"] == "train_loss"] == [1.5]
    experiment_id = logged["info"]["experiment_id"]
    status, body = http(lab, f"{uri}/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}")
    assert status == 200, body
    assert json.loads(body)["experiment"]["name"] == name  # the config file's name, not output_dir's "output"


def test_the_lab_environment_has_the_pinned_mlflow_client_from_python_env(lab):
    # python_env installs it on every lab host (with or without the ML stack), not the mlflow server role.
    show = lab.check_output(f"{LAB_PY} -m pip show mlflow-skinny")
    assert "Version: 3.17.2" in show.splitlines()


def test_the_artifacts_directory_is_group_shared(lab):
    directory = lab.file("/srv/mlflow/artifacts")
    assert directory.is_directory
    assert (directory.user, directory.group, directory.mode) == ("mlflow", "llmlab", 0o2770)


def test_the_server_off_loopback_serves_https_only_with_its_certificate(lab, server, server_url):
    # From the lab host, by the server's address: the certificate verifies against prepare.yml's (the
    # address is in its names), and against nothing else; plain HTTP gets no HTTP answer.
    assert http(lab, f"{server_url}/health", cafile=LAB_TRUSTS) == (200, "OK")
    status, error = http(lab, f"{server_url}/health")
    assert status == 0 and "CERTIFICATE_VERIFY_FAILED" in error, error
    status, error = http(lab, f"http://{address(server)}:5000/health")
    assert status == 0, error
    unit = server.file("/etc/systemd/system/mlflow.service").content_string
    assert f"--ssl-certfile {SERVER_CERT} --ssl-keyfile /etc/mlflow-tls/tls.key" in unit
    assert server.check_output("cat /etc/profile.d/llmlab-mlflow.sh").endswith(
        "export MLFLOW_TRACKING_URI=https://127.0.0.1:5000"
    )


def test_unauthenticated_requests_are_refused_when_auth_is_on(lab, server_url):
    url = f"{server_url}/api/2.0/mlflow/experiments/search?max_results=5"
    assert http(lab, url, cafile=LAB_TRUSTS)[0] == 401
    assert http(lab, url, ("admin", "not-the-password"), LAB_TRUSTS)[0] == 401
    status, body = http(lab, url, ADMIN, LAB_TRUSTS)
    assert status == 200, body
    assert "experiments" in json.loads(body)


def test_a_run_logged_with_credentials_lands_in_postgresql(lab, server, server_url):
    marker = uuid.uuid4().hex
    env = (
        f"MLFLOW_TRACKING_URI={server_url} MLFLOW_TRACKING_SERVER_CERT_PATH={LAB_TRUSTS}"
        f" MLFLOW_TRACKING_USERNAME={ADMIN[0]} MLFLOW_TRACKING_PASSWORD={ADMIN[1]}"
    )
    run_id = log_run(lab, marker, env)
    assert len(run_id) == 32
    with server.sudo("postgres"):
        row = server.check_output(
            "psql -d mlflow -tA -F ' ' -c "
            + shlex.quote(
                f"select p.value, r.status from runs r join params p on p.run_uuid = r.run_uuid "
                f"where r.run_uuid = '{run_id}' and p.key = 'marker'"
            )
        )
    assert row.split() == [marker, "FINISHED"]
    status, body = http(lab, f"{server_url}/api/2.0/mlflow/runs/get?run_id={run_id}", ADMIN, LAB_TRUSTS)
    assert status == 200 and marker in body


def test_database_and_admin_passwords_stay_out_of_the_unit_and_process_list(server):
    env = server.file("/etc/mlflow/mlflow.env")
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)
    with server.sudo():
        assert PG_PASSWORD in server.file("/etc/mlflow/mlflow.env").content_string
    assert PG_PASSWORD not in server.file("/etc/systemd/system/mlflow.service").content_string
    # Every process's command line (no ps in these images).
    processes = server.check_output("cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
    assert "--app-name basic-auth" in processes
    assert PG_PASSWORD not in processes and ADMIN[1] not in processes


def test_node_exporter_serves_the_verify_metrics_after_the_timer_service_ran(lab):
    assert lab.service("llmlab-verify.timer").is_enabled
    with lab.sudo():
        lab.run("rm -f /var/lib/prometheus/node-exporter/llmlab_verify.prom")
        lab.run("systemctl start llmlab-verify.service")  # a WARN or FAIL exit still writes the metrics
    status, metrics = http(lab, "http://127.0.0.1:9100/metrics")
    assert status == 200
    lines = metrics.splitlines()
    assert any(line.startswith("llmlab_verify_exit_code ") for line in lines), metrics[-2000:]
    assert any(line.startswith("llmlab_verify_check_status{") for line in lines)


def test_node_exporter_listens_where_configured(lab, server):
    # ":9100" on the lab host (reachable from the other container), the default 127.0.0.1:9100 on the server.
    assert connects(server, address(lab), 9100)
    assert connects(server, "127.0.0.1", 9100)
    assert not connects(server, address(server), 9100)


# Every TCP listener of the host as [address, port], from /proc (no ss or psutil on the system Python).
LISTENERS = """
import ipaddress, json
found = []
for name in ("tcp", "tcp6"):
    for line in open(f"/proc/net/{name}").read().splitlines()[1:]:
        fields = line.split()
        if fields[3] != "0A":  # LISTEN
            continue
        hexaddr, hexport = fields[1].split(":")
        raw = bytes.fromhex(hexaddr)
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # host-order 32-bit words
        found.append([str(ipaddress.ip_address(raw)), int(hexport, 16)])
print(json.dumps(found))
"""


def exposed_ports(host):
    """The ports of the host's TCP listeners beyond loopback (what verify's listening-ports check sees)."""
    ports = set()
    for ip, port in json.loads(host.check_output(f"python3 -c {shlex.quote(LISTENERS)}")):
        addr = ipaddress.ip_address(ip)
        if not (getattr(addr, "ipv4_mapped", None) or addr).is_loopback:
            ports.add(port)
    return ports


def test_the_contracts_declare_the_listeners_bound_off_loopback(lab, server):
    """Each role publishes its listener; the ones off loopback are what is exposed, and nothing else is."""

    def declared(host):
        with host.sudo():
            listeners = {}
            for name in ("mlflow", "monitoring"):
                path = f"/etc/llmlab/config.d/{name}.yaml"
                listeners |= yaml.safe_load(host.file(path).content_string).get("listeners", {})
        return {
            v["port"] for v in listeners.values() if v["address"] not in ("127.0.0.1", "::1", "localhost")
        }

    # node_exporter on ":9100" on the lab host; MLflow on 0.0.0.0:5000 on the server.
    assert declared(lab) == exposed_ports(lab) == {9100}
    assert declared(server) == exposed_ports(server) == {5000}


def test_verify_accepts_node_exporter_off_loopback(lab):
    config = yaml.safe_load(lab.file("/etc/llmlab/config.yaml").content_string)
    assert "allowed_ports" not in config["verify"]  # the listener comes from monitoring's contract
    with lab.sudo():
        run = lab.run("llmlab verify --only services.listening_ports --json")
    assert run.rc == 0, run.stdout + run.stderr
    (check,) = json.loads(run.stdout)["checks"]
    assert (check["id"], check["status"]) == ("services.listening_ports", "OK"), check
    assert check["value"] == [9100], check


def test_verify_skips_the_torch_checks_where_the_environment_has_no_ml_stack(lab):
    # python_env_ml_stack: false here: its contract says so, and the verify timer must not FAIL on torch.
    contract = yaml.safe_load(lab.file("/etc/llmlab/config.d/python_env.yaml").content_string)
    assert contract["verify"]["expect"]["ml_stack"] is False
    with lab.sudo():
        run = lab.run("llmlab verify --only software.torch,software.bf16 --json")
    assert run.rc == 0, run.stdout + run.stderr
    checks = {c["id"]: c for c in json.loads(run.stdout)["checks"]}
    for check in checks.values():
        assert check["status"] == "SKIP" and "verify.expect.ml_stack" in check["message"], check
    assert set(checks) == {"software.torch", "software.bf16"}


def test_the_example_alert_rules_use_metrics_the_hosts_serve(lab):
    directory = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "prometheus"
    scrape = yaml.safe_load((directory / "prometheus-scrape.yml").read_text())
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in scrape["scrape_configs"]}
    assert jobs == {"llmlab-node": [f"{SCENARIO}-debian12:9100", f"{SCENARIO}-pg-debian12:9100"]}
    rules = yaml.safe_load((directory / "llmlab-alerts.yml").read_text())["groups"][0]["rules"]
    exprs = {rule["alert"]: rule["expr"] for rule in rules}
    assert {"LlmlabVerifyFailed", "GpuXidError", "DiskAlmostFull"} <= set(exprs)
    assert "DCGM_FI_DEV_XID_ERRORS" in exprs["GpuXidError"]
    metrics = http(lab, "http://127.0.0.1:9100/metrics")[1]
    for alert in ("LlmlabVerifyFailed", "DiskAlmostFull"):
        metric = exprs[alert].split("{")[0].split()[0]
        assert f"\n{metric}" in metrics, (alert, metric)


def test_git_and_lfs_are_configured_system_wide(lab, server):
    for host in (lab, server):
        assert host.run("git lfs version").rc == 0
        assert host.check_output("git config --system --get filter.lfs.process") == "git-lfs filter-process"
        assert host.check_output("git config --system --get filter.lfs.required") == "true"


def test_lab_users_get_their_git_identity(lab):
    assert lab.check_output("su - alice -c 'git config --global user.name'") == "Alice Lab"
    assert lab.check_output("su - alice -c 'git config --global user.email'") == "alice@lab.example"
    assert lab.file("/home/alice/.gitconfig").user == "alice"
    # bob has no identity in the inventory: nothing is written for him.
    assert not lab.file("/home/bob/.gitconfig").exists


NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "c0",
            "metadata": {},
            "outputs": [],
            "source": ["print('SOURCE')\n"],
        }
    ],
    "metadata": {},
    "nbformat": 4,
    "nbformat_minor": 5,
}


def test_git_diff_of_a_notebook_goes_through_nbdime(lab):
    before = json.dumps(NOTEBOOK).replace("SOURCE", "before")
    after = json.dumps(NOTEBOOK).replace("SOURCE", "after")
    script = (
        "set -e; rm -rf ~/nbrepo; git init -q ~/nbrepo; cd ~/nbrepo;"
        f" printf '%s' {shlex.quote(before)} > nb.ipynb; git add nb.ipynb; git commit -qm notebook;"
        f" printf '%s' {shlex.quote(after)} > nb.ipynb; git diff;"
        " echo; git log -1 --format='author: %an <%ae>'"
    )
    run = lab.run(f"su - alice -c {shlex.quote(script)}")
    assert run.rc == 0, run.stderr
    assert "## modified /cells/0/source" in run.stdout, run.stdout
    assert '"source"' not in run.stdout  # not git's line diff of the JSON
    assert run.stdout.rsplit("author: ", 1)[-1].strip() == "Alice Lab <alice@lab.example>"
