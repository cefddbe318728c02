"""The problems' JSON result cache: entries survive a new instance, no path means no file."""

from vitforge.sw.coopt.diskcache import JsonCache


def test_entries_round_trip_through_the_file_and_leave_no_temporary(tmp_path):
    path = tmp_path / "sub" / "cache.json"
    JsonCache(path).store("a", 0.5)
    JsonCache(path).store("b", 0.25)
    again = JsonCache(path)
    assert again.load() == {"a": 0.5, "b": 0.25}
    assert again.get("a") == 0.5 and again.get("missing") is None
    again.store("a", 0.75)
    assert JsonCache(path).get("a") == 0.75
    assert sorted(p.name for p in path.parent.iterdir()) == ["cache.json"]


def test_without_a_path_nothing_is_written(tmp_path):
    cache = JsonCache(None)
    cache.store("a", 1.0)
    assert cache.load() == {} and cache.get("a") is None
    assert list(tmp_path.iterdir()) == []
