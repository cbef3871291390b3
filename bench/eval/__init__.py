"""Held-out evaluation: exact kNN, verification, retrieval, few-shot, and the metric definitions."""
