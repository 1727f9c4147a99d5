"""The Spark session used by the feature job.

``spark.master`` comes from settings (``local[*]`` by default). The session is built
on first use and reused, because starting the JVM costs seconds.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from driftline.core.settings import Settings, get_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def get_spark(settings: Settings | None = None) -> SparkSession:
    """Return the active Spark session, creating a lean one from settings if needed."""
    from pyspark.sql import SparkSession

    cfg = settings or get_settings()
    # The executors must use this interpreter (the project's venv), not whatever
    # "python3" is first on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName("driftline")
        .master(cfg.spark_master)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(cfg.spark_shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.driver.memory", "4g")
        .config("spark.sql.warehouse.dir", str(cfg.home / "spark-warehouse"))
        .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={cfg.home / 'spark'}")
    )
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
