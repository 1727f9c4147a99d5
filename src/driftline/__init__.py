"""driftline: a DAG-orchestrated MLOps platform for card-fraud scoring.

The package holds all logic. Airflow DAGs (``dags/``), Kubeflow components
(``components/``), DVC stages (``dvc.yaml``) and the ``driftline`` CLI only wire
calls into it. Importing it has no side effects.
"""

__version__ = "0.1.0"
