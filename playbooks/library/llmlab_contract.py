#!/usr/bin/python
"""Publish a role's contract: /etc/llmlab/config.d/<role>.yaml (docs/verify.md#contracts).

Every role ends by publishing what it provides; as a directory task and a copy that was three round trips
to the host on every converge, here one. The role renders the YAML (to_nice_yaml); this adds the header
that says who wrote the file, creates the directory and replaces the file only when it differs.
"""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.llmlab_files import read_text, write_file

DOCUMENTATION = r"""
module: llmlab_contract
short_description: Write a role's contract to /etc/llmlab/config.d/<role>.yaml
options:
  role: {description: The publishing role; the file is named after it., type: str, required: true}
  content: {description: The contract as YAML text., type: str, required: true}
"""

DIRECTORY = "/etc/llmlab/config.d"
HEADER = "# Published by the {role} role; llmlab merges it over /etc/llmlab/config.yaml.\n"


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "role": {"type": "str", "required": True},
            "content": {"type": "str", "required": True},
        },
        supports_check_mode=True,
    )
    role, content = module.params["role"], module.params["content"]
    path = f"{DIRECTORY}/{role}.yaml"
    text = HEADER.format(role=role) + content.rstrip("\n") + "\n"
    diff = {}
    if module._diff:  # the file as it was, read before write_file replaces it
        diff = {"before_header": path, "after_header": path, "before": read_text(path) or "", "after": text}
    module.exit_json(changed=write_file(module, path, text), path=path, diff=diff)


if __name__ == "__main__":
    main()
