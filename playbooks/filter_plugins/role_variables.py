"""Filters for the roles' input checks: refuse a variable with a role's prefix that the role does not declare.

A typo in an inventory (`llmlab_verify_intervall`) would otherwise be accepted and do nothing. The declared
names are the options of every entry point in the role's meta/argument_specs.yml, the one source of a role's
variables.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml


def declared_variables(specs_path: str) -> list[str]:
    """Every option of every entry point in a role's argument_specs.yml."""
    specs = yaml.safe_load(Path(specs_path).read_text(encoding="utf-8"))["argument_specs"]
    return sorted({name for entry in specs.values() for name in (entry.get("options") or {})})


def undeclared_variables(names: list[str], specs_path: str) -> list[str]:
    """One message per name in `names` that the role does not declare, with the closest declared name."""
    declared = declared_variables(specs_path)
    role = Path(specs_path).parent.parent.name
    messages = []
    for name in sorted(set(names) - set(declared)):
        close = difflib.get_close_matches(name, declared, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"see roles/{role}/README.md for its variables"
        messages.append(f"{name}: not a variable of the {role} role; {hint}")
    return messages


class FilterModule:
    def filters(self) -> dict:
        return {"undeclared_variables": undeclared_variables}
