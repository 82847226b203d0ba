#!/usr/bin/env bash
# make test: lint, pytest, the demo from a fresh container, then every Molecule scenario in sequence; a
# timing summary at the end.
# Every stage runs even when an earlier one failed, so one run shows all problems; the exit code is
# non-zero if any stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_FORCE_COLOR="${ANSIBLE_FORCE_COLOR:-0}" PY_COLORS="${PY_COLORS:-0}"

declare -a names=() seconds=() results=()
failed=0

stage() {  # stage NAME COMMAND...
  local name="$1" start end rc
  shift
  printf '\n=== %s ===\n' "$name"
  start=$(date +%s)
  "$@"
  rc=$?
  end=$(date +%s)
  names+=("$name"); seconds+=($((end - start)))
  if ((rc == 0)); then results+=(ok); else results+=("FAILED (exit $rc)"); failed=1; fi
}

# LLMLAB_SCENARIOS="base lab" runs only those scenarios (while working on a role); default: all of them
# except the ones in `separate`, too long for every run (fleet: six hosts, about 40 minutes here:
# docs/testing.md); run one with LLMLAB_SCENARIOS=NAME make test.
separate=(fleet)
scenarios=()
if [[ -n "${LLMLAB_SCENARIOS:-}" ]]; then
  read -r -a scenarios <<<"$LLMLAB_SCENARIOS"
else
  for file in molecule/*/molecule.yml; do
    name="$(basename "$(dirname "$file")")"
    [[ " ${separate[*]} " == *" $name "* ]] || scenarios+=("$name")
  done
fi

# The demo as a newcomer meets it: a container started a minute ago from the test image (empty package
# lists), site.yml, verify, a model, a fine-tune and the course's environment check; its own container name,
# so a developer's `make demo` container is left alone. Removed before and after.
fresh_demo() {
  local rc demo=(env LLMLAB_DEMO_CONTAINER=llmlab-demo-test bash scripts/demo.sh)
  "${demo[@]}" clean && "${demo[@]}"
  rc=$?
  "${demo[@]}" clean
  return $rc
}

total_start=$(date +%s)
stage lint bash scripts/lint.sh
stage pytest pytest -q tests
[[ -n "${LLMLAB_SCENARIOS:-}" ]] || stage "demo (fresh)" fresh_demo
for scenario in "${scenarios[@]}"; do
  stage "molecule $scenario" molecule -c molecule/base.yml test -s "$scenario"
done

printf '\n=== timing summary ===\n'
for i in "${!names[@]}"; do
  printf '%-28s %6ss  %s\n' "${names[$i]}" "${seconds[$i]}" "${results[$i]}"
done
printf '%-28s %6ss\n' total $(($(date +%s) - total_start))
exit $failed
