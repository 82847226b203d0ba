"""A real systemd lab container for the pyinfra deploys, prepared the way playbooks/site.yml leaves a host
(as far as deploys/ cares): a lab environment at /opt/llmlab/env with llmlab's core dependencies, a host
config, the lab group. Not the ML stack: verify's torch checks FAIL on it, which the tests rely on.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest
from deploys_helpers import (
    CA_BUNDLE,
    IMAGE,
    SYSTEMD_CONTAINER,
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
    volumes = []
    if CA_BUNDLE.is_file():  # PyPI is reached through a TLS-inspecting proxy on these machines
        volumes += ["-v", f"{CA_BUNDLE}:/etc/llmlab-test/ca-bundle.crt:ro"]
    try:
        started = subprocess.run(
            [str(SYSTEMD_CONTAINER), "--apt-cache", "deploys", name, IMAGE, *volumes],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if started.returncode != 0:
            raise RuntimeError(f"{SYSTEMD_CONTAINER.name} exited {started.returncode}:\n{started.stderr}")
        lab = Lab(name, write_inventory(root / "inventory", name), snapshot_sources(root / "src"))
        prepare(lab)
        yield lab
    finally:
        docker("rm", "-f", "-v", name, check=False)
