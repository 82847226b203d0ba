"""A real systemd lab container for the pyinfra deploys, prepared the way playbooks/site.yml leaves a host
(as far as deploys/ cares): a lab environment at /opt/llmlab/env with llmlab's core dependencies, a host
config, the lab group. Not the ML stack: verify's torch checks FAIL on it, which the tests rely on.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from deploys_helpers import (
    APT_CACHE,
    CA_BUNDLE,
    IMAGE,
    Lab,
    docker,
    docker_unavailable,
    prepare,
    snapshot_sources,
    write_inventory,
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A running, prepared lab container; removed at the end of the module, also after a failure."""
    if reason := docker_unavailable():
        pytest.skip(reason)
    name = f"llmlab-pyinfra-test-{uuid.uuid4().hex[:8]}"
    root = tmp_path_factory.mktemp("deploys")
    volumes = ["-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw"]
    if CA_BUNDLE.is_file():  # PyPI is reached through a TLS-inspecting proxy on these machines
        volumes += ["-v", f"{CA_BUNDLE}:/etc/llmlab-test/ca-bundle.crt:ro"]
    if APT_CACHE.is_dir():  # the .deb cache the Molecule scenarios share
        volumes += ["-v", f"{APT_CACHE}:/var/cache/apt/archives"]
    try:
        docker(
            "run", "-d", "--name", name, "--hostname", "lab1",
            "--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined", "--cgroupns", "host",
            "--tmpfs", "/run", "--tmpfs", "/run/lock", "--stop-signal", "SIGRTMIN+3",
            *volumes, IMAGE, "/sbin/init",
        )  # fmt: skip
        lab = Lab(name, write_inventory(root / "inventory", name), snapshot_sources(root / "src"))
        prepare(lab)
        yield lab
    finally:
        docker("rm", "-f", "-v", name, check=False)
