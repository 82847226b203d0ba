# The README's commands. Each target calls a script under scripts/; the logic lives there.
.PHONY: setup venv test lint demo demo-clean

setup:
	@bash scripts/setup.sh

# The virtualenv alone: lint needs no Docker engine or test images.
venv:
	@bash scripts/setup.sh venv

test: setup
	@bash scripts/test.sh

lint: venv
	@bash scripts/lint.sh

# The local lab: a systemd container provisioned, verified, given a model and a short fine-tune (docs/playbooks.md).
demo: setup
	@bash scripts/demo.sh

demo-clean:
	@bash scripts/demo.sh clean
