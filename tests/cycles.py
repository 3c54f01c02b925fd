"""What Python's cyclic garbage collector finds: for the tests that a request or a write leaves no
reference cycle behind (such garbage waits for a collection, which held the store's event loop
for tens of milliseconds under load)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cyclic_garbage(modules: tuple[str, ...]) -> Iterator[list[str]]:
    """Collect, run the block, collect again: the list given to the block is then filled with
    the sorted names of the types, from ``modules``, of the objects that only the collector
    freed (found in reference cycles) while the block ran."""
    found: list[str] = []
    flags = gc.get_debug()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # the garbage a collection finds stays in gc.garbage
    try:
        yield found
        gc.collect()
        found.extend(
            sorted(
                {
                    f"{type(o).__module__}.{type(o).__qualname__}"
                    for o in gc.garbage
                    if type(o).__module__.startswith(modules)
                }
            )
        )
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()
