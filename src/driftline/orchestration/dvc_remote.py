"""The DVC remote on S3: push what a checkout's DVC tracks, with the real ``dvc`` CLI.

``.dvc/config`` names two remotes: ``local`` (``../.dvc-remote``, the default, for a
laptop) and ``s3`` (``s3://driftline-dvc/dvcstore``: the bucket of the production
profile's S3 emulator and the prefix Terraform renders as ``DRIFTLINE_DVC_REMOTE_URI``).
Nothing about the environment is committed: the S3 endpoint comes from the process
environment (``AWS_ENDPOINT_URL_S3``, read by botocore under ``s3fs``, which ``dvc-s3``
uses), the credentials from the usual ``AWS_*`` variables, and another bucket from
``dvc remote modify --local s3 url <DRIFTLINE_DVC_REMOTE_URI>`` (``.dvc/config.local``,
never committed).

The production profile (:mod:`driftline.orchestration.prod`) calls :func:`push` at the
end of its loop; ``tests/infra/test_dvc_s3.py`` pushes a small tracked output to a moto
bucket and pulls it into a fresh checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: The committed S3 remote's name.
REMOTE = "s3"
#: What the CLI prints when it uploaded files ("1 file pushed", "12 files pushed").
_PUSHED = re.compile(r"(\d+) files? pushed")


class DvcError(RuntimeError):
    """A ``dvc`` command failed (its output's end is in the message)."""


@dataclass(frozen=True)
class DvcPush:
    """What one ``dvc push`` did.

    Attributes:
        remote: The remote's name.
        url: The remote's URL.
        pushed: Files uploaded by this push (0: the remote already had everything).
        seconds: How long the push took.
    """

    remote: str
    url: str
    pushed: int
    seconds: float


def dvc_binary() -> str:
    """This environment's ``dvc`` (beside the interpreter), else the ``PATH``'s.

    Raises:
        DvcError: DVC is not installed.
    """
    local = Path(sys.executable).with_name("dvc")
    if local.exists():
        return str(local)
    found = shutil.which("dvc")
    if found is None:
        raise DvcError("dvc is not installed: run `make install`")
    return found


def run_dvc(root: Path, args: list[str], env: Mapping[str, str], timeout_s: float = 900) -> str:
    """``dvc <args>`` in the checkout ``root`` with ``env`` over this process's; its output.

    Analytics are off (``DVC_NO_ANALYTICS``): the command never reaches the internet.

    Raises:
        DvcError: A non-zero exit (the output's end in the message).
    """
    full_env = {**os.environ, **env, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(
        [dvc_binary(), *args],
        cwd=root,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise DvcError(
            f"dvc {' '.join(args)} failed in {root} ({done.returncode}):\n{output[-3000:]}"
        )
    return output


def remote_url(root: Path, env: Mapping[str, str], remote: str = REMOTE) -> str:
    """The URL of ``remote`` as the checkout's configuration (``--local`` included) says.

    Raises:
        DvcError: No such remote.
    """
    url = run_dvc(root, ["config", f"remote.{remote}.url"], env).strip()
    if not url:  # `dvc config` prints nothing (and exits 0) for an unknown remote
        raise DvcError(f"no DVC remote {remote!r} in {root / '.dvc' / 'config'}")
    return url


def push(root: Path, env: Mapping[str, str], remote: str = REMOTE) -> DvcPush:
    """``dvc push -r <remote>``: upload every cached output the checkout tracks.

    What DVC tracks is what ``dvc.lock`` and the ``.dvc`` files name; an output that is
    not in the local cache (never reproduced here) is left out, with DVC's warning.

    Args:
        root: The checkout (the folder holding ``.dvc/``).
        env: Environment of the command: the S3 endpoint and credentials.
        remote: The remote's name.

    Raises:
        DvcError: The push failed (an unreachable endpoint, a missing bucket, ...).
    """
    url = remote_url(root, env, remote)
    started = time.monotonic()
    output = run_dvc(root, ["push", "-r", remote], env)
    found = _PUSHED.search(output)
    return DvcPush(
        remote=remote,
        url=url,
        pushed=int(found.group(1)) if found else 0,
        seconds=round(time.monotonic() - started, 1),
    )
