"""``dvc repro`` of the whole pipeline in a temporary copy of the repository.

simulate -> ingest -> validate -> features -> train (the Kubeflow pipeline on the local
runner, registering in MLflow) -> evaluate (the registered version on the holdout, with
``metrics.json`` and the PR-curve plot), then a no-op repro and a push.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Three weeks of data (the window starts two weeks in): above the global 900 s when loaded.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def _copy_repo(target: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if name.startswith(("infra/", "deploy/", "docker/")) or not (REPO / name).is_file():
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target / name)


def test_dvc_repro_on_tiny_params(tmp_path: Path) -> None:
    work = tmp_path / "repo"
    work.mkdir()
    _copy_repo(work)
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    params = yaml.safe_load((work / "params.yaml").read_text())
    # The data starts on ingest.start: the window starts 14 days later, on the first day
    # with complete look-back features (training refuses earlier ones).
    params["simulate"].update(
        start="2026-01-01", end="2026-01-22", rows_per_day=1500, fraud_rate=0.03
    )
    params["ingest"].update(start="2026-01-01", end="2026-01-22")
    params["features"].update(start="2026-01-02", end="2026-01-22")
    params["train"].update(start="2026-01-15", end="2026-01-22", trials=2, workers=1)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    # A seven-day window: labels mature after 2 days, one day each for holdout/validation.
    env.update(
        DRIFTLINE_LABEL_MATURITY_DAYS="2",
        DRIFTLINE_VALID_DAYS="1",
        DRIFTLINE_HOLDOUT_DAYS="1",
        DRIFTLINE_MAX_EPOCHS="3",
        DRIFTLINE_GATE_MIN_PR_AUC="0.0",
    )

    def dvc(*args: str) -> str:
        done = subprocess.run(
            [str(BIN / "dvc"), *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    dvc("repro")
    lake = work / ".driftline/lake/features"
    assert (lake / "transaction_features/dt=2026-01-02/part-0.parquet").is_file()
    assert (lake / "fresh/dt=2026-01-21/part-0.parquet").is_file()
    assert (work / "dvc.lock").is_file()
    outcome = json.loads((work / ".driftline/dvc/train.json").read_text())
    assert outcome["version"] == "1" and outcome["alias"] == "staging"
    metrics = json.loads((work / ".driftline/dvc/evaluate/metrics.json").read_text())
    assert metrics["version"] == "1" and metrics["pr_auc"] > metrics["base_rate"]
    assert "pr_auc" in dvc("metrics", "show")
    curve = (work / ".driftline/dvc/evaluate/pr_curve.csv").read_text().splitlines()
    assert curve[0].split(",")[:2] == ["precision", "recall"] and len(curve) > 10
    assert "up to date" in dvc("repro")
    dvc("push")
    assert any((work / ".dvc-remote").rglob("*"))
