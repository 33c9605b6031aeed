"""`flare bench` runs end to end on a tiny load and reports consistent numbers (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def bench(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "flare_im.cli", "bench", *args, "--duration", "1", "--warmup", "0.3", "--json"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def test_p2p_against_flare_and_the_relay() -> None:
    r = bench("p2p", "--pairs", "3", "--window", "2", "--compare-relay")
    assert (r["benchmark"], r["target"], r["connected"], r["connect_errors"]) == ("p2p", "flare", 6, 0)
    assert r["loss"] == 0
    assert r["errors"] == 0
    assert r["acked"] == r["delivered"] == r["sent"] > 0
    assert r["delivered_per_s"] > 0
    assert r["latency_ms"]["count"] > 0
    lat = r["latency_ms"]
    assert 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["p999_ms"] <= lat["max_ms"]
    assert r["server"]["rss_mb"] > 0
    assert "cpu_percent" in r["server"]
    assert r["relay"]["delivered_per_s"] > 0
    assert r["relay"]["loss"] == 0
    assert r["ratio_to_relay"] == round(r["delivered_per_s"] / r["relay"]["delivered_per_s"], 3)
    assert r["machine"]["cpus"] >= 1


def test_p2p_at_a_fixed_rate() -> None:
    r = bench("p2p", "--pairs", "2", "--rate", "200")
    assert r["loss"] == 0
    assert r["rate"] == 200.0
    assert r["sent"] <= 200 * 1.3 + 10  # paced, not saturating (warm-up included)


def test_group_fan_out() -> None:
    r = bench("group", "--members", "6", "--senders", "2", "--window", "2")
    assert (r["benchmark"], r["connected"], r["loss"], r["errors"]) == ("group", 6, 0, 0)
    assert r["delivered"] == r["acked"] * 5  # every message reaches the 5 other members


def test_idle_memory_per_connection() -> None:
    r = bench("idle", "--connections", "50", "--hold", "0.5")
    assert (r["connected"], r["connect_errors"]) == (50, 0)
    assert r["server"]["rss_after_mb"] >= r["server"]["rss_before_mb"] - 1
    assert "bytes_per_connection" in r


def test_relay_alone() -> None:
    r = bench("relay", "--pairs", "2", "--window", "2")
    assert (r["target"], r["loss"], r["connected"]) == ("relay", 0, 4)


def test_soak_prints_a_trend_and_compares_the_first_and_last_minute() -> None:
    r = bench("soak", "--pairs", "2", "--rate", "100", "--interval", "0.5")
    assert (r["benchmark"], r["loss"], r["errors"], r["connected"]) == ("soak", 0, 0, 4)
    assert [row["t_s"] for row in r["trend"]] == [0.5, 1.0]
    assert all(row["delivered_per_s"] > 0 and row["rss_mb"] > 0 for row in r["trend"])
    assert "flare.db" in r["trend"][-1]["files"]
    assert r["first_minute"]["p99_ms"] > 0
    assert r["last_to_first"]["p99"] is not None


def test_soak_with_a_control_minute_on_a_fresh_server() -> None:
    r = bench("soak", "--pairs", "2", "--rate", "100", "--interval", "0.5", "--control")
    assert (r["loss"], r["errors"]) == (0, 0)
    control = r["control_minute"]
    assert (control["loss"], control["errors"]) == (0, 0)
    assert (control["from_s"], control["to_s"]) == (0.0, 1.0)  # the soak's duration, as it is under a minute
    assert control["delivered_per_s"] > 0
    assert r["last_to_control"]["p99"] == round(r["last_minute"]["p99_ms"] / control["p99_ms"], 2)
    assert r["control_to_first"]["p99"] == round(control["p99_ms"] / r["first_minute"]["p99_ms"], 2)
    assert r["last_to_control"]["cpu"] is not None


def test_soak_control_is_refused_against_a_running_server() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flare_im.cli", "bench", "soak", "--url", "http://127.0.0.1:9", "--admin-key", "k",
         "--control"],
        capture_output=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert b"--control starts a fresh server" in proc.stderr
