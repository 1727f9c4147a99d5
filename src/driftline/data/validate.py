"""Data validation with Great Expectations (GX 1.x).

The expectation suites and checkpoints are committed as JSON under the repository's
``great_expectations/`` folder (:attr:`Settings.gx_project_dir`):

* ``expectations/<suite>.json``: one GX 1.x expectation suite per dataset
  (``raw_transactions``, ``raw_labels``, ``features``, ``fresh_features``; the last one
  generated from the fresh-feature spec). Interval-dependent bounds are
  *suite parameters* (``{"$PARAMETER": "interval_start"}``) filled per run by
  :func:`suite_parameters`, so one suite serves every day.
* ``checkpoints/<suite>.json``: the GX checkpoint of that dataset (actions, result
  format). Its single validation definition is named after the suite and is bound, in
  code, to an in-memory pandas "whole dataframe" batch.

At run time, :func:`validate_frame` works on a GX context whose stores (suites,
validation definitions, checkpoints, validation results) and data docs all live in
:attr:`Settings.gx_state_dir`; the repository folder is only ever read. The context is
ephemeral (data sources stay in memory, nothing rewrites a ``great_expectations.yml``)
with filesystem store backends, and it is cached per state folder, so repeated calls in
one process only pay for the validation itself. A :class:`filelock.FileLock` in the
state folder serialises store updates and data-docs builds between processes (Airflow
may validate transactions and labels in parallel).

Every verdict is also written to the lake (:func:`result_uri`,
``{lake}/validation/<suite>/dt=D/result.json``, replaced by a rerun of the day): GX 1.x
ships filesystem stores only, so on the production profile, whose lake is on S3, the
state folder is the process's own scratch and the lake holds what was decided (a failed
batch's result is also in its quarantine entry).

Great Expectations is imported lazily: importing this module is cheap and has no side
effects.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from filelock import FileLock

from driftline.core import lake
from driftline.core.interval import Interval
from driftline.core.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.checkpoint.checkpoint import Checkpoint
    from great_expectations.core import ExpectationSuite
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )
    from great_expectations.data_context.data_context.abstract_data_context import (
        AbstractDataContext,
    )

logger = logging.getLogger(__name__)

#: Suites committed under ``great_expectations/expectations/``.
SUITES = ("raw_transactions", "raw_labels", "features", "fresh_features")
#: In-memory pandas data source holding one dataframe asset per suite.
DATASOURCE_NAME = "driftline_dataframes"
BATCH_DEFINITION_NAME = "whole_dataframe"
#: Seconds to wait for another process holding the GX state lock.
LOCK_TIMEOUT_S = 600.0
#: Unexpected values quoted per failed expectation.
MAX_EXAMPLES = 3


@dataclass(frozen=True)
class ValidationOutcome:
    """The result of validating one DataFrame against one suite.

    Attributes:
        suite: Name of the expectation suite.
        success: Whether every expectation passed.
        failed_expectations: One human-readable line per failed expectation, e.g.
            ``"expect_column_values_to_be_between(amount): 3 unexpected of 2000
            (e.g. -12.5, 1000000000.0)"``.
        statistics: GX statistics (evaluated / successful / unsuccessful expectations).
        result: The full, JSON-serialisable validation result.
        data_docs_index: Filesystem path of the built data docs index, if any.
    """

    suite: str
    success: bool
    failed_expectations: tuple[str, ...]
    statistics: dict[str, Any]
    result: dict[str, Any]
    data_docs_index: str | None


class ValidationFailed(Exception):  # noqa: N818 - name fixed by the pipeline API
    """Raised by callers when a batch fails validation; carries the outcome."""

    def __init__(self, outcome: ValidationOutcome) -> None:
        """Build the exception with :func:`describe_failures` as its message."""
        super().__init__(describe_failures(outcome))
        self.outcome = outcome


@dataclass
class _Runtime:
    """A cached GX context of one state folder and its prepared checkpoints."""

    state_dir: Path
    context: AbstractDataContext
    file_lock: FileLock
    mutex: threading.RLock = field(default_factory=threading.RLock)
    checkpoints: dict[str, tuple[tuple[int, ...], Checkpoint]] = field(default_factory=dict)


_RUNTIMES: dict[Path, _Runtime] = {}
_RUNTIMES_GUARD = threading.Lock()


# --------------------------------------------------------------------------- public API


def validate_frame(
    df: pd.DataFrame | pa.Table,
    suite_name: str,
    interval: Interval,
    settings: Settings | None = None,
) -> ValidationOutcome:
    """Validate ``df`` against a committed suite through its checkpoint.

    Before GX, every floating-point column is checked for non-finite values
    (:func:`non_finite_counts`): GX reads NaN as a missing value, so a range check
    would let NaN through and a not-null check would misname it. Each column holding
    NaN or ±inf fails as ``expect_column_values_to_be_finite(<column>)`` with its
    counts, in the same outcome as the suite's expectations.

    Args:
        df: The batch to validate (any dtypes: wrong ones fail expectations, not GX).
            An Arrow table tells NaN from null; a pandas frame only shows ±inf (its
            NaN are nulls to GX, caught by the suite's not-null expectations).
        suite_name: One of :data:`SUITES` (a file under ``great_expectations/expectations``).
        interval: The data interval; fills the ``interval_start``/``interval_end``
            suite parameters.
        settings: Where the suites are read and GX state is written; defaults to
            :func:`driftline.core.settings.get_settings`.

    Returns:
        The outcome; ``success`` is False when any expectation failed.
    """
    settings = settings or get_settings()
    non_finite = non_finite_counts(df)
    frame = df.to_pandas() if isinstance(df, pa.Table) else df
    runtime = _runtime(settings.gx_state_dir, settings.gx_docs_index_limit)
    started = time.perf_counter()
    with runtime.mutex, runtime.file_lock:
        checkpoint = _checkpoint(runtime, settings.gx_project_dir, suite_name)
        checkpoint_result = checkpoint.run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=suite_parameters(interval),
        )
        docs_index = _data_docs_index(runtime.context)
    validation = next(iter(checkpoint_result.run_results.values()))
    outcome = _with_finite_checks(
        _outcome(suite_name, validation, frame.columns, docs_index), non_finite, len(frame)
    )
    record_outcome(settings.lake_uri, interval, outcome)
    logger.info(
        "validated %d rows against %s for %s in %.2fs: %s",
        len(frame),
        suite_name,
        interval,
        time.perf_counter() - started,
        "passed" if outcome.success else f"{len(outcome.failed_expectations)} failed",
    )
    return outcome


#: Name under which the non-finite check reports (it runs before GX, not inside it).
FINITE_CHECK = "expect_column_values_to_be_finite"


def non_finite_counts(df: pd.DataFrame | pa.Table) -> dict[str, dict[str, int]]:
    """NaN, +inf and -inf counts of every floating-point column that holds any.

    Nulls are not counted (an Arrow null is a missing value, bounded by the suite's
    not-null expectations); in a pandas frame NaN and null are the same, so only ±inf
    are counted there.
    """
    found: dict[str, dict[str, int]] = {}
    if isinstance(df, pa.Table):
        for name, column in zip(df.column_names, df.columns, strict=True):
            if not pa.types.is_floating(column.type):
                continue
            values = column.combine_chunks()
            nan = int(pc.sum(pc.fill_null(pc.is_nan(values), False)).as_py() or 0)
            pos = int(pc.sum(pc.fill_null(pc.equal(values, float("inf")), False)).as_py() or 0)
            neg = int(pc.sum(pc.fill_null(pc.equal(values, float("-inf")), False)).as_py() or 0)
            if nan or pos or neg:
                found[name] = {"nan": nan, "+inf": pos, "-inf": neg}
        return found
    for name in df.columns:
        series = df[name]
        if series.dtype.kind != "f":
            continue
        values = series.to_numpy()
        pos, neg = int(np.sum(values == np.inf)), int(np.sum(values == -np.inf))
        if pos or neg:
            found[str(name)] = {"nan": 0, "+inf": pos, "-inf": neg}
    return found


def _with_finite_checks(
    outcome: ValidationOutcome, non_finite: dict[str, dict[str, int]], rows: int
) -> ValidationOutcome:
    """``outcome`` with one failed finite check per column of ``non_finite``."""
    if not non_finite:
        return outcome
    lines, results = [], []
    for column, counts in non_finite.items():
        total = sum(counts.values())
        parts = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
        lines.append(f"{FINITE_CHECK}({column}): {total} non-finite of {rows} ({parts})")
        results.append(
            {
                "success": False,
                "expectation_config": {"type": FINITE_CHECK, "kwargs": {"column": column}},
                "result": {"element_count": rows, "unexpected_count": total, **counts},
                "meta": {"checked_by": "driftline (before GX: GX reads NaN as null)"},
            }
        )
    statistics = dict(outcome.statistics)
    statistics["evaluated_expectations"] = int(statistics.get("evaluated_expectations", 0)) + len(
        lines
    )
    statistics["unsuccessful_expectations"] = int(
        statistics.get("unsuccessful_expectations", 0)
    ) + len(lines)
    result = dict(outcome.result)
    result["driftline_checks"] = results
    result["success"] = False
    return ValidationOutcome(
        suite=outcome.suite,
        success=False,
        failed_expectations=(*lines, *outcome.failed_expectations),
        statistics=statistics,
        result=result,
        data_docs_index=outcome.data_docs_index,
    )


#: The lake zone of the GX verdicts (:func:`result_uri`).
RESULT_ZONE = "validation"
#: The file of one verdict in its day folder.
RESULT_FILE = "result.json"


def result_uri(lake_uri: str, suite_name: str, day: date) -> str:
    """Where the latest verdict of ``suite_name`` on ``day`` lives in the lake."""
    return f"{lake.partition_uri(lake_uri, RESULT_ZONE, suite_name, day)}/{RESULT_FILE}"


def record_outcome(lake_uri: str, interval: Interval, outcome: ValidationOutcome) -> None:
    """Write ``outcome`` (verdict, failures, statistics, GX result) to :func:`result_uri`.

    One object per suite and first day of ``interval``, replaced whole by a rerun.
    """
    payload = {
        "suite": outcome.suite,
        "interval": {"start": interval.start.isoformat(), "end": interval.end.isoformat()},
        "success": outcome.success,
        "failed_expectations": list(outcome.failed_expectations),
        "statistics": outcome.statistics,
        "result": outcome.result,
    }
    lake.write_json(result_uri(lake_uri, outcome.suite, interval.start.date()), payload)


def require_valid(
    df: pd.DataFrame | pa.Table,
    suite_name: str,
    interval: Interval,
    settings: Settings | None = None,
) -> ValidationOutcome:
    """Like :func:`validate_frame`, but raise :class:`ValidationFailed` on failure."""
    outcome = validate_frame(df, suite_name, interval, settings)
    if not outcome.success:
        raise ValidationFailed(outcome)
    return outcome


def describe_failures(outcome: ValidationOutcome) -> str:
    """One paragraph naming each failed expectation of ``outcome``."""
    if outcome.success:
        return f"Validation of suite {outcome.suite!r} passed."
    evaluated = outcome.statistics.get("evaluated_expectations", "?")
    failed = outcome.failed_expectations
    text = (
        f"Validation of suite {outcome.suite!r} failed: {len(failed)} of {evaluated} "
        f"expectations failed: {'; '.join(failed)}."
    )
    if outcome.data_docs_index:
        text += f" Data docs: {outcome.data_docs_index}"
    return text


def suite_parameters(interval: Interval) -> dict[str, Any]:
    """Suite parameters of ``interval`` (aware UTC datetimes, end exclusive)."""
    return {"interval_start": interval.start, "interval_end": interval.end}


def suite_path(suite_name: str, project_dir: Path) -> Path:
    """The committed JSON file of ``suite_name``."""
    return project_dir / "expectations" / f"{suite_name}.json"


def checkpoint_path(suite_name: str, project_dir: Path) -> Path:
    """The committed checkpoint JSON of ``suite_name``'s dataset."""
    return project_dir / "checkpoints" / f"{suite_name}.json"


def load_suite(suite_name: str, project_dir: Path | None = None) -> ExpectationSuite:
    """Load a committed suite into a :class:`great_expectations.ExpectationSuite`.

    Args:
        suite_name: File stem under ``expectations/``.
        project_dir: The GX project folder; defaults to ``settings.gx_project_dir``.

    Raises:
        FileNotFoundError: No such suite.
        ValueError: The file's name differs, or GX rejected an expectation (GX drops
            invalid expectations with only a log line; we refuse instead).
    """
    _import_gx()
    import great_expectations as gx

    path = suite_path(suite_name, project_dir or get_settings().gx_project_dir)
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("name") != suite_name:
        raise ValueError(f"{path} defines suite {data.get('name')!r}, expected {suite_name!r}")
    suite = gx.ExpectationSuite(**data)
    if len(suite.expectations) != len(data.get("expectations", [])):
        raise ValueError(f"{path}: GX rejected some expectations (see the log for details)")
    return suite


def reset_cache() -> None:
    """Forget cached GX contexts (tests; after deleting a state folder)."""
    with _RUNTIMES_GUARD:
        _RUNTIMES.clear()


# ------------------------------------------------------------------ context & checkpoints


def _runtime(state_dir: Path, docs_index_limit: int) -> _Runtime:
    """The cached runtime of ``state_dir``, creating its context on first use.

    ``docs_index_limit`` (``gx_docs_index_limit``) is read when the context is created.
    """
    key = state_dir.expanduser().resolve()
    with _RUNTIMES_GUARD:
        runtime = _RUNTIMES.get(key)
        if runtime is None:
            _import_gx()  # seconds: not while holding the cross-process lock
            key.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(key / ".gx.lock"), timeout=LOCK_TIMEOUT_S)
            with lock:
                runtime = _Runtime(key, _create_context(key, docs_index_limit), lock)
            _RUNTIMES[key] = runtime
        return runtime


