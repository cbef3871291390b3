"""metric-bench: a benchmark harness for deep metric learning and siamese networks."""
