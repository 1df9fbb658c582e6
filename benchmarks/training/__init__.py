"""Training at dataset scale: memory vs cohort size, the loader's overhead, DDP vs one process.

Scripts that write results (JSON + a markdown table) under benchmarks/results/; see
docs/benchmarks.md and docs/training.md for the numbers.
"""