def _import_gx() -> None:
    """Import GX with analytics disabled (there is no network; stay quiet and offline).

    GX imports ``pyspark.sql.connect``, whose dependency check guesses "doctests are
    running" when ``__main__`` has neither ``__spec__`` nor ``__file__`` (``python -c``)
    and then calls ``sys.exit(0)``: the process would silently stop with success in the
    middle of a validation. Give ``__main__`` a placeholder ``__file__`` while importing.
    """
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    if "great_expectations" in sys.modules:
        return
    main = sys.modules.get("__main__")
    patch = (
        main is not None
        and getattr(main, "__spec__", None) is None
        and not hasattr(main, "__file__")
        and not hasattr(sys, "ps1")
    )
    if patch:
        main.__file__ = "<driftline>"  # type: ignore[union-attr]
    try:
        import great_expectations  # noqa: F401
    finally:
        if patch:
            del main.__file__  # type: ignore[union-attr]


def _create_context(state_dir: Path, docs_index_limit: int) -> AbstractDataContext:
    """An offline, quiet GX context whose stores and data docs live in ``state_dir``.

    The data docs site is GX's default one, its views from :mod:`driftline.data.gx_views`
    and its index limited to the newest ``docs_index_limit`` validation results (GX
    reads each listed result on every docs update).
    """
    _import_gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        FilesystemStoreBackendDefaults,
        ProgressBarsConfig,
    )

    import great_expectations as gx
    from driftline.data.gx_views import SITE_INDEX_BUILDER, SITE_SECTIONS

    defaults = FilesystemStoreBackendDefaults(root_directory=str(state_dir))
    # GX's own sites, with views that compile their templates once per process.
    sites = {
        name: {
            **site,
            "site_section_builders": copy.deepcopy(SITE_SECTIONS),
            "site_index_builder": {
                **copy.deepcopy(SITE_INDEX_BUILDER),
                "validation_results_limit": docs_index_limit,
            },
        }
        for name, site in copy.deepcopy(defaults.data_docs_sites or {}).items()
    }
    config = DataContextConfig(
        store_backend_defaults=defaults,
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    logger.debug("creating GX context with state in %s", state_dir)
    return gx.get_context(mode="ephemeral", project_config=config)


def _fingerprint(*paths: Path) -> tuple[int, ...]:
    """Modification time and size of each file, to notice edited definitions."""
    stats = [path.stat() for path in paths]
    return tuple(value for st in stats for value in (st.st_mtime_ns, st.st_size))


def _checkpoint(runtime: _Runtime, project_dir: Path, suite_name: str) -> Checkpoint:
    """The checkpoint of ``suite_name``, (re)built when its committed JSON changed."""
    sources = (suite_path(suite_name, project_dir), checkpoint_path(suite_name, project_dir))
    for source in sources:
        if not source.is_file():
            raise FileNotFoundError(f"no GX definition {source} for suite {suite_name!r}")
    stamp = (*_fingerprint(*sources), hash(project_dir))
    cached = runtime.checkpoints.get(suite_name)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    checkpoint = _build_checkpoint(runtime.context, project_dir, suite_name)
    runtime.checkpoints[suite_name] = (stamp, checkpoint)
    return checkpoint


def _build_checkpoint(
    context: AbstractDataContext, project_dir: Path, suite_name: str
) -> Checkpoint:
    """Register the suite, its validation definition and checkpoint in the stores."""
    import great_expectations as gx

    spec = _checkpoint_spec(project_dir, suite_name)
    suite = context.suites.add_or_update(load_suite(suite_name, project_dir))
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(
            name=suite_name, data=_batch_definition(context, suite_name), suite=suite
        )
    )
    checkpoint = gx.Checkpoint(
        name=spec["name"],
        validation_definitions=[definition],
        actions=spec.get("actions", []),
        result_format=spec.get("result_format", "SUMMARY"),
    )
    logger.debug("registered GX checkpoint %s", spec["name"])
    return context.checkpoints.add_or_update(checkpoint)


