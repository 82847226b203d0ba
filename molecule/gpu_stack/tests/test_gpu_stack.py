"""Behaviour of the GPU stack roles on a converged Debian 12/13 container (testinfra, `molecule verify`).

No GPU and no kernel module here: the driver's user-space packages and configuration are checked, not a
loaded module. molecule.yml pins the driver and the CUDA runtime per release.
"""

import json

import pytest

from llmlab.config import load_config
from llmlab.verify.settings import verify_settings

DRIVER = {"12": "535.261.03", "13": "550.163.01"}
CUDART = {"12": ("libcudart11.0", "11.8.89~11.8.0-5~deb12u1"), "13": ("libcudart12", "12.4.127~12.4.1-2")}


@pytest.fixture
def release(host):
    return host.system_info.release.split(".")[0]


def held(host):
    return set(host.run("apt-mark showhold").stdout.split())


@pytest.mark.parametrize("name", ["libcuda1", "libnvidia-ml1", "nvidia-smi", "nvidia-kernel-dkms"])
def test_driver_packages_are_at_the_pinned_version_and_held(host, release, name):
    package = host.package(name)
    assert package.is_installed
    assert package.version.startswith(DRIVER[release] + "-")
    assert name in held(host)


def test_every_installed_package_of_the_driver_version_is_held(host, release):
    versions = host.run("dpkg-query -W -f '${Package} ${Version}\\n'").stdout.splitlines()
    of_driver = {line.split()[0] for line in versions if line.split()[1].startswith(DRIVER[release] + "-")}
    assert len(of_driver) >= 5, of_driver
    assert of_driver <= held(host)
    assert host.file("/etc/llmlab/held-packages.d/nvidia_driver").contains("^libcuda1$")


def test_unattended_upgrades_skip_the_driver(host):
    dump = host.run("apt-config dump Unattended-Upgrade::Package-Blacklist").stdout
    assert '"^libcuda1$";' in dump
    assert '"^nvidia-smi$";' in dump


def test_desktop_packages_are_not_installed(host):
    # compute flavour, --no-install-recommends: no X server on a GPU server
    assert not host.package("xserver-xorg-core").is_installed
    assert not host.package("nvidia-settings").is_installed


def test_nouveau_is_blacklisted(host):
    conf = host.file("/etc/modprobe.d/llmlab-blacklist-nouveau.conf")
    assert conf.contains("^blacklist nouveau$")
    assert conf.contains("^options nouveau modeset=0$")


def test_persistenced_is_enabled_at_boot(host):
    assert host.service("nvidia-persistenced").is_enabled


def test_non_free_source_is_deb822_with_signed_by(host):
    source = host.file("/etc/apt/sources.list.d/llmlab-debian-nonfree.sources").content_string
    assert "Components: contrib non-free non-free-firmware" in source
    assert "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" in source
    # the host's own sources are not edited
    assert "non-free" not in host.file("/etc/apt/sources.list").content_string


def test_no_reboot_is_claimed_in_a_container(host):
    # nvidia_driver_build_module is off in containers: no module to load, so no reboot is requested.
    assert not host.file("/run/reboot-required").exists


def test_cuda_runtime_is_at_the_pinned_version_and_held(host, release):
    name, version = CUDART[release]
    assert host.package(name).version == version
    assert name in held(host)
    assert host.file("/etc/llmlab/held-packages.d/cuda_toolkit").contains(f"^{name}$")


def test_cuda_profile_sets_cuda_home_and_path(host):
    out = host.run("bash -lc 'echo $CUDA_HOME; echo $PATH'").stdout.splitlines()
    assert out[0] == "/usr/lib/cuda"
    assert out[1].split(":")[0] == "/usr/lib/cuda/bin"
    # sourcing twice does not add the directory twice
    profile = "/etc/profile.d/llmlab-cuda.sh"
    twice = host.run(f"bash -c '. {profile}; . {profile}; echo $PATH'").stdout
    assert twice.split(":").count("/usr/lib/cuda/bin") == 1


