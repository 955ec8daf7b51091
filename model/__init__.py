"""The VGG-Face base and its weights, the searched head, and export. Never imports Optuna."""
