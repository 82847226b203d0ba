#!/usr/bin/python
"""The base role's hold hook as one module run (roles/base/tasks/holds.yml uses it).

Every role that holds packages runs the hook on every converge (four times on a GPU server); as separate
tasks (read the record, gather the installed packages, hold, release, write the record, write
unattended-upgrades' blacklist) it cost seven round trips to the host, about 3.5 s a run. This does the
same in one: dpkg's selections are read once with dpkg-query and changed with one `dpkg --set-selections`.
"""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.llmlab_files import read_text, write_file

DOCUMENTATION = r"""
module: package_holds
short_description: Hold an owner's installed packages and release those it no longer lists
description:
  - Holds (apt-mark hold) each listed package that is installed, releases each package the owner's record
    lists that is no longer listed, and writes the record and unattended-upgrades' blacklist.
options:
  owner: {description: The role holding the packages, named in the record., type: str, required: true}
  packages: {description: The packages to hold; those not installed are skipped., type: list, elements: str}
  record: {description: The owner's record of the packages it holds., type: path, required: true}
  blacklist: {description: The owner's unattended-upgrades configuration file., type: path, required: true}
  blacklist_content: {description: What the blacklist file holds (rendered by the role)., type: str}
"""

RECORD_HEADER = "# Held for {owner} by the llmlab base role; released by it when removed from the list.\n"


def recorded(text: str) -> set[str]:
    """The packages a record lists (its comments and blank lines left out)."""
    return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}


def installed_selections(dpkg_query_output: str) -> dict[str, str]:
    """{package: selection (install, hold, ...)} of the installed packages, from dpkg-query's lines."""
    selections = {}
    for line in dpkg_query_output.splitlines():
        name, _, rest = line.partition("\t")
        want, _, status = rest.partition("\t")
        if status == "installed":
            selections[name] = want
    return selections


def plan(wanted: set[str], before: set[str], selections: dict[str, str]) -> dict[str, str]:
    """{package: new selection}: hold the wanted installed packages, release those dropped from the list."""
    changes = {name: "hold" for name in wanted if selections.get(name, "hold") != "hold"}
    changes.update({name: "install" for name in before - wanted if selections.get(name) == "hold"})
    return dict(sorted(changes.items()))


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "owner": {"type": "str", "required": True},
            "packages": {"type": "list", "elements": "str", "default": []},
            "record": {"type": "path", "required": True},
            "blacklist": {"type": "path", "required": True},
            "blacklist_content": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    params = module.params
    wanted = set(params["packages"])
    before = recorded(read_text(params["record"]) or "")
    _, out, _ = module.run_command(
        ["dpkg-query", "-W", "-f=${Package}\t${db:Status-Want}\t${db:Status-Status}\n"], check_rc=True
    )
    changes = plan(wanted, before, installed_selections(out))
    if changes and not module.check_mode:
        lines = "".join(f"{name} {selection}\n" for name, selection in changes.items())
        module.run_command(["dpkg", "--set-selections"], data=lines, binary_data=True, check_rc=True)
    record = RECORD_HEADER.format(owner=params["owner"]) + "".join(f"{name}\n" for name in sorted(wanted))
    files_changed = [
        write_file(module, params["record"], record),
        write_file(module, params["blacklist"], params["blacklist_content"]),
    ]
    module.exit_json(
        changed=bool(changes) or any(files_changed),
        held=sorted(name for name, selection in changes.items() if selection == "hold"),
        released=sorted(name for name, selection in changes.items() if selection == "install"),
    )


if __name__ == "__main__":
    main()
