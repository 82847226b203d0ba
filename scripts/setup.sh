#!/usr/bin/env bash
# make setup: the project's virtualenv, a usable Docker engine, and the local test images.
# `setup.sh venv` (make venv, what make lint needs): the virtualenv only.
# Idempotent: a second run checks each piece and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PYTHON="${PYTHON:-python3}"
# CPU build of torch for tests on machines without a GPU (pip finds it in the configured wheelhouse);
# a GPU host installs the CUDA build through `pip install -e .[ml]` instead.
TORCH_SPEC="${LLMLAB_TORCH_SPEC:-torch==2.13.0}"
EXTRAS="${LLMLAB_EXTRAS:-ml,ops,dev}"

say() { printf 'setup: %s\n' "$*"; }
is_root() { [[ "$(id -u)" == 0 ]]; }

apt_install() {  # apt_install PACKAGE... (only as root; otherwise say what to run)
  if ! is_root; then
    say "missing: $*. Run: sudo apt-get install -y $*   (then re-run make setup)"
    exit 1
  fi
  say "installing Debian packages: $*"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" > /dev/null
}

python_env() {
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { say "Python >= 3.11 is required ($PYTHON is $("$PYTHON" --version 2>&1))"; exit 1; }
  "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
  # Reinstall only when what we install changed (pyproject, the torch spec or the extras).
  local stamp="$VENV/.llmlab-installed"
  local want
  want="$(cat pyproject.toml <(echo "$TORCH_SPEC $EXTRAS") | sha256sum | cut -c1-16)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    say "virtualenv $VENV is up to date"
    return
  fi
  say "installing llmlab[$EXTRAS] into $VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "$TORCH_SPEC"
  "$VENV/bin/pip" install -q -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
}

docker_engine() {
  if docker info > /dev/null 2>&1; then
    say "Docker engine answers"
    return
  fi
  if ! is_root; then
    say "no Docker engine answers. Install and start one (Debian: sudo apt-get install docker.io &&"
    say "sudo systemctl start docker), add yourself to the docker group, and re-run make setup."
    exit 1
  fi
  command -v dockerd > /dev/null || apt_install docker.io
  if [[ -d /run/systemd/system ]]; then
    systemctl start docker
  else
    # No systemd (a container or a sandbox): run dockerd in the background, logging next to it.
    say "starting dockerd (log: /var/log/llmlab-dockerd.log)"
    nohup dockerd > /var/log/llmlab-dockerd.log 2>&1 &
  fi
  for _ in $(seq 60); do
    docker info > /dev/null 2>&1 && { say "Docker engine started"; return; }
    sleep 1
  done
  say "dockerd did not answer within 60 s; see /var/log/llmlab-dockerd.log"
  exit 1
}

test_images() {
  command -v debootstrap > /dev/null || apt_install debootstrap
  bash tests/images/build.sh 12 13
}

# The hub scenario's browser test drives Debian's Chromium through its chromedriver (selenium, the dev extra).
browser() {
  command -v chromium > /dev/null && command -v chromedriver > /dev/null && return
  apt_install chromium chromium-driver
}

case "${1:-all}" in
  venv) python_env ;;
  all) python_env; docker_engine; test_images; browser ;;
  *) say "unknown part '$1' (valid: venv, or nothing for all)"; exit 2 ;;
esac
say "done"
