"""bench/search.py runs end to end on a tiny store (the 1,000,000-message run is by hand, docs/performance.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench" / "search.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_search", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_search"] = module
    spec.loader.exec_module(module)
    return module


def test_the_search_bench_loads_indexes_and_finds_what_it_queries() -> None:
    result = _bench().main(["--messages", "3000", "--convs", "20", "--queries", "5", "--json"])
    assert result["messages"] == 3000
    assert result["index"] is True
    queries = result["queries"]
    # Queries cut from stored texts find something; the made-up word finds nothing.
    for name in ("english, common word", "chinese, 4 characters", "chinese, 2 characters", "chinese, 1 character"):
        assert queries[name]["mean_hits"] >= 1, name
        assert 0 < queries[name]["p50_ms"] <= queries[name]["p99_ms"] <= queries[name]["max_ms"]
    assert queries["no match"]["mean_hits"] == 0


def test_the_send_path_mode_reports_both_sides() -> None:
    rounds = _bench().main(["--send-path", "500", "--rounds", "1"])["send_path"]
    assert [r["index"] for r in rounds] == [False, True]
    assert all(r["appends_per_s"] > 0 for r in rounds)
    assert rounds[1]["indexed_s_after_last_ack"] >= 0
