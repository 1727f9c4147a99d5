"""Synthetic model frames for fast unit tests (see ``driftline.training.synthetic``)."""

from __future__ import annotations

from driftline.training.synthetic import model_frame

__all__ = ["model_frame"]
