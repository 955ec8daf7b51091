"""The search: space, objective, study storage, workers and the `hpo` command line."""
