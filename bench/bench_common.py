"""What the small stand-alone benchmarks share: their options, machine record and output.

Imported by name (``from bench_common import ...``): a benchmark runs as a script from
``bench/``, so this folder is on its path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any


def parse_options(doc: str, repeats: int, out: str) -> argparse.Namespace:
    """``--repeats`` and ``--out`` with these defaults; the description is ``doc``'s first line."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--out", type=Path, default=Path(out))
    return parser.parse_args()


def host() -> dict[str, Any]:
    """The machine every benchmark records: CPUs (all and usable), platform and Python.

    Each benchmark adds the versions of the packages it measures.
    """
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }


def machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    """:func:`host`, with the load averages before the run and now."""
    return host() | {
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }


def write_result(out: Path, result: dict[str, Any]) -> None:
    """Write ``result`` as indented JSON to ``out`` (its folder created)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
