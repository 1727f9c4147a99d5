"""Tests of driftline.orchestration.requests: what each DAG run accepts, and its errors."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.orchestration import assets
from driftline.orchestration.requests import (
    MAX_WORKERS,
    RequestError,
    RetrainRequest,
    TrainingRequest,
    data_interval,
    ingest_options,
    ingest_params,
    ingested_day_extra,
    monitor_days,
    monitor_params,
    newest_event_extra,
    retrain_params,
    retrain_request,
    training_params,
    training_request,
)
from driftline.orchestration.runner import request_from_settings

DRIFT_EXTRA = {
    "window_start": "2026-01-07",
    "window_end": "2026-01-28",
    "drift_start": "2026-01-20",
    "drift_day": "2026-01-27",
    "reason": "drift",
    "drift_report": "/r.html",
}


def _events(uri: str, *extras: dict[str, Any] | None) -> dict[str, list[SimpleNamespace]]:
    """Airflow's ``triggering_asset_events`` shape: asset -> events, oldest first."""
    return {uri: [SimpleNamespace(extra=extra) for extra in extras]}


# --------------------------------------------------------------------------------------
# Daily DAGs
# --------------------------------------------------------------------------------------


def test_data_interval_is_the_runs_interval() -> None:
    start, end = datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 3, tzinfo=UTC)
    assert data_interval(start, end) == Interval(start, end)


@pytest.mark.parametrize("edges", [(None, None), (datetime(2026, 1, 2, tzinfo=UTC), None)])
def test_data_interval_missing_is_a_clear_error(edges: tuple[Any, Any]) -> None:
    with pytest.raises(RequestError, match="needs a data interval"):
        data_interval(*edges)


def test_data_interval_off_midnight_is_a_request_error() -> None:
    with pytest.raises(RequestError, match=r"unusable data interval.*midnight"):
        data_interval(datetime(2026, 1, 2, 6, tzinfo=UTC), datetime(2026, 1, 3, tzinfo=UTC))


def test_ingest_options_default_and_given() -> None:
    assert ingest_options(None).materialize is True
    assert ingest_options({}).materialize is True
    assert ingest_options({"materialize": False}).materialize is False


def test_ingest_options_reject_a_non_boolean() -> None:
    with pytest.raises(RequestError, match="materialize must be true or false, got 'no'"):
        ingest_options({"materialize": "no"})


# --------------------------------------------------------------------------------------
# Params (the manual-run form)
# --------------------------------------------------------------------------------------


def test_params_declare_the_fields_the_parsers_read() -> None:
    assert set(ingest_params()) == {"materialize"}
    assert set(training_params()) == {"window_start", "window_end", "trials", "workers"}
    assert set(retrain_params()) == set(training_params()) | {"candidate_version"}
    assert set(monitor_params()) == {"day"}
    for params in (training_params(), retrain_params()):
        # Empty by default: the run's budget is the deployment's settings'.
        assert params["trials"]["default"] is None and "null" in params["trials"]["type"]
        assert params["workers"]["default"] is None and "null" in params["workers"]["type"]
        assert params["workers"]["maximum"] == MAX_WORKERS
        assert all("description" in spec and "type" in spec for spec in params.values())


# --------------------------------------------------------------------------------------
# Asset events
# --------------------------------------------------------------------------------------


def test_newest_event_with_a_window_wins() -> None:
    older = {"window_start": "2026-01-01", "window_end": "2026-01-20"}
    newer = {"window_start": "2026-02-01", "window_end": "2026-02-20"}
    events = _events(assets.TRAINING_REQUESTS, older, newer, {"window_end": "2026-03-01"}, None)
    assert newest_event_extra(events) == newer
    assert newest_event_extra({}) == {}
    assert newest_event_extra(None) == {}


# --------------------------------------------------------------------------------------
# train_register
# --------------------------------------------------------------------------------------


def test_training_request_from_params() -> None:
    params = {"window_start": "2026-01-01", "window_end": "2026-01-20", "trials": 4, "workers": 3}
    request = training_request(params, None, "manual__1")
    assert request == TrainingRequest(
        date(2026, 1, 1), date(2026, 1, 20), 4, 3, "manual__1", "airflow-manual__1"
    )
    assert request.to_dict() == {
        "window_start": "2026-01-01",
        "window_end": "2026-01-20",
        "trials": 4,
        "workers": 3,
        "airflow_run_id": "manual__1",
        "request_id": "airflow-manual__1",
    }
    assert TrainingRequest.from_dict(request.to_dict()) == request


