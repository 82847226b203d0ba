#!/usr/bin/env bash
# make lint: ruff (Python), yamllint (all YAML), ansible-lint with the production profile.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
ruff check .
ruff format --check .
yamllint --strict .
ansible-lint --offline --profile production
