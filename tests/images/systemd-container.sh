#!/usr/bin/env bash
# Start a test host: a container of a local image (build.sh) with systemd as PID 1. The one place that says how;
# Molecule's create playbook (molecule/create.yml), the demo (scripts/demo.sh) and the deploys tests call it.
#
#   systemd-container.sh [--apt-cache KEY] NAME IMAGE [DOCKER_RUN_OPTION...]
#
# systemd runs without --privileged given exactly these settings:
#   --cap-add SYS_ADMIN                   systemd mounts its own filesystems (/run, cgroups)
#   --security-opt seccomp=unconfined     systemd uses syscalls Docker's default profile blocks
#   --cgroupns host + /sys/fs/cgroup rw   systemd manages its cgroup tree
#   --tmpfs /run, /run/lock               systemd expects them to be tmpfs
#   --stop-signal SIGRTMIN+3              what systemd treats as "halt"
# Downloaded .deb files are kept on the host in /var/cache/llmlab-test/apt/KEY (KEY defaults to NAME), so a
# repeated run does not download them again. One key per container: apt takes the archive directory's lock
# without waiting, so two containers sharing one would fail each other.
# A container that exists is started (if stopped) and kept as it is. Prints "started NAME" when it made one.
# Returns once systemd has booted ("degraded" is fine: some units do not start in a container).
set -euo pipefail

apt_cache=""
if [[ "${1:-}" == "--apt-cache" ]]; then
  apt_cache="${2:?--apt-cache needs a KEY}"
  shift 2
fi
name="${1:?usage: systemd-container.sh [--apt-cache KEY] NAME IMAGE [DOCKER_RUN_OPTION...]}"
image="${2:?usage: systemd-container.sh [--apt-cache KEY] NAME IMAGE [DOCKER_RUN_OPTION...]}"
shift 2
apt_cache="/var/cache/llmlab-test/apt/${apt_cache:-$name}"

state="$(docker container inspect -f '{{.State.Status}}' "$name" 2>/dev/null || true)"
if [[ "$state" == running ]]; then
  :
elif [[ -n "$state" ]]; then
  docker start "$name" > /dev/null
  echo "started $name (was $state)"
else
  docker image inspect "$image" > /dev/null 2>&1 \
    || { echo "systemd-container: image $image is missing; make setup builds it (tests/images/build.sh)" >&2; exit 1; }
  mkdir -p "$apt_cache"
  docker run -d --name "$name" --hostname "$name" \
    --cap-add SYS_ADMIN --security-opt seccomp=unconfined \
    --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
    --tmpfs /run --tmpfs /run/lock --stop-signal SIGRTMIN+3 \
    -v "$apt_cache:/var/cache/apt/archives" \
    "$@" "$image" /sbin/init > /dev/null
  echo "started $name"
fi

status=""
for _ in $(seq 120); do
  status="$(docker exec "$name" systemctl is-system-running 2> /dev/null || true)"
  case "$status" in running | degraded) exit 0 ;; esac
  sleep 1
done
echo "systemd-container: systemd in $name did not come up in 120 s (state: ${status:-unknown})" >&2
exit 1