def test_training_request_window_from_the_event_budget_from_the_params() -> None:
    params = {"window_start": "", "window_end": "", "trials": 2, "workers": 1}
    event = {"window_start": "2026-02-01", "window_end": "2026-02-20", "trials": 99}
    request = training_request(params, _events(assets.TRAINING_REQUESTS, event), "asset__1")
    assert (request.window_start, request.window_end) == (date(2026, 2, 1), date(2026, 2, 20))
    assert (request.trials, request.workers) == (2, 1)


def test_training_request_defaults_without_run_id_or_budget() -> None:
    request = training_request({"window_start": "2026-01-01", "window_end": "2026-01-20"}, {}, None)
    assert (request.trials, request.workers) == (None, None)
    assert (request.airflow_run_id, request.request_id) == ("", "")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, f"no training window: .* or send a {assets.TRAINING_REQUESTS} event"),
        ({"window_start": "2026-01-01"}, "no training window"),
        ({"window_start": "2026-01-01", "window_end": "soon"}, "window_end must be a day"),
        ({"window_start": "1/1/2026", "window_end": "2026-01-20"}, "window_start must be a day"),
        (
            {"window_start": "2026-01-20", "window_end": "2026-01-20"},
            "window_start 2026-01-20 must be before window_end 2026-01-20",
        ),
        (
            {"window_start": "2026-01-01", "window_end": "2026-01-20", "trials": 0},
            "trials must be a whole number of at least 1, got 0",
        ),
        (
            {"window_start": "2026-01-01", "window_end": "2026-01-20", "workers": 17},
            "workers must be a whole number from 1 to 16, got 17",
        ),
        (
            {"window_start": "2026-01-01", "window_end": "2026-01-20", "trials": 2.5},
            "trials must be a whole number",
        ),
        (
            {"window_start": "2026-01-01", "window_end": "2026-01-20", "trials": True},
            "trials must be a whole number",
        ),
    ],
)
def test_training_request_errors_name_the_field(params: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestError, match=message):
        training_request(params, None, "r")


# --------------------------------------------------------------------------------------
# retrain_promote
# --------------------------------------------------------------------------------------


def test_retrain_request_from_a_drift_event() -> None:
    params = {"window_start": "", "window_end": "", "candidate_version": "", "trials": 3}
    events = _events(assets.RETRAIN_REQUESTS, DRIFT_EXTRA)
    request = retrain_request(params, events, "asset__7")
    assert request.to_dict() == {
        **DRIFT_EXTRA,
        "candidate_version": "",
        "trials": 3,
        "workers": None,
        "airflow_run_id": "asset__7",
        "request_id": "airflow-asset__7",
    }
    assert RetrainRequest.from_dict(request.to_dict()) == request
    assert request.day == date(2026, 1, 28)
    assert request.actor == "airflow:retrain_promote:asset__7"
    assert request.gate_context() == {
        "retrain.drift_start": "2026-01-20",
        "retrain.drift_day": "2026-01-27",
        "retrain.reason": "drift",
        "retrain.drift_report": "/r.html",
        "retrain.window_start": "2026-01-07",
        "retrain.window_end": "2026-01-28",
    }
    training = request.training()
    assert training.to_dict() == {
        "window_start": "2026-01-07",
        "window_end": "2026-01-28",
        "trials": 3,
        "workers": None,
        "airflow_run_id": "asset__7",
        "request_id": "airflow-asset__7",
    }


def test_retrain_request_from_a_manual_conf_carrying_the_drift_fields() -> None:
    """The demo runs retrain_promote by hand with the event's extra as its conf."""
    request = retrain_request({**DRIFT_EXTRA, "trials": 2, "workers": 1}, None, "manual__2")
    assert request.reason == "drift"
    assert request.window_start == date(2026, 1, 7)
    assert (request.trials, request.workers) == (2, 1)


def test_retrain_request_rolling_out_a_registered_version() -> None:
    params = {"candidate_version": "2", "window_end": "2026-01-10"}
    request = retrain_request(params, None, "manual__3")
    assert (request.candidate_version, request.window_start) == ("2", None)
    assert request.to_dict()["window_start"] == ""
    assert request.gate_context() == {"retrain.window_end": "2026-01-10"}
    assert RetrainRequest.from_dict(request.to_dict()) == request
    with pytest.raises(RequestError, match="trains nothing"):
        request.training()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, f"no window: .* or send a {assets.RETRAIN_REQUESTS} event"),
        ({"window_start": "2026-01-01"}, "no window"),
        ({"window_end": "2026-01-20"}, "training needs window_start as well as window_end"),
        ({"candidate_version": "2", "window_end": "20th"}, "window_end must be a day"),
        (
            {"candidate_version": "latest", "window_end": "2026-01-20"},
            "candidate_version must be a registered version number, got 'latest'",
        ),
        (
            {"window_start": "2026-01-21", "window_end": "2026-01-20"},
            "window_start 2026-01-21 must be before window_end 2026-01-20",
        ),
        (
            {"window_start": "2026-01-01", "window_end": "2026-01-20", "workers": "many"},
            "workers must be a whole number from 1 to 16, got 'many'",
        ),
    ],
)
def test_retrain_request_errors_name_the_field(params: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestError, match=message):
        retrain_request(params, None, "r")


