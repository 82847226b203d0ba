"""Training data on disk: reading dataset files of every supported type, and `llmlab data check`."""
