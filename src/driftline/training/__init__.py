"""Training plane: training set, torch models, Optuna tuning, evaluation, registry.

Every submodule is imported lazily by its callers (torch, optuna and mlflow are heavy);
importing this package has no side effects.
"""
