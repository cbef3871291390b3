"""Held-out evaluation: exact kNN, verification, retrieval, few-shot and `evaluate` (the metric definitions are bench.config.metrics)."""
