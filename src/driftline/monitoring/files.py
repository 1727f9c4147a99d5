"""How the monitoring plane writes its JSON files: atomically, keys sorted, one format."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from driftline.core.atomic import write_atomic


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``data`` as indented JSON (readers never see half a file)."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str)
    write_atomic(path, lambda out: out.write((text + "\n").encode("utf-8")))