def test_cuda_linker_path_is_configured(host):
    assert host.file("/etc/ld.so.conf.d/llmlab-cuda.conf").contains("^/usr/lib/cuda/lib64$")
    assert "libcudart.so" in host.run("ldconfig -p").stdout


def test_daemon_json_has_managed_keys_runtime_and_unmanaged_keys(host):
    config = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert config["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    assert config["log-driver"] == "json-file"
    assert config["log-opts"]["max-size"] == "100m"
    assert config["log-opts"]["max-file"] == "3"
    assert config["registry-mirrors"] == ["https://mirror.example.internal"]
    # written by someone else before the role ran (prepare.yml): kept, including a nested key
    assert config["storage-driver"] == "vfs"
    assert config["labels"] == ["site=molecule"]
    assert config["log-opts"]["compress"] == "true"


def test_nvidia_ctk_ran_once_only(host):
    calls = host.file("/var/log/nvidia-ctk-calls.log").content_string.splitlines()
    # converge registered the runtime; the idempotence run found it registered and did not call again
    assert calls == ["runtime configure --runtime=docker --config=/etc/docker/daemon.json"]


def test_docker_answers_with_the_merged_configuration(host):
    info = json.loads(host.run("docker info --format '{{json .}}'").stdout)
    assert info["Driver"] == "vfs"
    assert "nvidia" in info["Runtimes"]
    assert "https://mirror.example.internal/" in info["RegistryConfig"]["Mirrors"]


def test_docker_users_can_use_docker_without_sudo(host):
    assert "docker" in host.user("alice").groups
    result = host.run("su - alice -c 'docker version --format {{.Server.Version}}'")
    assert result.rc == 0, result.stderr
    assert result.stdout.strip()


def test_docker_packages_are_held(host):
    assert {"docker.io", "containerd", "runc"} <= held(host)


def test_docker_user_chain_drops_published_ports_from_other_networks(host):
    assert host.service("llmlab-docker-user").is_enabled
    rules = host.run("iptables -S DOCKER-USER").stdout.splitlines()
    assert "-A DOCKER-USER -s 192.168.0.0/16 -m conntrack --ctstate DNAT -j RETURN" in rules
    assert "-A DOCKER-USER -m conntrack --ctstate DNAT -j DROP" in rules
    assert rules.index("-A DOCKER-USER -m conntrack --ctstate DNAT -j DROP") == len(rules) - 2
    # Docker sends forwarded traffic through the chain first
    assert "-A FORWARD -j DOCKER-USER" in host.run("iptables -S FORWARD").stdout


# --- the roles' contracts (/etc/llmlab/config.d) ---


def test_the_contracts_make_a_host_config_that_expects_docker_and_the_gpu_stack(host, release, tmp_path):
    """What the three roles published, merged by llmlab's own loader as `llmlab verify` on the host would,
    with no override of what verify expects: Docker and the NVIDIA runtime, the pinned driver, the toolkit."""
    (tmp_path / "config.d").mkdir()
    (tmp_path / "config.yaml").write_text("{}\n")
    for role in ("nvidia_driver", "cuda_toolkit", "docker"):
        contract = host.file(f"/etc/llmlab/config.d/{role}.yaml")
        assert (contract.user, contract.group, contract.mode) == ("root", "root", 0o644)
        (tmp_path / "config.d" / f"{role}.yaml").write_text(contract.content_string)
    expect = verify_settings(load_config(tmp_path / "config.yaml")).expect
    assert expect.docker is True and expect.nvidia_runtime is True
    assert expect.driver_version == DRIVER[release]
    assert expect.cuda_toolkits == [{"12": "11.8", "13": "12.4"}[release]]
    assert (expect.gpu_count, expect.gpu_model) == ({"12": (2, "L4"), "13": (0, None)}[release])


def test_the_runtime_each_published_toolkit_names_loads(host, release):
    """What verify's software.cuda_toolkit loads on a GPU host: the soname of the published version."""
    soname = {"12": "libcudart.so.11.0", "13": "libcudart.so.12"}[release]
    assert host.run(f"python3 -c 'import ctypes; ctypes.CDLL(\"{soname}\")'").rc == 0
