"""Process tuning shared by the long-running processes (UI, stream workers, agent)."""

from __future__ import annotations

import gc

#: Young-generation threshold: CPython's default of 700 allocations runs a collection every
#: few hundred microseconds on a hot request or message path.
GEN0_THRESHOLD = 20_000


def settle_heap() -> None:
    """Call once start-up is done: what start-up allocated (modules, settings, caches) moves
    to the permanent generation, so later collections stop walking it, and young objects are
    collected less often. Collections of the older generations still run; nothing leaks
    that would not leak anyway."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