def test_retrain_event_without_a_window_falls_back_to_the_params() -> None:
    events = _events(assets.RETRAIN_REQUESTS, {"reason": "no window here"})
    request = retrain_request({"candidate_version": "5", "window_end": "2026-01-10"}, events, "r")
    assert (request.candidate_version, request.reason) == ("5", "")


# --------------------------------------------------------------------------------------
# Optional params as the UI form sends them (an empty field is null)
# --------------------------------------------------------------------------------------


def test_optional_params_default_to_null_and_dates_are_dates() -> None:
    for params in (training_params(), retrain_params(), monitor_params()):
        for name, spec in params.items():
            if name in ("trials", "workers"):
                continue
            assert spec["default"] is None and "null" in spec["type"], name
            if name != "candidate_version":
                assert spec["format"] == "date", name


def test_empty_optionals_from_the_form_are_absent() -> None:
    form = {"window_start": "2026-01-02", "window_end": "2026-01-20", "candidate_version": None}
    request = retrain_request(form, None, "manual__1")
    assert (request.window_start, request.candidate_version) == (date(2026, 1, 2), "")
    rollout = retrain_request(
        {"window_start": None, "window_end": "2026-01-20", "candidate_version": "3"}, None, "r"
    )
    assert (rollout.window_start, rollout.candidate_version) == (None, "3")
    with pytest.raises(RequestError, match="no training window"):
        training_request({"window_start": None, "window_end": None}, None, "r")


# --------------------------------------------------------------------------------------
# monitor_drift: the days a run checks
# --------------------------------------------------------------------------------------


def test_ingested_day_extra_names_the_interval_day() -> None:
    assert ingested_day_extra(Interval.for_day("2026-01-05")) == {"day": "2026-01-05"}


def test_monitor_days_come_from_the_ingest_events_oldest_first_once_each() -> None:
    events = _events(
        assets.INGESTED_DAYS, {"day": "2026-01-04"}, {"day": "2026-01-02"}, {"day": "2026-01-04"}
    )
    events[assets.INGESTED_DAYS].append(SimpleNamespace(extra=None))
    assert monitor_days({"day": "2026-01-09"}, events) == [date(2026, 1, 2), date(2026, 1, 4)]


def test_monitor_days_of_a_manual_run_and_of_a_dated_run() -> None:
    assert monitor_days({"day": "2026-01-03"}, {}) == [date(2026, 1, 3)]
    start, end = datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC)
    assert monitor_days({"day": None}, None, start, end) == [date(2026, 1, 5)]


def test_monitor_days_without_a_day_is_a_clear_error() -> None:
    moment = datetime(2026, 1, 5, tzinfo=UTC)  # an asset-triggered run: no interval
    with pytest.raises(RequestError, match="no day to monitor"):
        monitor_days({"day": None}, {}, moment, moment)
    with pytest.raises(RequestError, match="day must be a day as YYYY-MM-DD"):
        monitor_days({"day": "soon"}, None)


def test_a_retrain_without_a_budget_tunes_with_the_settings_budget(tmp_path: Path) -> None:
    """A drift event's run (the form's budget empty) takes DRIFTLINE_TUNING_TRIALS/_WORKERS.

    The params used to default to a fixed 8 trials on 2 workers, so the production
    profile's retrains ignored its 2-trial, 1-worker settings (and two concurrent tuners
    made the study depend on timing).
    """
    events = _events(assets.RETRAIN_REQUESTS, DRIFT_EXTRA)
    request = retrain_request({"trials": None, "workers": None}, events, "asset__8")
    fields = request.training().to_dict()
    assert (fields["trials"], fields["workers"]) == (None, None)
    assert RetrainRequest.from_dict(request.to_dict()) == request
    settings = Settings(home=tmp_path, tuning_trials=2, tuning_workers=1)
    window = Interval.parse(fields["window_start"], fields["window_end"])
    train = request_from_settings(
        window, settings, trials=fields["trials"], workers=fields["workers"]
    )
    assert (train.trials, train.workers) == (2, 1)