def _checkpoint_spec(project_dir: Path, suite_name: str) -> dict[str, Any]:
    """Read and check the committed checkpoint JSON of ``suite_name``."""
    path = checkpoint_path(suite_name, project_dir)
    spec: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    refs = [ref.get("name") for ref in spec.get("validation_definitions", [])]
    if refs != [suite_name] or not spec.get("name"):
        raise ValueError(
            f"{path}: a checkpoint needs a name and exactly one validation definition "
            f"named after its suite ({suite_name!r}), got {refs}"
        )
    return spec


def _batch_definition(context: AbstractDataContext, asset_name: str) -> BatchDefinition[Any]:
    """The whole-dataframe batch definition of ``asset_name``, created if absent."""
    sources = context.data_sources.all()
    if DATASOURCE_NAME in sources:
        datasource = context.data_sources.get(DATASOURCE_NAME)
    else:
        datasource = context.data_sources.add_pandas(DATASOURCE_NAME)
    if asset_name in datasource.get_asset_names():
        asset = datasource.get_asset(asset_name)
    else:
        asset = datasource.add_dataframe_asset(asset_name)  # type: ignore[attr-defined]
    existing = {definition.name for definition in asset.batch_definitions}
    if BATCH_DEFINITION_NAME in existing:
        return asset.get_batch_definition(BATCH_DEFINITION_NAME)  # type: ignore[no-any-return]
    return asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION_NAME)  # type: ignore[no-any-return]


