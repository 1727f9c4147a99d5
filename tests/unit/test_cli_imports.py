"""What ``driftline rollback`` imports: the alias flip, not the data or model stacks.

A rollback is the one command an operator runs while a bad model is serving, so it
must return in seconds: it needs the registry client and nothing of Feast, torch,
Spark, Airflow or the serving and training layers. Each check runs the real command in
a fresh interpreter (``sys.modules`` of this test process holds everything) against a
real MLflow registry under ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from driftline.core.settings import Settings
from driftline.lifecycle import registry

#: Top-level packages (and driftline layers) the rollback must never import: on the
#: local SQLite registry it writes MLflow's tables itself (``lifecycle.alias_store``),
#: so not even MLflow (1.5-4 s to import) is loaded.
NOT_NEEDED = (
    "mlflow",
    "pandas",
    "pyarrow",
    "sqlalchemy",
    "feast",
    "torch",
    "airflow",
    "great_expectations",
    "sklearn",
    "driftline.serving",
    "driftline.training",
    "driftline.data",
)

#: Runs the CLI's rollback in this interpreter, then prints which of the modules named
#: in argv were imported (JSON) on the last line of stdout.
_ROLLBACK_THEN_MODULES = """
import json, sys
from driftline.cli import app
try:
    app(["rollback", "--reason", "import closure test"])
except SystemExit as done:
    if done.code:
        raise
print()
print(json.dumps(sorted(name for name in sys.argv[1:] if name in sys.modules)))
"""

#: Resolves MLflow's REST request headers (what every call to a tracking server does
#: first) through driftline's client, then prints whether Feast was imported.
_HEADERS_THEN_FEAST = """
import json, sys
from driftline.core.settings import get_settings
from driftline.lifecycle import registry
registry.client(get_settings())
from mlflow.tracking.request_header.registry import (
    _request_header_provider_registry, resolve_request_headers,
)
resolve_request_headers()
providers = [type(p).__name__ for p in _request_header_provider_registry]
print(json.dumps({"feast": "feast" in sys.modules, "providers": providers}))
"""


def _run(code: str, settings: Settings, *args: str, **env: str) -> str:
    """stdout of ``python -c code args`` with ``settings``' home (fails on an error)."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=os.environ | {"DRIFTLINE_HOME": str(settings.home)} | env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture
def champion_with_previous(settings: Settings) -> Settings:
    """Two registered versions: 2 is the champion and 1 the recorded previous one."""
    client = registry.client(settings)
    client.create_registered_model(settings.model_name)
    for _ in range(2):  # the flip reads aliases and tags only: no model files needed
        client.create_model_version(settings.model_name, source=str(settings.home / "none"))
    client.set_registered_model_alias(settings.model_name, registry.CHAMPION, "2")
    client.set_registered_model_tag(settings.model_name, registry.PREVIOUS_CHAMPION_TAG, "1")
    return settings


def test_rollback_imports_no_feast_torch_or_other_layers(
    champion_with_previous: Settings,
) -> None:
    """The rollback command flips the alias and imports none of ``NOT_NEEDED``."""
    imported = json.loads(_run(_ROLLBACK_THEN_MODULES, champion_with_previous, *NOT_NEEDED))
    assert imported == []
    version = registry.version_by_alias(champion_with_previous, registry.CHAMPION)
    assert version is not None and str(version.version) == "1"


def test_rest_request_headers_skip_the_feast_plugin(settings: Settings) -> None:
    """Against a tracking server, MLflow's header plugins load without Feast's.

    Feast registers an ``mlflow.request_header_provider`` entry point; MLflow would
    import it (all of Feast) on the first REST call. No server is needed: resolving the
    headers is the part of a REST call that loads the plugins.
    """
    plugins = entry_points(group=registry.HEADER_PROVIDER_GROUP)
    assert any(e.value.startswith("feast.") for e in plugins), (
        "Feast no longer registers an MLflow header plugin: _load_header_providers can go"
    )
    found = json.loads(
        _run(_HEADERS_THEN_FEAST, settings, DRIFTLINE_MLFLOW_TRACKING_URI="http://127.0.0.1:9")
    )
    assert found["feast"] is False
    # MLflow's own providers are still registered.
    assert {"DatabricksRequestHeaderProvider", "DefaultRequestHeaderProvider"} <= set(
        found["providers"]
    )
