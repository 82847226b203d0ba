"""Helpers of the deploys tests: the lab container's preparation, docker and `python -m deploys` calls."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `deploys` is a top-level directory, not an installed package

IMAGE = "llmlab-test/debian:12"
PREFIX = "/opt/llmlab/env"
STORE = "/srv/llmlab-store"  # not llmlab's default (/models): the store path must come from the host config
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SYSTEMD_CONTAINER = REPO / "tests/images/systemd-container.sh"  # the one recipe for a systemd test host


@dataclass(frozen=True)
class Lab:
    container: str
    inventory: Path  # cpu_lab: lab1 -> the container
    source: Path  # a snapshot of the llmlab sources, so edits in the working tree cannot change the wheel

    def exec(self, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return docker("exec", self.container, "sh", "-c", command, check=check)


def docker(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)[:300]} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done


def run_deploys(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m deploys ARGS` from the checkout, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "deploys", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def docker_unavailable() -> str | None:
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    try:
        if docker("info", check=False, timeout=60).returncode != 0:
            return "the Docker daemon is not running (make setup starts it)"
    except subprocess.TimeoutExpired:
        return "the Docker daemon does not answer"
    if docker("image", "inspect", IMAGE, check=False, timeout=60).returncode != 0:
        return f"the test image {IMAGE} is missing (make setup builds it: tests/images/build.sh)"
    return None


def snapshot_sources(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "llmlab", dest / "llmlab", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def write_inventory(root: Path, container: str) -> Path:
    """An inventory in the playbooks' layout; the prefix comes from group_vars through a template."""
    (root / "group_vars").mkdir(parents=True)
    (root / "group_vars" / "lab.yml").write_text(
        '---\nlab_root: /opt/llmlab\npython_env_prefix: "{{ lab_root }}/env"\n', encoding="utf-8"
    )
    (root / "hosts.yml").write_text(
        f"""---
all:
  children:
    lab:
      children:
        gpu_servers:
          hosts: {{}}
        cpu_lab:
          hosts:
            lab1:
              ansible_connection: community.docker.docker
              ansible_host: {container}
              ansible_user: root
""",
        encoding="utf-8",
    )
    return root / "hosts.yml"


def _core_requirements() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return list(project["dependencies"])


def prepare(lab: Lab) -> None:
    """Prepare a container that systemd-container.sh started (it returns once systemd has booted)."""
    apt = "DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Languages=none"  # no Translation-en lists
    for attempt in range(3):
        done = lab.exec(
            f"{apt} update -qq && {apt} install -y -qq --no-install-recommends python3-venv", False
        )
        if done.returncode == 0:
            break
        if attempt == 2:
            raise RuntimeError(
                f"apt-get install python3-venv failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        time.sleep(5)
    requirements = " ".join(f"'{r}'" for r in _core_requirements())
    lab.exec(
        f"python3 -m venv {PREFIX} && printf '[global]\\ntimeout = 120\\n' > {PREFIX}/pip.conf && "
        "{ [ ! -f /etc/llmlab-test/ca-bundle.crt ] || "
        f"echo 'cert = /etc/llmlab-test/ca-bundle.crt' >> {PREFIX}/pip.conf; }} && "
        f"{PREFIX}/bin/pip install --quiet --no-compile --disable-pip-version-check {requirements}"
    )
    lab.exec(
        "groupadd -f llmlab && mkdir -p /etc/llmlab && "
        f"printf 'model_store: {STORE}\\nlab_group: llmlab\\n' > /etc/llmlab/config.yaml"
    )
