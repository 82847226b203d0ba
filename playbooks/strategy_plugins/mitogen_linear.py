"""mitogen's linear strategy, an opt-in: `ANSIBLE_STRATEGY=mitogen_linear ansible-playbook ...`.

mitogen (the ops extra) keeps one Python interpreter per host and reuses it for every task, where Ansible
starts a new one per task: a no-op site.yml takes about half the time (docs/testing.md). ansible.cfg points
strategy_plugins here rather than into mitogen's site-packages directory, whose path differs between
environments. mitogen's own plugin module is imported by its real name, as mitogen's documentation asks.
"""

from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule

__all__ = ["StrategyModule"]
