"""Deterministic canary split by entity (the user), so a user sticks to one variant."""

from __future__ import annotations

import hashlib

from driftline.serving.schemas import Variant


def bucket(user_id: int) -> float:
    """Map ``user_id`` to ``[0, 1)`` through sha256 (uniform, stable across processes)."""
    digest = hashlib.sha256(str(user_id).encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def choose_variant(user_id: int, canary_weight: float, canary_loaded: bool) -> Variant:
    """``canary`` for the ``canary_weight`` share of users when a canary is loaded."""
    if canary_loaded and bucket(user_id) < canary_weight:
        return "canary"
    return "champion"
