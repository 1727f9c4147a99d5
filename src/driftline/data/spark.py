"""The Spark session used by the feature job.

``spark.master`` comes from settings (``local[*]`` by default; the production profile
sets its standalone master, ``spark://127.0.0.1:<port>``). The session is built
on first use and reused, because starting the JVM costs seconds.

The session is quiet: Airflow's task runner records a task's stderr at level ``error``,
and the JVM logs to stderr. So the console progress bar (``[Stage 3:> (0 + 4) / 4]``,
which PySpark turns on for its gateway) is off, and the driver JVM starts with a log4j2
configuration at WARN (:data:`LOG4J2_PROPERTIES`, written under ``$DRIFTLINE_HOME/spark``)
instead of Spark's default profile at INFO, so only warnings and errors reach stderr.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from driftline.core.logs import route_library_logs
from driftline.core.settings import Settings, get_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

#: The driver JVM's log4j2 configuration: Spark's default profile at WARN instead of
#: INFO, with the loggers that warn about nothing actionable here (no native Hadoop
#: library on a laptop, old Parquet statistics) raised to ERROR.
LOG4J2_PROPERTIES = """\
# Written by driftline (driftline.data.spark): the Spark JVM logs warnings and errors only.
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.nativecode.name = org.apache.hadoop.util.NativeCodeLoader
logger.nativecode.level = error
logger.jetty.name = org.sparkproject.jetty
logger.jetty.level = error
logger.metastore.name = org.apache.hadoop.hive.metastore.RetryingHMSHandler
logger.metastore.level = fatal
logger.metastore2.name = org.apache.hadoop.hive.metastore.ObjectStore
logger.metastore2.level = error
logger.parquet.name = org.apache.parquet.CorruptStatistics
logger.parquet.level = error
logger.parquet2.name = parquet.CorruptStatistics
logger.parquet2.level = error
"""


def log4j2_config(settings: Settings) -> Path:
    """The driver's log4j2 file under the state folder (rewritten only when it differs)."""
    path = settings.home / "spark" / "log4j2.properties"
    if not path.is_file() or path.read_text(encoding="utf-8") != LOG4J2_PROPERTIES:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(LOG4J2_PROPERTIES, encoding="utf-8")
        tmp.replace(path)  # atomic: a concurrently starting JVM never reads half a file
    return path


def _on_loopback(master: str) -> bool:
    """Whether ``master`` runs in this process (``local[*]``) or on a loopback host."""
    if master.startswith("local"):
        return True
    return urlparse(master).hostname in {"127.0.0.1", "localhost", "::1"}


def get_spark(settings: Settings | None = None) -> SparkSession:
    """Return the active Spark session, creating a lean, quiet one from settings if needed."""
    from pyspark.sql import SparkSession

    cfg = settings or get_settings()
    route_library_logs()
    # The executors must use this interpreter (the project's venv), not whatever
    # "python3" is first on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if _on_loopback(cfg.spark_master):
        # A local driver, or the driver of a master on loopback (the production profile's
        # standalone cluster), binds loopback only, where the executors reach it (and
        # the JVM does not warn about guessing a non-loopback address for the host name).
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    java_options = " ".join(
        (
            f"-Dderby.system.home={cfg.home / 'spark'}",
            f"-Dlog4j2.configurationFile={log4j2_config(cfg).as_uri()}",
        )
    )
    builder = (
        SparkSession.builder.appName("driftline")
        .master(cfg.spark_master)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(cfg.spark_shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.driver.memory", "4g")
        .config("spark.sql.warehouse.dir", str(cfg.home / "spark-warehouse"))
        .config("spark.driver.extraJavaOptions", java_options)
    )
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def stop_spark() -> None:
    """Stop this process's Spark session, if one is active.

    On a cluster an application holds its executors (and, on a standalone master, its
    cores) until its session stops; a long-lived process that ran one job stops it, so
    the next application gets the cores.
    """
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()
