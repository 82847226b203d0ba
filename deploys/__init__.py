"""Day-2 operations on provisioned lab hosts with pyinfra, over the playbooks' Ansible inventory.

`python -m deploys {deploy,verify,models-sync} -i INVENTORY --limit PATTERN`; see deploys/README.md.
"""
