"""``serve`` collects cyclic garbage less often than Python's defaults (``cli.GC_THRESHOLDS``)."""

from __future__ import annotations

import gc
import inspect

from jobqueue_store import cli


def test_tune_gc_sets_the_serving_thresholds() -> None:
    before = gc.get_threshold()
    try:
        cli.tune_gc()
        assert gc.get_threshold() == cli.GC_THRESHOLDS
        assert all(
            ours >= default for ours, default in zip(cli.GC_THRESHOLDS, (700, 10, 10), strict=True)
        )
    finally:
        gc.set_threshold(*before)


def test_serve_tunes_the_collector_before_it_says_it_listens() -> None:
    source = inspect.getsource(cli._serve_app)
    assert 0 <= source.index("tune_gc()") < source.index("listening on")
