"""`qrgate scan QR_CONTENT`: the phone side of QR login, as a reference client (docs/clients.md).

1. Refuse any code that is not `{gateway}/q/{qr_id}` of the gateway this app belongs to: a code from
   elsewhere is never sent anywhere.
2. Log in as `mobile-app` (`POST /v1/login/password`; after a wrong password the gateway asks for a
   captcha, which this client saves as a PNG file for the person to read).
3. `POST /v1/qr/{qr_id}/scan` with the access token: the answer says where the login comes from
   (device, address, program, time, and whether it is on the phone's network).
4. Show that, then `POST .../confirm` or `POST .../cancel`. Declining is the default answer.
"""

from __future__ import annotations

import base64
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from gateway import __version__
from gateway.clients.desktop import problem

CLIENT_ID = "mobile-app"
QR_PATH = re.compile(r"/q/([A-Za-z0-9_-]{22})")
PROXIMITY = {
    "same_network": "与手机在同一网络 / on the phone's network",
    "different_network": "与手机不在同一网络 / NOT on the phone's network",
    "unknown": "未知 / unknown",
}


class ScanFailed(Exception):
    pass


@dataclass
class Prompts:
    """How the client asks the person (the CLI: input() and getpass; tests may pass their own)."""

    ask: Callable[[str], str]
    secret: Callable[[str], str]
    say: Callable[[str], None]


def qr_id_of(content: str, base_url: str) -> str:
    """The qr_id of a login code of the gateway at `base_url`; anything else is refused."""
    code, ours = urlsplit(content.strip()), urlsplit(base_url)
    match = QR_PATH.fullmatch(code.path)
    if (code.scheme, code.netloc) != (ours.scheme, ours.netloc) or code.query or code.fragment or match is None:
        raise ScanFailed(f"这不是 {base_url} 的登录二维码 / not a login code of {base_url}: refused")
    return match.group(1)


def phone_login(http: httpx.Client, identifier: str, password: str, prompts: Prompts) -> str:
    body: dict[str, Any] = {"identifier": identifier, "password": password, "client_id": CLIENT_ID}
    for _ in range(3):
        answer = http.post("/v1/login/password", json=body)
        if answer.status_code == 200:
            token: str = answer.json()["access_token"]
            return token
        code = answer.json().get("code") if answer.headers.get("content-type", "").endswith("json") else None
        if code not in ("captcha_required", "captcha_invalid"):
            raise ScanFailed(f"登录失败 / login failed: {problem(answer)}")
        body.update(solve_captcha(http, prompts))
    raise ScanFailed("登录失败 / login failed: captcha not solved")


def solve_captcha(http: httpx.Client, prompts: Prompts) -> dict[str, str]:
    issued = http.post("/v1/captcha")
    if issued.status_code != 201:
        raise ScanFailed(f"no captcha: {problem(issued)}")
    png = base64.b64decode(issued.json()["image"].split(",", 1)[1])
    with tempfile.NamedTemporaryFile(prefix="qrgate-captcha-", suffix=".png", delete=False) as file:
        file.write(png)
    prompts.say(f"需要验证码，图片在 / A captcha is needed, its picture is in: {file.name}")
    return {"captcha_id": issued.json()["captcha_id"], "captcha_answer": prompts.ask("验证码 / Captcha: ").strip()}


def describe(context: dict[str, Any]) -> list[str]:
    requested = datetime.fromisoformat(context["requested_at"]).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    lines = [
        "登录扣缴客户端的请求 / A login request of the withholding client:",
        f"  设备 device      {context['device_name'] or '(unnamed)'}",
        f"  客户端 client    {context['client_id']}",
        f"  IP               {context['requester']['ip']}",
        f"  程序 program     {context['requester']['user_agent']}",
        f"  时间 time        {requested}",
        f"  网络 network     {PROXIMITY.get(context['proximity'], context['proximity'])}",
        f"  有效 valid for   {context['expires_in']} s",
    ]
    if context["proximity"] == "different_network":
        lines += [
            "",
            "!! 请注意：请求来自另一个网络。如果不是您本人正在这台电脑前操作，请拒绝。",
            "!! Careful: the request comes from another network. Unless you are at that computer yourself, decline.",
        ]
    return lines


def scan(base_url: str, content: str, prompts: Prompts, *, identifier: str | None, password: str | None) -> int:
    try:
        qr_id = qr_id_of(content, base_url)
        with httpx.Client(base_url=base_url, timeout=15, headers={"User-Agent": f"qrgate-scan/{__version__}"}) as http:
            account = identifier or prompts.ask("账号 / Account (phone, login name or ID number): ").strip()
            secret = password if password is not None else prompts.secret("密码 / Password: ")
            token = phone_login(http, account, secret, prompts)
            bearer = {"Authorization": f"Bearer {token}"}
            scanned = http.post(f"/v1/qr/{qr_id}/scan", headers=bearer)
            if scanned.status_code != 200:
                raise ScanFailed(f"无法扫描 / cannot scan: {problem(scanned)}")
            for line in describe(scanned.json()):
                prompts.say(line)
            choice = prompts.ask("确认登录？/ Log in on that computer? [y/N] ").strip().lower()
            confirm = choice in ("y", "yes", "是", "确认")
            answer = http.post(f"/v1/qr/{qr_id}/{'confirm' if confirm else 'cancel'}", headers=bearer)
            if answer.status_code != 204:
                raise ScanFailed(f"{'confirm' if confirm else 'cancel'} refused: {problem(answer)}")
    except ScanFailed as exc:
        prompts.say(f"qrgate scan: {exc}")
        return 1
    except httpx.HTTPError as exc:
        prompts.say(f"qrgate scan: cannot reach {base_url}: {exc}")
        return 2
    prompts.say("已确认，电脑端已登录 / Confirmed: the computer is logged in" if confirm else "已拒绝 / Declined")
    return 0 if confirm else 3
