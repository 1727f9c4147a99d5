"""GX data-docs views that compile their Jinja templates once per process.

GX builds a new ``SiteBuilder`` on every data-docs update, and each of its views a new
Jinja ``Environment``: every validation recompiled the same ~200 templates, about
70% of the docs build and a third of a whole validation. These views are GX's own
(:class:`~great_expectations.render.view.DefaultJinjaPageView` and
:class:`~great_expectations.render.view.DefaultJinjaIndexPageView`), named in the data
docs site's configuration (:data:`SITE_SECTIONS`, :data:`SITE_INDEX_BUILDER`: GX's
``module_name``/``class_name`` extension point), with one change: their environment
shares a process-wide in-memory bytecode cache (:class:`MemoryBytecodeCache`). Jinja
checks each template's source checksum against the cached code, so the pages are the
same bytes as GX's.

GX is imported here at module level: import this module only where GX is (it is named
as a string in the site configuration and imported by GX itself).
"""

from __future__ import annotations

import threading
from typing import Any

from great_expectations.render.view.view import DefaultJinjaIndexPageView, DefaultJinjaPageView
from jinja2 import BytecodeCache
from jinja2.bccache import Bucket

__all__ = [
    "SITE_INDEX_BUILDER",
    "SITE_SECTIONS",
    "CachedIndexPageView",
    "CachedPageView",
    "MemoryBytecodeCache",
]


class MemoryBytecodeCache(BytecodeCache):
    """Compiled templates kept in memory, keyed by Jinja's bucket key (name + source)."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def load_bytecode(self, bucket: Bucket) -> None:
        """Fill ``bucket`` from the cache (Jinja discards it when the source changed)."""
        with self._lock:
            code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: Bucket) -> None:
        """Keep ``bucket``'s freshly compiled code."""
        code = bucket.bytecode_to_string()
        with self._lock:
            self._code[bucket.key] = code

    def clear(self) -> None:
        """Forget every compiled template."""
        with self._lock:
            self._code.clear()


#: The one cache of this process.
BYTECODE = MemoryBytecodeCache()


class CachedPageView(DefaultJinjaPageView):
    """GX's page view, its templates compiled once per process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env.bytecode_cache = BYTECODE


class CachedIndexPageView(DefaultJinjaIndexPageView):
    """GX's index page view, its templates compiled once per process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env.bytecode_cache = BYTECODE


def _view(cls: type) -> dict[str, str]:
    return {"module_name": __name__, "class_name": cls.__name__}


#: ``site_section_builders`` of the data docs site: GX's defaults with these views.
SITE_SECTIONS: dict[str, dict[str, Any]] = {
    section: {"view": _view(CachedPageView)}
    for section in ("expectations", "validations", "profiling")
}
#: ``site_index_builder`` of the data docs site: GX's default with the index view.
SITE_INDEX_BUILDER: dict[str, Any] = {
    "class_name": "DefaultSiteIndexBuilder",
    "view": _view(CachedIndexPageView),
}
