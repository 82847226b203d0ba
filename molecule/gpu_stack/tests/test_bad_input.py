"""Bad input fails before anything changes, with a message that names the bad value; check mode works.

Each case re-runs a playbook against the already converged hosts with one bad variable as an extra var,
through the JSON callback so the failure message is read exactly. Docker cases run the docker role
alone (the driver and toolkit roles in front of it would only make the run slower).
"""

from pathlib import Path

import pytest

SCENARIO = Path(__file__).parents[1]
CONVERGE = SCENARIO / "converge.yml"

CASES = {
    "unknown driver source": (
        "converge",
        {"nvidia_driver_source": "ppa"},
        "nvidia_driver_source must be one of: cuda_repo, distro, got: ppa",
    ),
    "driver version that is not a version": (
        "converge",
        {"nvidia_driver_version": "latest"},
        'nvidia_driver_version: "latest" is not a driver version of branch',
    ),
    "driver branch with no packages": (
        "converge",
        {"nvidia_driver_branch": "470", "nvidia_driver_version": ""},
        'nvidia_driver_branch "470" has no packages in Debian',
    ),
    "driver version the sources do not offer": (
        "converge",
        {"nvidia_driver_version": "{{ nvidia_driver_branch }}.1.1"},
        "no libcuda1 package at that version in the configured sources (distro)",
    ),
    "CUDA version that is not a version": (
        "converge",
        {"cuda_toolkit_versions": ["12"]},
        'cuda_toolkit_versions: "12" is not a CUDA version',
    ),
    "toolkit from a source without the package": (
        "docker",
        {"docker_nvidia_toolkit_source": "distro"},
        'docker_nvidia_toolkit_source: "distro" has no nvidia-container-toolkit package',
    ),
    "docker version that is not a version": (
        "docker",
        {"docker_version": "newest please"},
        'docker_version: "newest please" is not a package version',
    ),
    "docker user who does not exist": (
        "docker",
        {"docker_users": ["mallory"]},
        'docker_users: "mallory" is not a user on this host',
    ),
}


@pytest.fixture(scope="module")
def docker_playbook(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plays") / "docker.yml"
    path.write_text("- hosts: all\n  become: true\n  roles: [docker]\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_fails_early_and_names_the_value(run_playbook, case, docker_playbook):
    which, extra_vars, expected = CASES[case]
    run = run_playbook(CONVERGE if which == "converge" else docker_playbook, extra_vars=extra_vars)
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert any(expected in msg for msg in run.messages), run.messages
    for host, stats in run.stats.items():
        assert stats["failures"] == 1, host
        assert stats["changed"] == 0, f"{host} changed something before failing on {case}"


def test_check_mode_on_the_provisioned_hosts_changes_nothing(run_playbook):
    run = run_playbook(CONVERGE, "--check", "--diff")
    assert run.returncode == 0, run.messages or run.stderr[-2000:]
    for host, stats in run.stats.items():
        assert stats["failures"] == 0, host
        assert stats["changed"] == 0, host


def test_check_mode_renders_the_nvidia_repositories(run_playbook):
    """NVIDIA's and Docker's repositories are unreachable here: check mode renders their sources.

    The keys come from a local file (a mirror's key would). `--tags repositories` runs the source tasks
    (and the input checks, tagged `always`), which is what an operator runs to re-point a mirror.
    """
    key = "file:///usr/share/keyrings/debian-archive-keyring.gpg"
    run = run_playbook(
        CONVERGE,
        "--check",
        "--diff",
        "--tags",
        "repositories",
        "--limit",
        "gpu_stack-debian12",
        extra_vars={
            "nvidia_driver_source": "cuda_repo",
            "nvidia_driver_branch": "570",
            "nvidia_driver_version": "",
            "nvidia_driver_cuda_repo_key_url": key,
            "cuda_toolkit_source": "cuda_repo",
            "cuda_toolkit_versions": ["12.8"],
            "cuda_toolkit_package_version": "",
            "cuda_toolkit_cuda_repo_key_url": key,
            "docker_nvidia_toolkit_source": "nvidia_repo",
            "docker_nvidia_toolkit_repo_key_url": key,
            "docker_source": "docker_repo",
            "docker_repo_key_url": key,
        },
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    text = run.stdout
    assert "URIs: https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/" in text
    assert "URIs: https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH)" in text
    assert "URIs: https://download.docker.com/linux/debian" in text
    assert "Signed-By: /etc/apt/keyrings/cuda-archive-keyring.asc" in text
    assert "Pin: origin developer.download.nvidia.com" in text
