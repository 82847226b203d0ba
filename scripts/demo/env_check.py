"""A course's environment check, run by the demo in the lab environment (scripts/demo.sh, stage envcheck).

It imports what the course's labs use, prints their versions, and asks the Docker daemon for its version;
it exits non-zero at the first thing that is missing.
"""

import docker
import git
import jupyter_core
import torch
import transformers

print(f"torch {torch.__version__} (CUDA available: {torch.cuda.is_available()})")
print(f"transformers {transformers.__version__}")
print(f"jupyter_core {jupyter_core.__version__}")
print(f"GitPython {git.__version__}")
print(f"docker SDK {docker.__version__}")
print(f"Docker daemon {docker.from_env().version()['Version']}")
