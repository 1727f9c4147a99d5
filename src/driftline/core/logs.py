"""Third-party output through Python logging, at its own level, without progress bars.

Airflow's task runner records everything a task writes to stderr at level ``error``.
MLflow installs its own stderr handler on import (so its INFO lines became "errors"),
and ``tqdm`` progress bars draw on stderr. :func:`route_library_logs` makes MLflow's
loggers propagate to the root logger instead (Airflow's task logging, or whatever the
process configured, then shows them at INFO) and turns tqdm bars off. Spark's JVM is
quietened where its session is built (:mod:`driftline.data.spark`).

Nothing happens at import: entry points and the functions that bring these libraries in
call :func:`route_library_logs` (it is idempotent and cheap).
"""

from __future__ import annotations

import logging
import os
import sys

#: Environment defaults that keep third-party output in logging: inherited by every
#: child process (a process launcher may set them too: ``env`` for Airflow's processes).
LIBRARY_LOG_ENV = {
    # MLflow: no handler of its own on import; its loggers propagate to the root logger.
    "MLFLOW_CONFIGURE_LOGGING": "false",
    # tqdm (Feast, Optuna, Hugging Face helpers, ...): no progress bars.
    "TQDM_DISABLE": "1",
}
#: Loggers MLflow configures on import when MLFLOW_CONFIGURE_LOGGING is on.
MLFLOW_LOGGERS = ("mlflow", "sqlalchemy.engine", "alembic", "huey")
#: Loggers whose INFO is chatter, not news: MLflow's database libraries (the levels MLflow
#: itself gives them), Great Expectations' import-time registries (hundreds of lines) and
#: py4j's connection chatter when a Spark session closes.
QUIET_LOGGERS = {
    "sqlalchemy.engine": logging.WARNING,
    "alembic": logging.WARNING,
    "great_expectations._docs_decorators": logging.WARNING,
    "great_expectations.expectations.registry": logging.WARNING,
    "py4j": logging.WARNING,
}


def route_library_logs() -> None:
    """Send third-party logging through the logging module and turn progress bars off.

    Sets :data:`LIBRARY_LOG_ENV` where the process has not chosen otherwise (before
    MLflow is imported, MLflow then leaves logging alone), and, if MLflow was already
    imported with its own stderr handler, removes that handler so its records
    propagate. ``mlflow`` keeps INFO; :data:`QUIET_LOGGERS` get WARNING where the
    process left their level unset.
    """
    for name, value in LIBRARY_LOG_ENV.items():
        os.environ.setdefault(name, value)
    for name, level in QUIET_LOGGERS.items():
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:  # never override a level the process chose
            logger.setLevel(level)
    if "mlflow" not in sys.modules or os.environ["MLFLOW_CONFIGURE_LOGGING"] != "false":
        return
    for name in MLFLOW_LOGGERS:
        logger = logging.getLogger(name)
        own = [h for h in logger.handlers if _is_mlflow_stream_handler(h)]
        if own:
            for handler in own:
                logger.removeHandler(handler)
            logger.propagate = True


def _is_mlflow_stream_handler(handler: logging.Handler) -> bool:
    """Whether ``handler`` is the stderr handler MLflow installs on import."""
    stream = getattr(handler, "stream", None)
    return type(stream).__module__.startswith("mlflow.")
