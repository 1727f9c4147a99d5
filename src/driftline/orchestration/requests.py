"""What each DAG run may be asked to do: its params, parsed and checked in one place.

A run's request comes from its params (a manual run's conf over the DAG's param
defaults), from the ``extra`` of the asset event that triggered it, or, for the daily
DAGs, from its data interval. Each parser here turns those raw values into a small
frozen dataclass or raises :class:`RequestError`, whose message names the field and
what is wrong with it. The DAG files declare their params from :func:`ingest_params`,
:func:`training_params` and :func:`retrain_params`, pass the raw values in, and turn a
``RequestError`` into a failed task: they hold no rule of their own.

A request travels between tasks as its ``to_dict()`` (XCom) and is read back with
``from_dict()``. The module imports no Airflow and nothing heavy, so a DAG file may
import it at parse time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

from driftline.core.interval import Interval
from driftline.orchestration import assets

#: The tuning-budget fields of a request: absent (``None``), the run takes the settings'
#: ``tuning_trials`` / ``tuning_workers`` (``DRIFTLINE_TUNING_TRIALS`` / ``_WORKERS``).
BUDGET_FIELDS = ("trials", "workers")
#: Most parallel tuning workers one run may ask for.
MAX_WORKERS = 16
#: What a retrain request carries besides the tuning budget, in the event's ``extra``
#: (as ``monitor_drift`` emits it) or in a manual run's conf.
RETRAIN_KEYS = ("window_start", "window_end", "drift_start", "drift_day", "reason", "drift_report")

Events = Mapping[Any, Iterable[Any]]


class RequestError(ValueError):
    """A run's params, conf or triggering event cannot be used; the message says why."""


# --------------------------------------------------------------------------------------
# Params: the form of a manual run (keyword arguments of ``airflow.sdk.Param``)
# --------------------------------------------------------------------------------------


def _optional_date(description: str) -> dict[str, Any]:
    """An optional day: empty (``null``) or ``YYYY-MM-DD``; the UI form shows a date picker.

    Nullable, so that the form's Trigger button does not demand it, and ``null`` rather
    than ``""`` by default, since an empty string is no valid ``date``.
    """
    return {
        "default": None,
        "type": ["null", "string"],
        "format": "date",
        "description": description,
    }


def _budget_params() -> dict[str, dict[str, Any]]:
    """The tuning budget: empty (``null``) means the deployment's settings decide."""
    return {
        "trials": {
            "default": None,
            "type": ["null", "integer"],
            "minimum": 1,
            "description": "Optuna trials (empty: the settings' tuning_trials).",
        },
        "workers": {
            "default": None,
            "type": ["null", "integer"],
            "minimum": 1,
            "maximum": MAX_WORKERS,
            "description": "Tuners (empty: the settings' tuning_workers).",
        },
    }


def ingest_params() -> dict[str, dict[str, Any]]:
    """Params of ``ingest_validate_materialize``."""
    return {
        "materialize": {
            "default": True,
            "type": "boolean",
            "description": "Load the features into the online store.",
        }
    }


def monitor_params() -> dict[str, dict[str, Any]]:
    """Params of ``monitor_drift`` (a manual run names its day; scheduled runs take it
    from the ingest events that triggered them)."""
    return {"day": _optional_date("Day to monitor (a manual run; else the ingested days).")}


def training_params() -> dict[str, dict[str, Any]]:
    """Params of ``train_register``."""
    return {
        "window_start": _optional_date("First training day."),
        "window_end": _optional_date("Label cut-off (exclusive)."),
        **_budget_params(),
    }


def retrain_params() -> dict[str, dict[str, Any]]:
    """Params of ``retrain_promote``."""
    return {
        "window_start": _optional_date("First training day (leave empty to roll out a version)."),
        "window_end": _optional_date(
            "Label cut-off (exclusive); traffic from this day on is canary evidence. "
            "Needed for both uses."
        ),
        "candidate_version": {
            "default": None,
            "type": ["null", "string"],
            "pattern": "^[0-9]+$",
            "description": "Skip training: roll out this registered version (a number).",
        },
        **_budget_params(),
    }


# --------------------------------------------------------------------------------------
# Field parsers
# --------------------------------------------------------------------------------------


def _day(value: Any, name: str) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise RequestError(f"{name} must be a day as YYYY-MM-DD, got {value!r}") from None


def _text(value: Any) -> str:
    """A text field as a string: an empty optional param (``None``) is ``""``."""
    return "" if value is None else str(value)


def _optional_day(value: Any, name: str) -> date | None:
    return None if value in (None, "") else _day(value, name)


def _count(value: Any, name: str, maximum: int | None = None) -> int:
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    if number is None or number < 1 or (maximum is not None and number > maximum):
        bound = f"from 1 to {maximum}" if maximum is not None else "of at least 1"
        raise RequestError(f"{name} must be a whole number {bound}, got {value!r}")
    return number


