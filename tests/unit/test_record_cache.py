"""The record cache's bounds: entries, bytes, the largest record kept."""

from __future__ import annotations

from jobqueue_store.storage.record_cache import RecordCache


def test_oldest_entries_go_first_past_the_entry_bound() -> None:
    cache = RecordCache(max_entries=3, max_bytes=1000, max_record=100)
    for i in range(5):
        cache.put("ds", f"j{i}", "app", b"x" * 10)
    assert len(cache) == 3 and cache.size == 30
    assert cache.get("ds", "j0") is None and cache.get("ds", "j1") is None
    assert cache.get("ds", "j4") == ("app", b"x" * 10)


def test_bytes_are_bounded_and_a_replacement_is_counted_once() -> None:
    cache = RecordCache(max_entries=100, max_bytes=25, max_record=100)
    cache.put("ds", "a", "app", b"1" * 10)
    cache.put("ds", "a", "app", b"2" * 12)
    assert cache.size == 12 and len(cache) == 1
    cache.put("ds", "b", "app", b"3" * 10)
    cache.put("ds", "c", "app", b"4" * 10)  # 32 bytes: "a" goes
    assert cache.get("ds", "a") is None and cache.size == 20


def test_a_large_record_is_not_kept_and_drops_the_older_text() -> None:
    cache = RecordCache(max_entries=10, max_bytes=1000, max_record=16)
    cache.put("ds", "a", "app", b"small")
    cache.put("ds", "a", "app", b"L" * 17)
    assert cache.get("ds", "a") is None and cache.size == 0


def test_a_zero_sized_cache_keeps_nothing_and_clear_forgets() -> None:
    off = RecordCache(max_entries=0)
    off.put("ds", "a", "app", b"{}")
    assert off.get("ds", "a") is None
    cache = RecordCache()
    cache.put("ds", "a", "app", b"{}")
    cache.clear()
    assert len(cache) == 0 and cache.size == 0


def test_refresh_replaces_only_what_is_held() -> None:
    cache = RecordCache(max_entries=10, max_bytes=1000, max_record=16)
    cache.refresh("ds", "a", "app", b"written")  # not held: nothing
    assert cache.get("ds", "a") is None and cache.size == 0
    cache.put("ds", "a", "app", b"read")
    cache.refresh("ds", "a", "app", b"written")
    assert cache.get("ds", "a") == ("app", b"written") and cache.size == 7
    cache.refresh("ds", "a", "app", b"L" * 17)  # too large to keep: dropped
    assert cache.get("ds", "a") is None and cache.size == 0