def _data_docs_index(context: AbstractDataContext) -> str | None:
    """Filesystem path of the data docs index page, if it has been built."""
    for site in context.get_docs_sites_urls(only_if_exists=True):
        url = site.get("site_url")
        if not url:
            continue
        parsed = urlparse(url)
        path = Path(url2pathname(parsed.path)) if parsed.scheme == "file" else None
        if path is not None and path.is_file():
            return str(path)
        if path is None:
            return str(url)
    return None


# --------------------------------------------------------------------------- outcomes


def _outcome(
    suite_name: str,
    validation: ExpectationSuiteValidationResult,
    columns: Iterable[Any],
    docs_index: str | None,
) -> ValidationOutcome:
    """Convert a GX suite validation result into a :class:`ValidationOutcome`."""
    present = {str(column) for column in columns}
    failed = tuple(
        describe_expectation(result, present) for result in validation.results if not result.success
    )
    return ValidationOutcome(
        suite=suite_name,
        success=bool(validation.success),
        failed_expectations=failed,
        statistics=_jsonable(dict(validation.statistics)),
        result=_jsonable(validation.to_json_dict()),  # type: ignore[no-untyped-call]
        data_docs_index=docs_index,
    )


def describe_expectation(result: ExpectationValidationResult, columns: set[str]) -> str:
    """One line naming a failed expectation, its column(s) and what went wrong.

    Args:
        result: The GX result of one expectation.
        columns: Columns present in the validated frame (to explain GX errors on
            missing columns).
    """
    config = result.expectation_config
    kwargs: Mapping[str, Any] = config.kwargs if config is not None else {}
    label = config.type if config is not None else "unknown_expectation"
    targets = _targets(kwargs)
    if targets:
        label += f"({', '.join(targets)})"
    return f"{label}: {_failure_detail(result, kwargs, targets, columns)}"


