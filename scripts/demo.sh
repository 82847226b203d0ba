#!/usr/bin/env bash
# make demo: the local lab end to end, against a systemd Debian 12 container (inventory/local).
#   1. start the container llmlab-demo (re-used if it exists)
#   2. playbooks/onboard.yml: site.yml, verify at level 2, the fleet report
#   3. build a tiny model on this machine and distribute it into the container's store (playbooks/models.yml)
#   4. playbooks/train.yml: a short LoRA fine-tune of it in the container as the lab user demo, who owns its
#      output (checked); metrics.json fetched back
#   5. a course's environment check in the lab environment (scripts/demo/env_check.py: torch, transformers,
#      jupyter_core, GitPython, the Docker SDK and the Docker daemon's version)
#   6. print the verification summary, the training metrics and the time of each stage
# make demo-clean (scripts/demo.sh clean) removes the container and the demo's files under .cache/<container>.
# Environment: LLMLAB_DEMO_CONTAINER (default llmlab-demo; make test uses its own, so a developer's demo
# container is left alone), LLMLAB_DEMO_IMAGE (default llmlab-test/debian:12).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_FORCE_COLOR="${ANSIBLE_FORCE_COLOR:-1}"

# The inventory host is llmlab-demo (inventory/local); its ansible_host, the container, follows this variable.
export LLMLAB_DEMO_CONTAINER="${LLMLAB_DEMO_CONTAINER:-llmlab-demo}"
container="$LLMLAB_DEMO_CONTAINER"
host=llmlab-demo
image="${LLMLAB_DEMO_IMAGE:-llmlab-test/debian:12}"
work="$PWD/.cache/$container"
logs="$work/logs"
stages=()

stage() {  # stage NAME COMMAND...: run, log to $logs/NAME.log, remember the time
  local name="$1" start end
  shift
  printf '\n=== %s\n' "$name"
  start=$(date +%s)
  if ! "$@" 2>&1 | tee "$logs/$name.log"; then
    printf 'demo: stage %s failed; its log: %s\n' "$name" "$logs/$name.log" >&2
    exit 1
  fi
  end=$(date +%s)
  stages+=("$name $((end - start))")
}

start_container() {
  # The one systemd-container recipe (tests/images/systemd-container.sh); NET_ADMIN for ufw in the
  # container's own network namespace; the wheelhouse with torch's CPU build and the host's CA bundle, as
  # molecule/lab.
  tests/images/systemd-container.sh "$container" "$image" \
    --label llmlab.demo=1 --cap-add NET_ADMIN \
    -v /opt/wheels:/opt/wheels:ro \
    -v /etc/ssl/certs/ca-certificates.crt:/etc/llmlab-demo/ca-bundle.crt:ro
}

build_model() {
  # Deterministic: the same files every time, so the store's content-derived commit does not change.
  if [ -f "$work/tiny-llama/config.json" ]; then
    echo "tiny model already built: $work/tiny-llama"
  else
    python -c 'import sys; from pathlib import Path; from llmlab.train.tiny import build_tiny_model
build_tiny_model(Path(sys.argv[1]))' "$work/tiny-llama"
    echo "built $work/tiny-llama"
  fi
}

env_check() {
  local lab_env
  lab_env=$(docker exec "$container" /usr/local/bin/llmlab config --json | python -c 'import json, sys; print(json.load(sys.stdin)["config"]["lab_env"])')
  docker exec -i "$container" "$lab_env/bin/python" - < scripts/demo/env_check.py
}

# The job ran as the lab user named in train-vars.yml: its output is theirs, not root's.
run_owner() {
  local owner
  owner=$(docker exec "$container" stat -c %U /srv/llmlab/runs/demo-lora/output/metrics.json) || return 1
  echo "the run's metrics.json belongs to $owner"
  [ "$owner" = demo ]
}

summary() {
  python scripts/demo_summary.py --reports "$PWD/reports" --metrics "$work/metrics" --host "$host"
  printf '\nplaybook recaps (the last play of each; a re-run reports changed=0):\n'
  local name
  for name in onboard models train; do
    printf '  %-8s %s\n' "$name" "$(sed 's/\x1b\[[0-9;]*m//g' "$logs/$name.log" | grep -E "^$host +:" | tail -1 | tr -s ' ')"
  done
  printf '\nstage times (s):\n'
  local total=0 s
  for s in "${stages[@]}"; do
    printf '  %-10s %5s\n' ${s}
    total=$((total + ${s##* }))
  done
  printf '  %-10s %5s\n' total "$total"
}

if [ "${1:-}" = clean ]; then
  if docker container inspect "$container" >/dev/null 2>&1; then
    # A systemd container can take a while to stop on a busy machine: wait until it is gone.
    docker rm -f "$container" >/dev/null 2>&1 || true
    for _ in $(seq 90); do
      docker container inspect "$container" >/dev/null 2>&1 || break
      sleep 2
    done
    if docker container inspect "$container" >/dev/null 2>&1; then
      echo "demo: the container $container is still there; try again: make demo-clean" >&2
      exit 1
    fi
    echo "removed the container $container"
  else
    echo "no container $container"
  fi
  rm -rf "$work"
  exit 0
fi

mkdir -p "$logs" "$work/metrics"
stage container start_container
stage onboard ansible-playbook playbooks/onboard.yml
stage model build_model
stage models ansible-playbook playbooks/models.yml -e "@scripts/demo/models-vars.yml" -e "demo_dir=$work"
stage train ansible-playbook playbooks/train.yml -e "@scripts/demo/train-vars.yml" -e "demo_dir=$work"
stage owner run_owner
stage envcheck env_check
summary
