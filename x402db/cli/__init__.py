"""The command-line layer: the shared harness (exit codes, no abbreviations, no echo of a typed
value) and one module per command. Nothing below imports it."""