def _window(start: date, end: date) -> None:
    if start >= end:
        raise RequestError(f"window_start {start} must be before window_end {end}")


def _iso(day: date | None) -> str:
    return "" if day is None else day.isoformat()


def _request_id(run_id: str | None) -> str:
    """One training request per DAG run: a retried task resumes its study and run."""
    return f"airflow-{run_id}" if run_id else ""


def _run_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """The fields every training run shares, parsed: tuning budget and run identity."""
    return {
        "trials": _budget(data.get("trials"), "trials"),
        "workers": _budget(data.get("workers"), "workers", MAX_WORKERS),
        "airflow_run_id": str(data.get("airflow_run_id", "")),
        "request_id": str(data.get("request_id", "")),
    }


def _budget(value: Any, name: str, maximum: int | None = None) -> int | None:
    """A tuning-budget field: ``None`` when absent or empty (the settings decide)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _count(value, name, maximum)


def _json_field(name: str, value: Any) -> Any:
    """One request field as JSON: a day as an ISO string, an absent day ``""``, an
    absent tuning budget ``null``, anything else as it is."""
    if name in BUDGET_FIELDS:
        return value
    if value is None or isinstance(value, date):
        return _iso(value)
    return value


def _json(request: Any) -> dict[str, Any]:
    """A request dataclass as a JSON-ready dict (:func:`_json_field` per field)."""
    return {name: _json_field(name, value) for name, value in asdict(request).items()}


def newest_event_extra(events: Events | None) -> dict[str, Any]:
    """The ``extra`` of the newest triggering event that names a window (``{}``: none).

    ``events`` is Airflow's ``triggering_asset_events`` (asset -> events, oldest first);
    an event counts when its extra has both ``window_start`` and ``window_end``.
    """
    for asset_events in (events or {}).values():
        for event in reversed(list(asset_events)):
            extra = event.extra or {}
            if extra.get("window_start") and extra.get("window_end"):
                return dict(extra)
    return {}


# --------------------------------------------------------------------------------------
# Daily DAGs
# --------------------------------------------------------------------------------------


def data_interval(start: datetime | None, end: datetime | None) -> Interval:
    """A daily run's data interval as a driftline :class:`Interval`.

    Raises:
        RequestError: The run has no data interval, or not one of whole UTC days.
    """
    if start is None or end is None:
        raise RequestError("this task needs a data interval (a run of the DAG's timetable)")
    try:
        return Interval(start, end)
    except ValueError as error:
        raise RequestError(f"unusable data interval: {error}") from error


def ingested_day_extra(interval: Interval) -> dict[str, str]:
    """The ``extra`` of the :data:`~driftline.orchestration.assets.INGESTED_DAYS` event a
    successful ingest run emits: the day its data interval covers."""
    return {"day": interval.start.date().isoformat()}


def monitor_days(
    params: Mapping[str, Any] | None,
    events: Events | None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[date]:
    """The days a ``monitor_drift`` run checks, oldest first.

    A scheduled run is triggered by :data:`~driftline.orchestration.assets.INGESTED_DAYS`
    events, one per day whose ingest succeeded; several may have queued up (a backfill
    ingests days faster than they are monitored), so the run checks every day they name.
    A manual run names its ``day`` in its params; failing both, a run with a one-day data
    interval checks that day (``dag.test`` with a logical date).

    Raises:
        RequestError: No day from any source, or an unusable one.
    """
    days = {
        _day(extra["day"], "the ingest event's day")
        for asset_events in (events or {}).values()
        for event in asset_events
        if (extra := (getattr(event, "extra", None) or {})).get("day")
    }
    if days:
        return sorted(days)
    given = _optional_day((params or {}).get("day"), "day")
    if given is not None:
        return [given]
    if start is not None and end is not None and start != end:
        return list(data_interval(start, end).days())
    raise RequestError(
        "no day to monitor: set param day (YYYY-MM-DD) or let an ingest run trigger this "
        f"DAG through {assets.INGESTED_DAYS}"
    )


@dataclass(frozen=True)
class IngestOptions:
    """What ``ingest_validate_materialize`` does besides ingesting and validating."""

    materialize: bool = True


def ingest_options(params: Mapping[str, Any] | None) -> IngestOptions:
    """The options in ``ingest_validate_materialize``'s params (see :func:`ingest_params`)."""
    value = (params or {}).get("materialize", True)
    if not isinstance(value, bool):
        raise RequestError(f"materialize must be true or false, got {value!r}")
    return IngestOptions(materialize=value)


