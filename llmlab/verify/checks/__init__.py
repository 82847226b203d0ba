"""The check catalogue: importing this package registers every check, in catalogue order."""

from llmlab.verify.checks import gpu, models, perf, services, software, system, train

__all__ = ["gpu", "models", "perf", "services", "software", "system", "train"]
