"""Names of the Kubernetes objects that carry driftline's settings on a cluster.

Terraform renders ``driftline.env`` (``infra/terraform/templates/driftline.env.tftpl``);
``docs/deployment.md`` loads it into the ConfigMap :data:`SETTINGS_CONFIG_MAP` and the
PostgreSQL password into the Secret :data:`DB_SECRET` in every namespace (``driftline``,
``airflow``, ``kubeflow``). The manifests under ``deploy/k8s`` and ``deploy/helm`` mount
both with ``envFrom``; the Kubeflow pipeline (``pipelines/train_pipeline.py``) maps them
key by key, because a KFP task can only take named keys. Tests check that the manifests
name these objects and that :data:`SETTINGS_KEYS` with :data:`OPTIONAL_SETTINGS_KEYS`
are exactly the keys of the template.
"""

from __future__ import annotations

#: ConfigMap created from Terraform's ``driftline.env``.
SETTINGS_CONFIG_MAP = "driftline-settings"
#: Secret holding the PostgreSQL password (libpq reads ``PGPASSWORD``).
DB_SECRET = "driftline-db"
#: Key of the password in :data:`DB_SECRET`, also the variable it is exposed as.
DB_PASSWORD_KEY = "PGPASSWORD"

#: Keys ``driftline.env`` always holds; a pod without one of them does not start.
SETTINGS_KEYS: tuple[str, ...] = (
    "DRIFTLINE_LAKE_URI",
    "DRIFTLINE_FEAST_ENV",
    "DRIFTLINE_FEAST_REGISTRY",
    "DRIFTLINE_MLFLOW_TRACKING_URI",
    "DRIFTLINE_MLFLOW_ARTIFACT_URI",
    "DRIFTLINE_OPTUNA_STORAGE",
    "DRIFTLINE_SPARK_MASTER",
    "DRIFTLINE_KFP_HOST",
    "DRIFTLINE_DVC_REMOTE_URI",
    "DRIFTLINE_PLATFORM_IMAGE",
    "DRIFTLINE_TRAINING_IMAGE",
    "AWS_REGION",
)
#: Keys present only in some environments (Redis only with ``enable_cache``).
OPTIONAL_SETTINGS_KEYS: tuple[str, ...] = ("DRIFTLINE_REDIS_URL",)

#: Extended resource and node taint of the GPU node group (``infra/terraform/modules/eks``).
GPU_RESOURCE = "nvidia.com/gpu"