def _targets(kwargs: Mapping[str, Any]) -> list[str]:
    """Column names an expectation is about."""
    names = [kwargs.get("column"), kwargs.get("column_A"), kwargs.get("column_B")]
    targets = [str(name) for name in names if name is not None]
    return targets + [str(name) for name in kwargs.get("column_list") or []]


def _failure_detail(
    result: ExpectationValidationResult,
    kwargs: Mapping[str, Any],
    targets: list[str],
    columns: set[str],
) -> str:
    """Why one expectation failed, in words."""
    errors = _exception_messages(result.exception_info)
    missing = [name for name in targets if name not in columns]
    if missing:
        return f"column(s) {', '.join(missing)} missing from the data"
    if errors:
        return f"could not be evaluated ({'; '.join(errors)})"
    outcome: Mapping[str, Any] = result.result or {}
    if outcome.get("unexpected_count") is not None:
        return _unexpected_detail(outcome)
    mismatched = (outcome.get("details") or {}).get("mismatched")
    if mismatched:
        parts = [f"{kind} {sorted(names)}" for kind, names in sorted(mismatched.items())]
        return "; ".join(parts)
    observed = _fmt(outcome.get("observed_value"))
    expected = _expected(kwargs)
    return f"observed {observed}" + (f", expected {expected}" if expected else "")


