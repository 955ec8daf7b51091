"""Everything Optuna: the search space, objectives, the study and its storage, workers, and the `hpo` CLI."""
