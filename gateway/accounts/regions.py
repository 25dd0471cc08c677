"""The household-region picker's data: GB/T 2260 divisions in use today, one level at a time.

    GET /v1/regions                  -> the provinces
    GET /v1/regions?parent=440000    -> a province's prefectures (and the county-level units it
                                        administers directly, such as 仙桃市 429004)
    GET /v1/regions?parent=440100    -> a prefecture's counties and districts

Each entry says whether it may be chosen as a household region (`county_level`): counties,
districts and county-level cities, and prefecture-level cities that have no counties (东莞市).
The table is python-stdnum's (gateway.rules.divisions), the one `check_household_region` checks.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors, rules
from gateway.jsonutil import dumps

CACHE = {"Cache-Control": "public, max-age=86400"}
_PARENT = re.compile(r"[0-9]{2}0000|[0-9]{4}00")


def children(parent: str | None) -> list[rules.Division]:
    table = rules.divisions()
    if parent is None:  # the provinces with county-level divisions (Taiwan, Hong Kong and Macau have none here)
        mainland = {d.code[:2] for d in table.values() if d.county_level}
        return [d for d in table.values() if d.code.endswith("0000") and d.code[:2] in mainland]
    if parent.endswith("0000"):
        return [d for d in table.values() if d.code[:2] == parent[:2] and d.code != parent and d.code.endswith("00")]
    return [d for d in table.values() if d.code[:4] == parent[:4] and not d.code.endswith("00")]


def routes() -> list[BaseRoute]:
    async def regions(request: Request) -> Response:
        parent = request.query_params.get("parent")
        if parent is not None and (not _PARENT.fullmatch(parent) or parent not in rules.divisions()):
            raise errors.BadRequest(
                "parent must be the 6-digit code of a province (PP0000) or prefecture (PPCC00) in use today.",
                code="invalid_request",
            )
        found = children(parent)
        body = {
            "parent": parent,
            "regions": [{"code": d.code, "name": d.name, "county_level": d.county_level} for d in found],
        }
        return Response(dumps(body), media_type="application/json", headers=CACHE)

    return [Route("/v1/regions", regions, methods=["GET"])]
