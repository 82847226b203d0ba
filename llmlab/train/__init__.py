"""Fine-tuning from one YAML file (`llmlab train`) and memory/throughput planning (`llmlab plan`)."""
