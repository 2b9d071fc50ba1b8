"""Process tuning shared by the long-running processes (UI, stream workers, agent)."""

from __future__ import annotations

import ctypes
import gc
import logging

log = logging.getLogger(__name__)

#: Young-generation threshold: CPython's default of 700 allocations runs a collection every
#: few hundred microseconds on a hot request or message path.
GEN0_THRESHOLD = 20_000


def settle_heap() -> None:
    """Call once start-up is done: what start-up allocated (modules, settings, caches) moves
    to the permanent generation, so later collections stop walking it, and young objects are
    collected less often. Collections of the older generations still run; nothing leaks
    that would not leak anyway. The heap start-up freed (schema building, imports) goes
    back to the system."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    _trim_malloc()


def _trim_malloc() -> None:
    """glibc keeps freed memory in its arenas; ``malloc_trim`` returns the free pages to the
    system (about 1-3 MB of resident memory after start-up). Other C libraries lack it."""
    try:  # the soname of glibc on every Linux it runs on; find_library would start ldconfig
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        log.debug("malloc_trim not available; start-up heap kept")
        return
    trim(0)