# --------------------------------------------------------------------------------------
# train_register
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingRequest:
    """One run of the training pipeline: the window ``[window_start, window_end)``."""

    window_start: date
    window_end: date
    trials: int | None = None
    workers: int | None = None
    airflow_run_id: str = ""
    request_id: str = ""

    def __post_init__(self) -> None:
        _window(self.window_start, self.window_end)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; also the keyword arguments of ``run_training``."""
        return _json(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingRequest:
        """The request :meth:`to_dict` wrote (checked again)."""
        return cls(
            window_start=_day(data.get("window_start"), "window_start"),
            window_end=_day(data.get("window_end"), "window_end"),
            **_run_fields(data),
        )


def training_request(
    params: Mapping[str, Any] | None, events: Events | None, run_id: str | None
) -> TrainingRequest:
    """The request of a ``train_register`` run.

    The window is the newest :data:`~driftline.orchestration.assets.TRAINING_REQUESTS`
    event's, else the params'; the tuning budget is the params'.

    Raises:
        RequestError: No window, or a field is invalid.
    """
    given = params or {}
    window = newest_event_extra(events) or given
    start, end = _text(window.get("window_start")), _text(window.get("window_end"))
    if not (start and end):
        raise RequestError(
            "no training window: set params window_start/window_end or send a "
            f"{assets.TRAINING_REQUESTS} event with them in its extra"
        )
    return TrainingRequest.from_dict(
        {
            **given,
            "window_start": start,
            "window_end": end,
            "airflow_run_id": run_id or "",
            "request_id": _request_id(run_id),
        }
    )


# --------------------------------------------------------------------------------------
# retrain_promote
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrainRequest:
    """One rollout: train a candidate on the window (or take ``candidate_version``).

    ``window_end`` is the label cut-off, the data day of every decision and the first day
    of canary evidence; ``window_start`` is needed only to train. The drift fields say
    what caused the retrain (empty for a manual run).
    """

    window_end: date
    window_start: date | None = None
    candidate_version: str = ""
    drift_start: str = ""
    drift_day: str = ""
    reason: str = ""
    drift_report: str = ""
    trials: int | None = None
    workers: int | None = None
    airflow_run_id: str = ""
    request_id: str = ""

    def __post_init__(self) -> None:
        if self.window_start is not None:
            _window(self.window_start, self.window_end)
        elif not self.candidate_version:
            raise RequestError("training needs window_start as well as window_end")
        if self.candidate_version and not self.candidate_version.isdigit():
            raise RequestError(
                f"candidate_version must be a registered version number, "
                f"got {self.candidate_version!r}"
            )

    @property
    def day(self) -> date:
        """The data day of the rollout's decisions: ``window_end``."""
        return self.window_end

    @property
    def actor(self) -> str:
        """Who the rollout's decisions are recorded as."""
        return f"airflow:retrain_promote:{self.airflow_run_id}"

    def training(self) -> TrainingRequest:
        """The training run of this rollout (one with a ``window_start``)."""
        if self.window_start is None:
            raise RequestError(f"the rollout of version {self.candidate_version} trains nothing")
        return TrainingRequest(self.window_start, self.window_end, **_run_fields(_json(self)))

    def gate_context(self) -> dict[str, str]:
        """What caused the retrain, as ``retrain.*`` version tags (empty fields left out)."""
        given = {
            "drift_start": self.drift_start,
            "drift_day": self.drift_day,
            "reason": self.reason,
            "drift_report": self.drift_report,
            "window_start": _iso(self.window_start),
        }
        context = {f"retrain.{key}": value for key, value in given.items() if value}
        return {**context, "retrain.window_end": self.window_end.isoformat()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (an absent ``window_start`` is ``""``)."""
        return _json(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetrainRequest:
        """The request :meth:`to_dict` wrote (checked again)."""
        names = ("candidate_version", "drift_start", "drift_day", "reason", "drift_report")
        texts: dict[str, Any] = {name: _text(data.get(name)) for name in names}
        return cls(
            window_end=_day(data.get("window_end"), "window_end"),
            window_start=_optional_day(data.get("window_start"), "window_start"),
            **texts,
            **_run_fields(data),
        )


def retrain_request(
    params: Mapping[str, Any] | None, events: Events | None, run_id: str | None
) -> RetrainRequest:
    """The request of a ``retrain_promote`` run.

    The :data:`RETRAIN_KEYS` come from the newest
    :data:`~driftline.orchestration.assets.RETRAIN_REQUESTS` event, else from the
    params; ``candidate_version`` and the tuning budget always from the params.

    Raises:
        RequestError: No ``window_end``, no ``window_start`` to train with, or a field
            is invalid.
    """
    given = params or {}
    source = newest_event_extra(events) or given
    request = {key: _text(source.get(key)) for key in RETRAIN_KEYS}
    if not request["window_end"]:
        raise RequestError(
            "no window: set params window_start/window_end (or candidate_version and "
            f"window_end) or send a {assets.RETRAIN_REQUESTS} event"
        )
    return RetrainRequest.from_dict(
        {
            **given,
            **request,
            "candidate_version": _text(given.get("candidate_version")),
            "airflow_run_id": run_id or "",
            "request_id": _request_id(run_id),
        }
    )
