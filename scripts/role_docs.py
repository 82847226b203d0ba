#!/usr/bin/env python3
"""The roles' variable tables, generated from meta/argument_specs.yml (the one source of a role's variables).

    scripts/role_docs.py            rewrite the "## Variables" section of every roles/<name>/README.md
    scripts/role_docs.py --check    change nothing; exit 1 naming every disagreement:
                                    a variable in defaults/main.yml that argument_specs does not declare,
                                    a default that differs between the two, an option without a description,
                                    a README table that is not what argument_specs generates

The test suite runs the check (tests/test_role_docs.py), so a drifted README or default fails `make test`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROLES = Path(__file__).resolve().parents[1] / "roles"
BEGIN = "<!-- BEGIN VARIABLES: generated from meta/argument_specs.yml by scripts/role_docs.py -->"
END = "<!-- END VARIABLES -->"
SHORT = 48  # a default longer than this (usually a Jinja expression) is shown as "derived"


@dataclass(frozen=True)
class Role:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    def specs(self) -> dict:
        return yaml.safe_load((self.path / "meta/argument_specs.yml").read_text(encoding="utf-8"))[
            "argument_specs"
        ]

    def defaults(self) -> dict:
        file = self.path / "defaults/main.yml"
        return (yaml.safe_load(file.read_text(encoding="utf-8")) or {}) if file.exists() else {}


def shown(value: object) -> str:
    text = value if isinstance(value, str) and value else json.dumps(value)
    if (isinstance(value, str) and "{{" in value) or len(text) > SHORT:
        return "derived (defaults/main.yml)"
    return f"`{text}`"


def default_cell(name: str, option: dict, defaults: dict) -> str:
    if "default" in option:
        return shown(option["default"])
    if name in defaults:
        return shown(defaults[name])
    return "required" if option.get("required") else "unset"


def table(role: Role) -> str:
    defaults = role.defaults()
    parts = []
    for entry, spec in role.specs().items():
        how = "the role (`main`)" if entry == "main" else f"`tasks_from: {entry}`"
        parts.append(f"### {how}: {spec.get('short_description', '').strip()}\n")
        parts.append("| variable | default | description |\n| --- | --- | --- |")
        for name, option in (spec.get("options") or {}).items():
            description = " ".join(str(option.get("description", "")).split()).replace("|", "\\|")
            if option.get("no_log"):
                description += " Secret (`no_log`): keep it in ansible-vault."
            parts.append(f"| `{name}` | {default_cell(name, option, defaults)} | {description} |")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def section(role: Role) -> str:
    return (
        f"{BEGIN}\n\nEvery variable of the role, from `meta/argument_specs.yml` (Ansible checks types and "
        "choices against it before the role runs; a variable with the role's prefix that is not listed here "
        "is refused by name).\n\n" + table(role) + f"\n{END}\n"
    )


def with_section(readme: str, role: Role) -> str:
    """The README with its "## Variables" section replaced by the generated one."""
    if BEGIN in readme and END in readme:
        head, rest = readme.split(BEGIN, 1)
        return head + section(role) + "\n" + rest.split(END, 1)[1].lstrip("\n")
    marker = "\n## Variables\n"
    if marker not in readme:
        return readme.rstrip("\n") + "\n" + marker + "\n" + section(role)
    head, rest = readme.split(marker, 1)
    tail = rest[rest.find("\n## ") :] if "\n## " in rest else ""
    return head + marker + "\n" + section(role) + tail


def problems(role: Role) -> list[str]:
    found = []
    specs, defaults = role.specs(), role.defaults()
    declared = {
        name: option for spec in specs.values() for name, option in (spec.get("options") or {}).items()
    }
    for name in defaults:
        if name not in declared:
            found.append(f"{role.name}: {name} is in defaults/main.yml but not in meta/argument_specs.yml")
    for name, option in declared.items():
        if not str(option.get("description", "")).strip():
            found.append(f"{role.name}: {name} has no description in meta/argument_specs.yml")
        if "default" in option and name in defaults and option["default"] != defaults[name]:
            found.append(
                f"{role.name}: {name} defaults to {option['default']!r} in argument_specs "
                f"but {defaults[name]!r} in defaults/main.yml"
            )
    for name, option in (specs.get("main", {}).get("options") or {}).items():
        if "default" in option and name not in defaults:
            found.append(f"{role.name}: {name} has a default in argument_specs but none in defaults/main.yml")
    readme = role.path / "README.md"
    if not readme.exists() or with_section(readme.read_text(encoding="utf-8"), role) != readme.read_text(
        encoding="utf-8"
    ):
        found.append(f"{role.name}: README.md's variable table is stale; run scripts/role_docs.py")
    return found


def roles(root: Path = ROLES) -> list[Role]:
    return [Role(p) for p in sorted(root.iterdir()) if (p / "meta/argument_specs.yml").exists()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="change nothing; report disagreements")
    parser.add_argument("--roles", type=Path, default=ROLES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.check:
        found = [problem for role in roles(args.roles) for problem in problems(role)]
        for problem in found:
            print(problem, file=sys.stderr)
        return 1 if found else 0
    for role in roles(args.roles):
        readme = role.path / "README.md"
        text = readme.read_text(encoding="utf-8") if readme.exists() else f"# {role.name}\n"
        readme.write_text(with_section(text, role), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
