"""A real Prometheus (Debian's, installed by scripts/services.sh) scrapes a running node; its query API returns
Flare's series. The alert rules of deploy/ pass promtool's check and unit tests, and load in that Prometheus;
every query of the Grafana dashboard is valid PromQL there."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.services import require

from flare_im.devcluster import free_port

from .conftest import Harness

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "flare.json"
ALERT_NAMES = {
    "FlareNodeDown",
    "FlareNotReady",
    "FlareConsumerLag",
    "FlareErrorRate",
    "FlareSendLatencyP99",
    "FlareSlowConsumerCloses",
    "FlareStoreWriteFailures",
    "FlareEventLoopLag",
}


def _promtool() -> Path:
    return Path(require("prometheus")).with_name("promtool")


def test_alert_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = _promtool()
    checked = subprocess.run([promtool, "check", "rules", ALERTS], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERT_NAMES)} rules found" in checked.stdout
    # Each alert fires on the series it is about and not on the healthy ones (alerts_test.yml).
    tested = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"], cwd=ALERTS.parent, capture_output=True, text=True, timeout=60
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # The compose file's Prometheus configuration, with the rules where this machine has them.
    config = (DEPLOY / "prometheus" / "prometheus.yml").read_text().replace("/etc/prometheus/alerts.yml", str(ALERTS))
    (tmp_path / "prometheus.yml").write_text(config)
    configured = subprocess.run(
        [promtool, "check", "config", tmp_path / "prometheus.yml"], capture_output=True, text=True, timeout=60
    )
    assert configured.returncode == 0, configured.stdout + configured.stderr


def test_the_dashboard_reads_the_provisioned_prometheus() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    provisioned = (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert "uid: prometheus" in provisioned
    targets = [t for p in dashboard["panels"] for t in p.get("targets", ())]
    assert len(targets) > 20
    assert {t["datasource"]["uid"] for t in targets} == {"prometheus"}
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


class Prometheus:
    def __init__(self, tmp: Path, targets: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": "flare", "static_configs": [{"targets": targets}]}],
        }
        (tmp / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                require("prometheus"),
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()

    async def query(self, http: httpx.AsyncClient, promql: str) -> list[dict[str, Any]]:
        response = await http.get(f"{self.url}/api/v1/query", params={"query": promql})
        if response.status_code == 503:  # "Service Unavailable" until its storage is open: still starting
            response.raise_for_status()
        answer = response.json()
        assert answer["status"] == "success", (promql, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    async def wait(self, http: httpx.AsyncClient, promql: str, check: Any, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = await self.query(http, promql)
                if check(last):
                    return last
            except httpx.HTTPError:
                pass  # still starting
            await asyncio.sleep(0.5)
        raise AssertionError(f"{promql}: {last} after {timeout} s; log: {self.log.name}")


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[list[Prometheus]]:
    started: list[Prometheus] = []
    yield started
    for p in started:
        p.stop()


async def test_prometheus_scrapes_a_node(harness: Harness, tmp_path: Path, prometheus_for: list[Prometheus]) -> None:
    await harness.user("alice")
    await harness.user("bob")
    alice = await harness.device("alice")
    bob = await harness.device("bob")
    for i in range(3):
        await alice.send("d:alice:bob", f"m{i}")
    for _ in range(3):
        await bob.next_message()
    prometheus = Prometheus(tmp_path, [f"127.0.0.1:{harness.srv.api_port}"])
    prometheus_for.append(prometheus)
    async with httpx.AsyncClient(timeout=10) as http:
        sent = await prometheus.wait(
            http, 'flare_ws_frames_in_total{type="send"}', lambda r: r and float(r[0]["value"][1]) == 3
        )
        assert sent[0]["metric"]["job"] == "flare"
        up = await prometheus.query(http, 'up{job="flare"}')
        assert [float(s["value"][1]) for s in up] == [1.0]
        ack = await prometheus.query(http, 'flare_send_stage_seconds_count{stage="ack"}')
        assert float(ack[0]["value"][1]) == 3
        names = {s["metric"]["__name__"] for s in await prometheus.query(http, '{__name__=~"flare_.+"}')}
        assert {"flare_ws_connections", "flare_ready", "flare_build_info", "flare_sqlite_commit_seconds_count"} <= names
        # The rules of deploy/ are loaded, and none fires on a healthy node.
        rules = (await http.get(f"{prometheus.url}/api/v1/rules")).json()["data"]["groups"]
        assert {r["name"] for g in rules for r in g["rules"]} == ALERT_NAMES
        assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules
        alerts = (await http.get(f"{prometheus.url}/api/v1/alerts")).json()["data"]["alerts"]
        assert alerts == []
        # Every panel's query parses and runs (Grafana's $__rate_interval is at least four scrape intervals).
        for panel in json.loads(DASHBOARD.read_text())["panels"]:
            for target in panel.get("targets", ()):
                await prometheus.query(http, target["expr"].replace("$__rate_interval", "1m"))
