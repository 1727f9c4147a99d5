"""Kubeflow Pipelines components: each one is a single call into ``driftline``."""
