"""Readers of result rows: the statistics every view shares (paired comparisons over shared test items, power).
Pure functions of rows and their per-item files; nothing here trains or writes results."""
