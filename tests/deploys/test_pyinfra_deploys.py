"""`python -m deploys` with real pyinfra against a real systemd lab container (docker connector)."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

from deploys_helpers import PREFIX, STORE, Lab, docker, run_deploys


def results(done: subprocess.CompletedProcess[str], rc: int) -> list[dict[str, Any]]:
    assert done.returncode == rc, f"exit {done.returncode}, expected {rc}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def one_host(done: subprocess.CompletedProcess[str], rc: int) -> dict[str, Any]:
    hosts = results(done, rc)
    assert [h["host"] for h in hosts] == ["lab1"]
    return hosts[0]


def installed_init(lab: Lab) -> str:
    return lab.exec(
        f"{PREFIX}/bin/python -c 'import llmlab, sys; sys.stdout.write(open(llmlab.__file__).read())'"
    ).stdout


def test_deploy_installs_llmlab_and_a_second_deploy_is_a_no_op(lab: Lab) -> None:
    assert lab.exec(f"test -e {PREFIX}/bin/llmlab", check=False).returncode != 0  # not there before

    args = ("deploy", "-i", str(lab.inventory), "--limit", "cpu_lab", "--source", str(lab.source), "--json")
    first = one_host(run_deploys(*args), 0)
    assert first["ok"] and first["changed"] and first["status"] == "changed", first

    assert lab.exec(f"{PREFIX}/bin/llmlab --version").stdout.strip() == "llmlab 0.1.0"
    assert installed_init(lab) == (lab.source / "llmlab" / "__init__.py").read_text(encoding="utf-8")
    assert lab.exec("ls /var/lib/llmlab/dist").stdout.split() == ["llmlab-0.1.0-py3-none-any.whl"]

    second = one_host(run_deploys(*args), 0)
    assert second["ok"] and not second["changed"] and second["status"] == "unchanged", second
    assert "already installed" in second["detail"]


def test_deploy_reinstalls_new_code_under_the_same_version(lab: Lab, tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(lab.source, source)
    marker = f"# deploys test {uuid.uuid4().hex}\n"
    with (source / "llmlab" / "__init__.py").open("a", encoding="utf-8") as f:
        f.write(marker)

    done = run_deploys(
        "deploy", "-i", str(lab.inventory), "--limit", "lab1", "--source", str(source), "--json"
    )
    changed = one_host(done, 0)
    assert changed["changed"] and changed["status"] == "changed", changed
    assert installed_init(lab).endswith(marker)
    assert lab.exec(f"{PREFIX}/bin/llmlab --version").stdout.strip() == "llmlab 0.1.0"


def test_verify_reports_the_hosts_status_and_the_exit_code_follows_it(lab: Lab, tmp_path: Path) -> None:
    # What llmlab itself says on the host: without torch in the lab environment, verify FAILs.
    direct = lab.exec(f"{PREFIX}/bin/llmlab verify --json", check=False)
    assert direct.returncode == 2, direct.stderr
    assert json.loads(direct.stdout)["summary"]["status"] == "FAIL"

    failed = one_host(run_deploys("verify", "-i", str(lab.inventory), "--limit", "lab1", "--json"), 1)
    assert failed["status"] == "FAIL" and not failed["ok"]
    assert failed["report"]["summary"]["passed"] is False  # the verdict deploys reads, as the playbooks do
    assert "software.torch" in failed["failing"]
    report_fails = [c["id"] for c in failed["report"]["checks"] if c["status"] == "FAIL"]
    assert report_fails and set(report_fails) <= set(failed["failing"])

    reports = tmp_path / "reports"
    table = run_deploys(
        "verify", "-i", str(lab.inventory), "--limit", "cpu_lab", "--report-dir", str(reports)
    )
    assert table.returncode == 1, table.stderr
    assert "lab1" in table.stdout and "FAIL" in table.stdout and "software.torch" in table.stdout
    saved = json.loads((reports / "lab1.json").read_text(encoding="utf-8"))
    assert saved["schema"] == "llmlab.verify.report" and saved["summary"]["status"] == "FAIL"

    # The inventory's llmlab_verify_pass_codes reach llmlab, whose summary.passed is the verdict: with 2 in
    # them, the same FAIL passes (as it would for playbooks/verify.yml).
    lenient = tmp_path / "lenient"
    shutil.copytree(lab.inventory.parent, lenient)
    with (lenient / "group_vars" / "lab.yml").open("a", encoding="utf-8") as f:
        f.write("llmlab_verify_pass_codes: [0, 1, 2]\n")
    lenient_run = run_deploys("verify", "-i", str(lenient / "hosts.yml"), "--limit", "lab1", "--json")
    tolerated = one_host(lenient_run, 0)
    assert tolerated["ok"] and tolerated["status"] == "FAIL"
    assert tolerated["report"]["summary"]["pass_codes"] == [0, 1, 2]

    only = ("--only", "system.os,system.cpu_count")
    passed = one_host(run_deploys("verify", "-i", str(lab.inventory), "--limit", "lab1", *only, "--json"), 0)
    assert passed["ok"] and passed["status"] == "OK" and passed["failing"] == []
    assert [c["id"] for c in passed["report"]["checks"]] == ["system.os", "system.cpu_count"]


def test_models_sync_imports_a_model_into_the_configured_store_then_changes_nothing(
    lab: Lab, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    lab.exec("mkdir -p /srv/seed")
    docker("cp", str(tiny_llama_dir), f"{lab.container}:/srv/seed/tiny-llama")
    manifest = tmp_path / "models.yaml"
    manifest.write_text(
        "models:\n  - name: lab/tiny-llama\n    path: /srv/seed/tiny-llama\n    pin: true\n", encoding="utf-8"
    )
    args = ("models-sync", "-i", str(lab.inventory), "--limit", "lab1", str(manifest), "--json")

    first = one_host(run_deploys(*args), 0)
    assert first["ok"] and first["changed"] and first["status"] == "changed", first
    actions = {(m["name"], m["action"]) for m in first["report"]["models"]}
    assert ("lab/tiny-llama", "added") in actions

    listed = json.loads(lab.exec(f"{PREFIX}/bin/llmlab models list --json").stdout)
    assert listed["store"] == STORE
    assert [(m["name"], m["pinned"]) for m in listed["models"]] == [("lab/tiny-llama", True)]
    check = lab.exec(f"{PREFIX}/bin/llmlab models verify lab/tiny-llama --json", check=False)
    assert check.returncode == 0 and json.loads(check.stdout)["ok"], check.stdout

    second = one_host(run_deploys(*args), 0)
    assert second["ok"] and not second["changed"] and second["status"] == "unchanged", second
    assert [m["action"] for m in second["report"]["models"]] == ["unchanged"]


def test_bad_input_is_named_and_a_missing_container_is_never_created(lab: Lab, tmp_path: Path) -> None:
    inventory = str(lab.inventory)
    unknown = run_deploys("verify", "-i", inventory, "--limit", "gpu_nonesuch")
    assert unknown.returncode == 2 and "'gpu_nonesuch' matches no host" in unknown.stderr

    missing = tmp_path / "nowhere" / "hosts.yml"
    absent = run_deploys("verify", "-i", str(missing))
    assert absent.returncode == 2 and f"inventory {missing}: no such file" in absent.stderr

    # deploys never provisions: a host without the lab environment fails, pointing at the playbooks.
    bare = tmp_path / "bare.yml"
    bare.write_text(
        "all:\n  hosts:\n    bare:\n      ansible_connection: community.docker.docker\n"
        f"      ansible_host: {lab.container}\n      python_env_prefix: /opt/nowhere\n",
        encoding="utf-8",
    )
    failed = results(run_deploys("deploy", "-i", str(bare), "--source", str(lab.source), "--json"), 1)[0]
    assert failed["status"] == "failed" and "no lab environment at /opt/nowhere" in failed["detail"]
    assert "playbooks/site.yml" in failed["detail"]
    assert lab.exec("test -e /opt/nowhere", check=False).returncode != 0

    # pyinfra's docker connector would start a new container from an *image* of a name it cannot find.
    ghost = f"llmlab-pyinfra-test-ghost-{uuid.uuid4().hex[:8]}"
    ghost_inventory = tmp_path / "ghost.yml"
    ghost_inventory.write_text(
        f"all:\n  hosts:\n    ghost:\n      ansible_connection: community.docker.docker\n"
        f"      ansible_host: {ghost}\n    lab1:\n      ansible_connection: community.docker.docker\n"
        f"      ansible_host: {lab.container}\n",
        encoding="utf-8",
    )
    hosts = results(run_deploys("verify", "-i", str(ghost_inventory), "--only", "system.os", "--json"), 1)
    by_name = {h["host"]: h for h in hosts}
    assert by_name["ghost"]["status"] == "ERROR" and "does not exist" in by_name["ghost"]["detail"]
    assert by_name["lab1"]["status"] == "OK"  # one bad host does not hide the others
    assert docker("ps", "-a", "-q", "--filter", f"name={ghost}").stdout.strip() == ""
