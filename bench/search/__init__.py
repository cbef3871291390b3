"""Equal-budget hyperparameter search ("A Metric Learning Reality Check"): `[search]` in a grid tunes every
configuration with the same number of trials, scored on validation only; the best trial's options then run
on every seed and are scored on test. space: the `[search]` table; study: trials ⇄ Optuna, rebuilt from rows;
pruning: the median rule, its bar computed by the coordinator and applied in the cell."""
