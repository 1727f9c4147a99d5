"""Every DAG can be triggered from the UI form with exactly the params a user needs.

The probe renders each DAG's params as Airflow serializes them for the UI and the REST
API (``Param.serialize()``: value, description, JSON schema) and also asks Airflow's own
check (``ParamsDict.validate``) about each conf. Here the rendered schemas are checked
with jsonschema (the validator Airflow uses, with its format checker) the way the form
submits them: every field, untouched ones at their default, an emptied optional as
``null``; a field whose schema does not allow ``null`` is one the form requires.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import jsonschema
import pytest

from driftline.orchestration import requests
from tests.dags.conftest import REPO, airflow_env

PROBE = r"""
import copy, json, sys
from airflow.dag_processing.dagbag import DagBag

cases = json.loads(sys.argv[2])
bag = DagBag(dag_folder=sys.argv[1])
rendered = {
    dag_id: {name: dag.params.get_param(name).serialize() for name in dag.params}
    for dag_id, dag in bag.dags.items()
}
verdicts = []
for dag_id, conf in cases:
    params = copy.deepcopy(bag.dags[dag_id].params)
    try:
        params.update(conf)
        params.validate()
        verdicts.append("ok")
    except Exception as error:
        verdicts.append(str(error))
print(json.dumps({"params": rendered, "airflow": verdicts}, default=str))
"""

WINDOW = {"window_start": "2026-01-02", "window_end": "2026-01-20"}
#: (DAG, use, the minimal conf a user types into the form for it).
VALID = [
    ("ingest_validate_materialize", "defaults", {}),
    ("ingest_validate_materialize", "lake only", {"materialize": False}),
    ("monitor_drift", "a given day", {"day": "2026-01-05"}),
    ("monitor_drift", "empty optional", {"day": None}),
    ("train_register", "train a window", WINDOW),
    ("retrain_promote", "train a window", {**WINDOW, "candidate_version": None}),
    ("retrain_promote", "train a window, untouched", WINDOW),
    (
        "retrain_promote",
        "roll out a given version",
        {"window_start": None, "window_end": "2026-01-20", "candidate_version": "3"},
    ),
]
INVALID = [
    ("retrain_promote", "not a date", {**WINDOW, "window_end": "20/01/2026"}),
    ("retrain_promote", "not a version", {"window_end": "2026-01-20", "candidate_version": "x"}),
    ("train_register", "no workers", {**WINDOW, "workers": 0}),
    ("monitor_drift", "not a day", {"day": "yesterday"}),
]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cases = [(dag_id, conf) for dag_id, _, conf in VALID + INVALID]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "dags"), json.dumps(cases)],
        env=airflow_env(tmp_path_factory.mktemp("params")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    names = [f"{dag_id}: {use}" for dag_id, use, _ in VALID + INVALID]
    report["verdicts"] = dict(zip(names, report["airflow"], strict=True))
    return report


def _form_schema(params: dict[str, Any]) -> dict[str, Any]:
    """The form as a JSON schema: a field whose type excludes null is required."""
    required = [
        name for name, spec in params.items() if "null" not in _types(spec["schema"].get("type"))
    ]
    properties = {name: spec["schema"] for name, spec in params.items()}
    return {"type": "object", "properties": properties, "required": required}


def _types(declared: Any) -> list[str]:
    return declared if isinstance(declared, list) else [declared]


def _submitted(params: dict[str, Any], conf: dict[str, Any]) -> dict[str, Any]:
    """What the form posts: every field, untouched ones at their default."""
    return {name: conf.get(name, spec["value"]) for name, spec in params.items()}


def _errors(params: dict[str, Any], conf: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(
        _form_schema(params), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return [error.message for error in validator.iter_errors(_submitted(params, conf))]


def test_every_dag_is_rendered_with_its_params(rendered: dict[str, Any]) -> None:
    assert set(rendered["params"]) == {
        "ingest_validate_materialize",
        "monitor_drift",
        "train_register",
        "retrain_promote",
    }


def test_optional_fields_are_nullable_and_dates_are_dates(rendered: dict[str, Any]) -> None:
    for dag_id, params in rendered["params"].items():
        for name, spec in params.items():
            schema = spec["schema"]
            if "null" in _types(schema["type"]):
                assert spec["value"] is None, f"{dag_id}.{name}: an optional field starts empty"
            if name in ("window_start", "window_end", "day"):
                assert schema["format"] == "date", f"{dag_id}.{name}"
            required = _form_schema(params)["required"]
            assert name not in required or spec["value"] is not None, (
                f"{dag_id}.{name}: required with no default blocks the Trigger button"
            )


@pytest.mark.parametrize(("dag_id", "use", "conf"), VALID, ids=[f"{d}: {u}" for d, u, _ in VALID])
def test_the_minimal_conf_of_each_use_is_accepted(
    rendered: dict[str, Any], dag_id: str, use: str, conf: dict[str, Any]
) -> None:
    params = rendered["params"][dag_id]
    assert _errors(params, conf) == []
    assert rendered["verdicts"][f"{dag_id}: {use}"] == "ok"
    submitted = _submitted(params, conf)
    # ... and the DAG's own request parser makes of it the run the user meant.
    if dag_id == "retrain_promote":
        request = requests.retrain_request(submitted, None, "manual__1")
        assert bool(request.candidate_version) == (use == "roll out a given version")
    elif dag_id == "train_register":
        assert requests.training_request(submitted, None, "manual__1").window_end.day == 20
    elif dag_id == "monitor_drift" and conf["day"]:
        assert [d.isoformat() for d in requests.monitor_days(submitted, None)] == [conf["day"]]
    elif dag_id == "ingest_validate_materialize":
        assert requests.ingest_options(submitted).materialize == conf.get("materialize", True)


@pytest.mark.parametrize(
    ("dag_id", "use", "conf"), INVALID, ids=[f"{d}: {u}" for d, u, _ in INVALID]
)
def test_a_wrong_value_is_refused_by_the_form(
    rendered: dict[str, Any], dag_id: str, use: str, conf: dict[str, Any]
) -> None:
    assert _errors(rendered["params"][dag_id], conf) != []
    assert rendered["verdicts"][f"{dag_id}: {use}"] != "ok"
