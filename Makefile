# The README's commands. Each target calls a script under scripts/; the logic lives there.
.PHONY: setup test lint

setup:
	@bash scripts/setup.sh

test: setup
	@bash scripts/test.sh

lint: setup
	@bash scripts/lint.sh
