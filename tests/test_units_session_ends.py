"""Session ends reach the units service within 5 s (issue 15, reproduction 3): after a logout, a
revocation, refresh-token reuse, `DELETE /v1/sessions/{sid}` or a password reset the gateway answers
401 `session_ended`, and now so does the units service, mounted in the gateway process and as a
separate process following the gateway's session-end feed over HTTP (docs/downstream.md, "Session
ends"). A state-changing call asks the gateway first; a live session keeps working. Real servers:
`units_stack` (one gateway process, one `qrgate serve-units` process)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.support.accounts import fresh_ip
from tests.support.gateway_server import free_port
from tests.support.redis_procs import RedisServer
from tests.support.scale_out import PUBLIC_URL, GatewayCluster
from tests.support.scale_out import Person as ClusterPerson
from tests.support.units import (
    DECLARATION_PASSWORD,
    Person,
    ServiceProcess,
    UnitsStack,
    bearer,
    claims_of,
    new_person,
    new_tin,
    new_unit,
)

pytestmark = pytest.mark.anyio
LIMIT = 5.0  # s: the promise


@dataclass
class Login:
    access_token: str
    refresh_token: str

    @property
    def sid(self) -> str:
        return str(claims_of(self.access_token)["sid"])


async def login(stack: UnitsStack, identity: dict[str, str]) -> Login:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=20) as gateway:
        answer = await gateway.post(
            "/v1/login/password",
            json={"identifier": identity["login_name"], "password": identity["password"], "client_id": "web"},
            headers=fresh_ip(),
        )
    assert answer.status_code == 200, answer.text
    return Login(answer.json()["access_token"], answer.json()["refresh_token"])


@dataclass
class Scene:
    stack: UnitsStack
    gateway: httpx.AsyncClient
    person: Person
    staff: Person
    session: Login


async def by_logout(scene: Scene) -> None:
    answer = await scene.gateway.post("/v1/logout", headers=bearer(scene.session.access_token))
    assert answer.status_code == 204, answer.text


async def by_revoke(scene: Scene) -> None:
    answer = await scene.gateway.post("/v1/revoke", data={"token": scene.session.refresh_token, "client_id": "web"})
    assert answer.status_code == 200, answer.text


async def by_refresh_reuse(scene: Scene) -> None:
    form = {"grant_type": "refresh_token", "refresh_token": scene.session.refresh_token, "client_id": "web"}
    assert (await scene.gateway.post("/v1/token", data=form)).status_code == 200
    reused = await scene.gateway.post("/v1/token", data=form)  # a thief presents the spent token
    assert reused.status_code == 400
    assert reused.json()["code"] == "refresh_token_reused"


async def by_ending_it_from_another_device(scene: Scene) -> None:
    other = await login(scene.stack, scene.person.identity)
    answer = await scene.gateway.delete(f"/v1/sessions/{scene.session.sid}", headers=bearer(other.access_token))
    assert answer.status_code == 204, answer.text


async def by_password_reset(scene: Scene) -> None:
    identity = scene.person.identity
    body = {
        "id_type": identity["id_type"],
        "id_number": identity["id_number"],
        "name": identity["name"],
        "mode": "temporary_password",
    }
    answer = await scene.gateway.post("/v1/admin/password-resets", json=body, headers=scene.staff.headers)
    assert answer.status_code == 200, answer.text


WAYS: dict[str, Callable[[Scene], Awaitable[None]]] = {
    "logout": by_logout,
    "revoke": by_revoke,
    "refresh_reuse": by_refresh_reuse,
    "session_delete": by_ending_it_from_another_device,
    "password_reset": by_password_reset,
}


@pytest.fixture
async def gateway(units_stack: UnitsStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=units_stack.gateway_url, timeout=20) as client:
        yield client


def units_base(stack: UnitsStack, where: str) -> str:
    return stack.mounted_url if where == "mounted" else stack.units_url


async def refused_within(units: httpx.AsyncClient, token: str, limit: float) -> float:
    """Seconds until the unit list (a read: the feed's view, no call to the gateway) says `session_ended`."""
    started = time.monotonic()
    while True:
        answer = await units.get("/v1/units", headers=bearer(token))
        if answer.status_code == 401:
            assert answer.json()["code"] == "session_ended", answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            return time.monotonic() - started
        assert answer.status_code == 200, answer.text
        assert time.monotonic() - started < limit, f"still accepted after {limit} s"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("where", ["mounted", "standalone"])
@pytest.mark.parametrize("way", list(WAYS))
async def test_an_ended_session_is_refused_within_5_s(
    units_stack: UnitsStack, gateway: httpx.AsyncClient, where: str, way: str
) -> None:
    async with httpx.AsyncClient(base_url=units_base(units_stack, where), timeout=20) as units:
        staff = await new_person(units_stack, units, staff=True)
        person, bystander = await new_person(units_stack, units), await new_person(units_stack, units)
        tin = await new_unit(staff, ("tax_staff", person), ("tax_staff", bystander))
        session = await login(units_stack, person.identity)
        holder = Person(person.identity, session.access_token, units)
        verified = await holder.post(f"/v1/units/{tin}/verify", {"declaration_password": DECLARATION_PASSWORD})
        assert verified.status_code == 200, verified.text
        unit_token = verified.json()["unit_token"]

        await WAYS[way](Scene(units_stack, gateway, person, staff, session))
        # The gateway refuses at once (its own check) ...
        assert (await gateway.get("/v1/sessions", headers=holder.headers)).json()["code"] == "session_ended"
        # ... and the units service within 5 s, for reads and for every state-changing call.
        elapsed = await refused_within(units, session.access_token, LIMIT)
        assert elapsed < LIMIT
        for path, body in (
            (f"/v1/units/{tin}/verify", {"declaration_password": DECLARATION_PASSWORD}),
            (f"/v1/units/{tin}/enter", None),
            ("/v1/unit-token/renew", {"unit_token": unit_token}),
        ):
            refused = await holder.post(path, body)
            assert refused.status_code == 401, (path, refused.text)
            assert refused.json()["code"] == "session_ended"

        # Another person's live session is untouched.
        assert (await bystander.get("/v1/units")).status_code == 200
        still = await bystander.post(f"/v1/units/{tin}/verify", {"declaration_password": DECLARATION_PASSWORD})
        assert still.status_code == 200, still.text


@pytest.mark.parametrize("where", ["mounted", "standalone"])
async def test_a_state_changing_call_right_after_the_end_is_refused(
    units_stack: UnitsStack, gateway: httpx.AsyncClient, where: str
) -> None:
    """No waiting at all: the call asks the gateway before it acts."""
    async with httpx.AsyncClient(base_url=units_base(units_stack, where), timeout=20) as units:
        staff = await new_person(units_stack, units, staff=True)
        person = await new_person(units_stack, units)
        tin = await new_unit(staff, ("tax_staff", person))
        for _ in range(5):
            session = await login(units_stack, person.identity)
            holder = Person(person.identity, session.access_token, units)
            assert (await holder.get("/v1/units")).status_code == 200
            await by_logout(Scene(units_stack, gateway, person, staff, session))
            refused = await holder.post(f"/v1/units/{tin}/verify", {"declaration_password": DECLARATION_PASSWORD})
            assert refused.status_code == 401, refused.text
            assert refused.json()["code"] == "session_ended"


# Several gateway processes over Redis --------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_and_units(
    module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayCluster, ServiceProcess]]:
    """Two gateway processes on one Redis, and a separate units process following process 0's feed."""
    root = tmp_path_factory.mktemp("ends-cluster")
    cluster = GatewayCluster(root, module_redis.url, size=2)
    units_port = free_port()
    units = ServiceProcess(
        ["serve-units"],
        {
            "QRGATE_PUBLIC_URL": f"http://127.0.0.1:{units_port}",
            "QRGATE_DATABASE_URL": cluster.database_url,
            "QRGATE_DATABASE_AUTO_MIGRATE": "false",
            "QRGATE_KEYS_FILE": str(root / "unused-gateway-keys.json"),
            "QRGATE_UNITS_KEYS_FILE": str(root / "units-keys.json"),
            "QRGATE_UNITS_GATEWAY_ISSUER": PUBLIC_URL,
            "QRGATE_LOG_LEVEL": "warning",
        },
        units_port,
        root / "units.log",
    )
    try:
        cluster.start()
        units.args += ["--gateway-url", cluster.processes[0].base_url]
        units.start().wait_healthy()
        yield cluster, units
    finally:
        units.stop()
        cluster.stop()
    assert "Traceback" not in (root / "units.log").read_text()