def _unexpected_detail(outcome: Mapping[str, Any]) -> str:
    """``"3 unexpected of 2000 (e.g. -12.5, 1e9)"``."""
    text = f"{outcome['unexpected_count']} unexpected of {outcome.get('element_count', '?')}"
    examples = list(outcome.get("partial_unexpected_list") or [])[:MAX_EXAMPLES]
    if examples:
        text += f" (e.g. {', '.join(_fmt(value) for value in examples)})"
    return text


def _expected(kwargs: Mapping[str, Any]) -> str:
    """The bound or type an observed-value expectation wanted."""
    if "type_" in kwargs:
        return str(kwargs["type_"])
    if "type_list" in kwargs:
        return f"one of {list(kwargs['type_list'])}"
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is not None and high is not None:
        return f"between {_fmt(low)} and {_fmt(high)}"
    if low is not None:
        return f">= {_fmt(low)}"
    if high is not None:
        return f"<= {_fmt(high)}"
    return ""


def _exception_messages(info: Any) -> list[str]:
    """Messages of exceptions GX caught (flat or keyed by metric)."""
    if not isinstance(info, Mapping):
        return []
    if "raised_exception" in info:
        message = info.get("exception_message")
        return [str(message)] if info.get("raised_exception") and message else []
    messages: list[str] = []
    for nested in info.values():
        for message in _exception_messages(nested):
            if message not in messages:
                messages.append(message)
    return messages


def _fmt(value: Any) -> str:
    """Compact rendering of a value quoted in a failure message."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return "(" + ", ".join(_fmt(item) for item in value) + ")"
    if hasattr(value, "item") and not isinstance(value, str):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return f"{value:g}" if abs(value) >= 1e6 else repr(value)
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _jsonable(value: Any) -> Any:
    """``value`` round-tripped through JSON (unknown objects become strings)."""
    return json.loads(json.dumps(value, default=str))
