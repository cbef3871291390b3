"""metric-bench: a benchmark harness for deep metric learning and siamese networks."""

from bench.run.clock import quiet_threads as _quiet_threads

_quiet_threads()  # before anything imports torch: OpenMP's idle threads sleep instead of spinning (bench.run.clock)
