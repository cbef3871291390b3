"""The run path: a grid's cells are built, trained under the budget, evaluated and turned into rows."""
