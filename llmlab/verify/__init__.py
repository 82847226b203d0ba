"""`llmlab verify`: is this host what the inventory says it is, and healthy enough to run jobs?

checks/ holds the catalogue (one module per category), sources.py and nvml.py the data sources the checks
read through small interfaces (so tests can feed them), runner.py selects and runs checks, report.py renders
the table, the versioned JSON and the Prometheus textfile, cli.py wires it to `llmlab verify`.
"""
