"""llmlab: provision GPU servers for LLM work, and prove they work."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llmlab")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
