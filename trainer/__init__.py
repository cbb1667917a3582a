"""The txrisk trainer: data, model selection, tuning, evaluation and bundles."""
