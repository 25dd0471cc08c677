"""deploy/ is validated here as far as this machine can, and its topology runs for real: two gateway
processes behind the shipped nginx config, over Redis and PostgreSQL, serving one full QR login."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from gateway import metrics
from tests.conftest import new_identity
from tests.support.clients import bearer, close_code, mint, next_message, open_events
from tests.support.databases import create_postgres_database, drop_postgres_database, need
from tests.support.gateway_server import GatewayProcess, free_port
from tests.support.redis_procs import RedisServer

pytestmark = pytest.mark.slow  # the deploy tools as subprocesses, nginx, redis-server and PostgreSQL

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
BIN = Path(sys.executable).parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def tool(name: str) -> str:
    path = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    if path is None:
        need(f"{name} is not installed")
    assert path is not None
    return path


def test_kubernetes_manifests_match_the_schemas(tmp_path: Path) -> None:
    validate = tool("kubernetes-validate")
    manifests = sorted(str(p) for p in (DEPLOY / "kubernetes").glob("*.yaml"))
    kinds = {doc["kind"] for p in manifests for doc in yaml.safe_load_all(Path(p).read_text())}
    assert {"Deployment", "Service", "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert {"ConfigMap", "Secret"} <= kinds
    result = run(validate, "--strict", *manifests)
    assert result.returncode == 0, result.stdout + result.stderr
    # The check can fail: a misspelt field is caught.
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        (DEPLOY / "kubernetes" / "deployment.yaml").read_text().replace("readinessProbe", "readynessProbe")
    )
    assert run(validate, "--strict", str(broken)).returncode != 0


def test_deployment_probes_and_drain() -> None:
    deployment = yaml.safe_load((DEPLOY / "kubernetes" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "preStop" in container["lifecycle"]
    config = yaml.safe_load((DEPLOY / "kubernetes" / "configmap.yaml").read_text())["data"]
    assert pod["terminationGracePeriodSeconds"] > float(config["QRGATE_DRAIN_DELAY"]) + 10
    assert pod["securityContext"]["runAsNonRoot"] is True
    # Liveness and the scraper use the operations port, which answers at the public port's connection limit.
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["port"] == "metrics"
    assert ports["metrics"] == int(config["QRGATE_METRICS_PORT"])
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == config["QRGATE_METRICS_PORT"]


def test_compose_file_matches_the_compose_spec(tmp_path: Path) -> None:
    check = tool("check-jsonschema")
    compose = DEPLOY / "compose.yaml"
    result = run(check, "--builtin-schema", "vendor.compose-spec", str(compose))
    assert result.returncode == 0, result.stdout + result.stderr
    services = yaml.safe_load(compose.read_text())["services"]
    assert {"gateway-1", "gateway-2", "nginx", "redis", "postgres"} <= set(services)
    broken = tmp_path / "compose.yaml"
    broken.write_text(compose.read_text().replace("    ports:\n", "    portz:\n", 1))
    assert run(check, "--builtin-schema", "vendor.compose-spec", str(broken)).returncode != 0


def test_dockerfile_is_multi_stage_and_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    assert re.search(r"^USER qrgate$", text, re.M)
    assert "slim" in text


def test_dashboard_uses_real_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "qrgate-dashboard.json").read_text())
    exposed = {m._name for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}
    assert len(exposed) >= 9
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used = set(re.findall(r"qrgate_[a-z_]+", target["expr"]))
            for name in used:
                base = re.sub(r"_(bucket|count|sum|total)$", "", name)
                assert base in exposed or name in exposed, f"{panel['title']}: unknown metric {name}"


def nginx_config(tmp: Path, listen: int, upstreams: list[int]) -> Path:
    """The shipped nginx.conf with only the listen port, the upstream addresses and the pid file
    replaced (the compose service names do not resolve on this machine)."""
    text = (DEPLOY / "nginx" / "nginx.conf").read_text()
    servers = "".join(f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;\n" for port in upstreams)
    text = re.sub(r"(        server gateway-\d:8000[^\n]*\n)+", servers, text)
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{listen};")
    text = text.replace("pid /tmp/nginx.pid;", f"pid {tmp / 'nginx.pid'};")
    text = re.sub(r"(\w+_temp_path) /tmp/", rf"\1 {tmp}/", text)
    assert "gateway-1" not in text
    path = tmp / "nginx.conf"
    path.write_text(text)
    return path


def test_nginx_config_is_valid(tmp_path: Path) -> None:
    nginx = tool("nginx")
    result = run(nginx, "-t", "-c", str(nginx_config(tmp_path, free_port(), [free_port(), free_port()])))
    assert result.returncode == 0, result.stderr
    text = (DEPLOY / "nginx" / "nginx.conf").read_text()
    timeout = int(re.search(r"proxy_read_timeout (\d+)s;", text[text.index("/events") :]).group(1))  # type: ignore[union-attr]
    assert timeout > 120 + 30, "WebSocket timeout must outlive a QR code"


@pytest.fixture
def topology(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[str, list[GatewayProcess]]]:
    nginx = tool("nginx")
    database, database_name = create_postgres_database()
    listen = free_port()
    ports = [free_port(), free_port()]
    common = {
        "QRGATE_PUBLIC_URL": f"http://127.0.0.1:{listen}",
        "QRGATE_DATABASE_URL": database,
        "QRGATE_REDIS_URL": redis_server.url,
        "QRGATE_KEYS_FILE": str(tmp_path / "keys.json"),
        "QRGATE_ARGON2_MEMORY_KIB": "1024",
        "QRGATE_ARGON2_TIME_COST": "1",
        "QRGATE_TRUSTED_PROXIES": "127.0.0.1",
    }
    upgraded = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "db", "upgrade"],
        env={**os.environ, **common},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    # As deployed: /metrics on each process's operations port only.
    gateways = [
        GatewayProcess(
            {**common, "QRGATE_METRICS_PORT": str(free_port()), "QRGATE_METRICS_PUBLIC": "false"},
            port,
            tmp_path / f"gw-{port}.log",
        ).start()
        for port in ports
    ]
    proxy = subprocess.Popen([nginx, "-c", str(nginx_config(tmp_path, listen, ports)), "-g", "daemon off;"])
    try:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{listen}/healthz", timeout=0.5).status_code == 200:
                    break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{listen}", gateways
    finally:
        proxy.terminate()
        proxy.wait(10)
        for gateway in gateways:
            gateway.stop()
        drop_postgres_database(database_name)


@pytest.mark.anyio
async def test_a_full_login_through_nginx(topology: tuple[str, list[GatewayProcess]]) -> None:
    base_url, gateways = topology
    identity = new_identity()
    env = {**os.environ, **gateways[0].env}
    added = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway.cli", "admin", "person", "add", "--login-name", identity["login_name"],
         "--phone", identity["phone"], "--name", identity["name"], "--id-type", "resident_id",
         "--id-number", identity["id_number"], "--password-stdin"],
        input=identity["password"] + "\n", env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        login = await http.post(
            "/v1/login/password",
            json={"identifier": identity["phone"], "password": identity["password"], "client_id": "mobile-app"},
        )
        assert login.status_code == 200, login.text
        phone = login.json()["access_token"]
        minted = await mint(http)
        assert minted["events_url"].startswith(base_url.replace("http", "ws"))
        ws = await open_events(minted)  # through nginx's WebSocket upgrade
        assert (await next_message(ws))["type"] == "state"
        scan = await http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(phone))
        assert scan.status_code == 200
        assert scan.headers["x-request-id"]
        await http.post(f"/v1/qr/{minted['qr_id']}/confirm", headers=bearer(phone))
        assert (await next_message(ws))["type"] == "scanned"
        assert (await next_message(ws))["type"] == "confirmed"
        assert await close_code(ws) == 1000
        for _ in range(6):
            await http.get("/healthz")
        hidden = await http.get("/metrics")
        assert hidden.status_code == 404
    served = []
    for gateway in gateways:
        async with httpx.AsyncClient() as direct:
            assert (await direct.get(f"{gateway.base_url}/metrics")).status_code == 404
            text = (await direct.get(f"{gateway.ops_url}/metrics")).text
        served.append(sum(float(line.split()[-1]) for line in text.splitlines()
                          if line.startswith("qrgate_http_request_duration_seconds_count")))  # fmt: skip
    assert all(count > 0 for count in served), f"round robin should reach both replicas: {served}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
