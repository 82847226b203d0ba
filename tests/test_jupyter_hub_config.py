"""The jupyter role's hub configuration as JupyterHub reads it, for a PAM and an OAuth login.

The role's own template, rendered by Ansible (its template module, the role's defaults and variables, the
contracts base and python_env publish) on the controller, then executed as JupyterHub executes
jupyterhub_config.py: with `c = get_config()`, here an object that records every `c.Section.key = value`.
No OAuth provider is reachable from these machines, so an OAuth login itself is not exercised: this checks
that the passthrough hands the authenticator exactly the settings given and drops the PAM-only settings.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
ROLE = ROOT / "roles" / "jupyter"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"  # the virtualenv's, as Molecule uses
OAUTH = {
    "jupyter_hub_authenticator_class": "oauthenticator.generic.GenericOAuthenticator",
    "jupyter_hub_authenticator_config": {
        "GenericOAuthenticator.client_id": "llmlab-hub",
        "GenericOAuthenticator.client_secret": "a-test-secret",
        "GenericOAuthenticator.oauth_callback_url": "https://lab.example/hub/oauth_callback",
        "GenericOAuthenticator.authorize_url": "https://idp.example/oauth/authorize",
        "GenericOAuthenticator.token_url": "https://idp.example/oauth/token",
        "GenericOAuthenticator.userdata_url": "https://idp.example/oauth/userinfo",
        "GenericOAuthenticator.scope": ["openid", "profile"],
        "GenericOAuthenticator.allowed_groups": ["llmlab"],
        "GenericOAuthenticator.manage_groups": True,
    },
}
PLAYBOOK = """
- name: Render the hub configuration
  hosts: localhost
  connection: local
  gather_facts: false
  vars_files: ["{role}/defaults/main.yml", "{role}/vars/main.yml"]
  vars:
    # What base and python_env publish in /etc/llmlab/config.d (the role reads them with slurp).
    __jupyter_contracts:
      results: [{{content: "{{{{ 'lab_group: llmlab\\nlab_env: /opt/llmlab/env\\n' | b64encode }}}}"}}]
  tasks:
    - name: Write the hub configuration
      ansible.builtin.template:
        src: "{role}/templates/jupyterhub_config.py.j2"
        dest: "{dest}"
        mode: "0600"
"""


class Section(dict):
    def __getattr__(self, key):
        return self.setdefault(key, {})

    def __setattr__(self, key, value):
        self[key] = value


class Config(dict):
    """What `c` is to jupyterhub_config.py: c.Section.key = value."""

    def __getattr__(self, key):
        return self.setdefault(key, Section())


def render(tmp_path: Path, **variables) -> Config:
    tmp_path.mkdir()
    dest = tmp_path / "jupyterhub_config.py"
    playbook = tmp_path / "render.yml"
    playbook.write_text(PLAYBOOK.format(role=ROLE, dest=dest), encoding="utf-8")
    extra = {
        "ansible_python_interpreter": sys.executable,
        "jupyter_mode": "hub",
        "jupyter_ip": "0.0.0.0",
        "jupyter_tls_self_signed": True,
        **variables,
    }
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    run = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "--extra-vars", json.dumps(extra), str(playbook)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    config = Config()
    exec(compile(dest.read_text(encoding="utf-8"), str(dest), "exec"), {"get_config": lambda: config})
    return config


@pytest.fixture(scope="module")
def tmp_module(tmp_path_factory):
    return tmp_path_factory.mktemp("hub-config")


def test_the_default_is_pam_against_the_lab_group(tmp_module):
    c = render(tmp_module / "pam")
    assert c.JupyterHub["authenticator_class"] == "jupyterhub.auth.PAMAuthenticator"
    assert c.PAMAuthenticator == {"allowed_groups": {"llmlab"}, "open_sessions": False}
    assert c.JupyterHub["bind_url"] == "https://0.0.0.0:8888/"


def test_an_oauth_authenticator_gets_exactly_its_settings(tmp_module):
    c = render(tmp_module / "oauth", jupyter_hub_admins=["dana"], **OAUTH)
    assert c.JupyterHub["authenticator_class"] == "oauthenticator.generic.GenericOAuthenticator"
    assert c.Authenticator["admin_users"] == {"dana"}
    given = {key.split(".", 1)[1]: value for key, value in OAUTH["jupyter_hub_authenticator_config"].items()}
    assert c.GenericOAuthenticator == given  # JSON values arrive as Python values: lists, booleans
    assert "PAMAuthenticator" not in c  # PAM's groups and sessions are not forced on another authenticator
    # The rest of the hub is unchanged by the authenticator.
    assert c.JupyterHub["spawner_class"] == "systemdspawner.SystemdSpawner"


def test_no_limits_are_none_not_json_null(tmp_module):
    c = render(tmp_module / "unlimited", jupyter_hub_mem_limit="", jupyter_hub_cpu_limit=0)
    assert c.SystemdSpawner["mem_limit"] is None
    assert c.SystemdSpawner["cpu_limit"] is None
