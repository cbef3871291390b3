"""Trackers: result rows logged into other tools (MLflow, as a grid runs or afterwards). They read rows and the
statistics of bench.report; nothing here trains, scores or writes the results file."""