async def test_an_end_at_any_gateway_process_reaches_the_units_service(
    cluster_and_units: tuple[GatewayCluster, ServiceProcess],
) -> None:
    """The units service follows process 0; sessions end at process 1 (logout, then refresh reuse)."""
    cluster, units_process = cluster_and_units
    people = [await asyncio.to_thread(cluster.add_person) for _ in range(3)]
    async with (
        httpx.AsyncClient(base_url=cluster.processes[1].base_url, timeout=20) as elsewhere,
        httpx.AsyncClient(base_url=units_process.base_url + "/units", timeout=20) as units,
    ):

        async def session_of(person: ClusterPerson) -> Login:
            body = {"identifier": person.identity["login_name"], "password": person.identity["password"]}
            answer = await elsewhere.post("/v1/login/password", json={**body, "client_id": "web"})
            assert answer.status_code == 200, answer.text
            return Login(answer.json()["access_token"], answer.json()["refresh_token"])

        logged_out, reused, live = [await session_of(person) for person in people]
        for session in (logged_out, reused, live):
            assert (await units.get("/v1/units", headers=bearer(session.access_token))).status_code == 200

        assert (await elsewhere.post("/v1/logout", headers=bearer(logged_out.access_token))).status_code == 204
        assert await refused_within(units, logged_out.access_token, LIMIT) < LIMIT

        form = {"grant_type": "refresh_token", "refresh_token": reused.refresh_token, "client_id": "web"}
        assert (await elsewhere.post("/v1/token", data=form)).status_code == 200
        assert (await elsewhere.post("/v1/token", data=form)).json()["code"] == "refresh_token_reused"
        assert await refused_within(units, reused.access_token, LIMIT) < LIMIT

        tin = new_tin()
        for session in (logged_out, reused):
            refused = await units.post(f"/v1/units/{tin}/enter", headers=bearer(session.access_token))
            assert refused.status_code == 401
            assert refused.json()["code"] == "session_ended"
        assert (await units.get("/v1/units", headers=bearer(live.access_token))).status_code == 200
        not_member = await units.post(f"/v1/units/{tin}/enter", headers=bearer(live.access_token))
        assert not_member.json()["code"] == "not_unit_member"  # past the session check: it lives
