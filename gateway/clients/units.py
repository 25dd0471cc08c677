"""`qrgate units link TIN`: the first unit link from the command line, as a reference client
(docs/units.md, docs/clients.md).

    qrgate login --json > tokens.json                 # the real-name login (QR code)
    qrgate units link 91110000600037341L --token-file tokens.json

The gateway access token comes from `--token-file` (the token response `qrgate login --json` prints,
or the bare token) or from the QRGATE_ACCESS_TOKEN environment variable; the declaration password
from a prompt, or the first line of standard input with `--password-stdin`. Neither ever goes on the
command line. `POST /units/v1/units/link`; when the unit asks for a captcha (after a wrong password)
the picture is saved as a PNG file for the person to read and its answer asked for. Exit codes: 0
linked (the answer, with the unit token, on stdout with `--json`), 1 refused, 2 unreachable.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import httpx

from gateway import __version__
from gateway.clients.desktop import problem
from gateway.clients.phone import Prompts

TOKEN_ENV = "QRGATE_ACCESS_TOKEN"  # noqa: S105 (a variable's name)
CAPTCHA_TRIES = 3
ROLE_WORDS = {
    "legal_rep": "法定代表人 / legal representative",
    "finance_manager": "财务经理 / finance manager",
    "tax_staff": "办税人员 / tax staff",
}


class LinkFailed(Exception):
    pass


def access_token(token_file: str | None) -> str:
    """The token from the file (a token response as JSON, or the bare token), else from the environment."""
    if token_file:
        try:
            text = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise LinkFailed(f"cannot read {token_file}: {exc.strerror}") from exc
        if text.startswith("{"):
            try:
                token = json.loads(text).get("access_token", "")
            except (json.JSONDecodeError, AttributeError) as exc:
                raise LinkFailed(f"{token_file} is not a token response") from exc
        else:
            token = text
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not isinstance(token, str) or token.count(".") != 2:
        raise LinkFailed(f"log in first: give --token-file (qrgate login --json > FILE) or set {TOKEN_ENV}")
    return token


def solve_captcha(http: httpx.Client, prompts: Prompts) -> dict[str, str]:
    issued = http.post("/units/v1/captcha")
    if issued.status_code != 201:
        raise LinkFailed(f"no captcha: {problem(issued)}")
    png = base64.b64decode(issued.json()["image"].split(",", 1)[1])
    with tempfile.NamedTemporaryFile(prefix="qrgate-captcha-", suffix=".png", delete=False) as file:
        file.write(png)
    prompts.say(f"需要验证码，图片在 / A captcha is needed, its picture is in: {file.name}")
    return {"captcha_id": issued.json()["captcha_id"], "captcha_answer": prompts.ask("验证码 / Captcha: ").strip()}


def refusal(answer: httpx.Response) -> str:
    body: dict[str, Any] = answer.json() if answer.headers.get("content-type", "").endswith("json") else {}
    if answer.status_code == 401 and body.get("code") == "invalid_credentials":
        left = body.get("attempts_left")
        return (
            f"纳税人识别号或申报密码错误，还可尝试{left}次 / "
            f"The TIN or declaration password is wrong; {left} {'attempt' if left == 1 else 'attempts'} left"
        )
    if answer.status_code == 423:
        minutes = -(-int(body.get("retry_after", 60)) // 60)
        return (
            f"申报密码已锁定，请{minutes}分钟后重试，或由法定代表人或财务经理重置 / "
            f"The declaration password is locked: try again in {minutes} minutes, or have the legal "
            "representative or finance manager reset it"
        )
    return problem(answer)


def link(base_url: str, tin: str, prompts: Prompts, *, token: str, password: str | None, as_json: bool = False) -> int:
    try:
        headers = {"User-Agent": f"qrgate-units/{__version__}", "Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base_url, timeout=15, headers=headers) as http:
            secret = password if password is not None else prompts.secret("申报密码 / Declaration password: ")
            body: dict[str, str] = {"tin": tin.strip(), "declaration_password": secret}
            for _ in range(CAPTCHA_TRIES):
                answer = http.post("/units/v1/units/link", json=body)
                code = answer.json().get("code") if answer.status_code == 400 else None
                if code not in ("captcha_required", "captcha_invalid"):
                    break
                body.update(solve_captcha(http, prompts))
            if answer.status_code != 200:
                raise LinkFailed(refusal(answer))
    except LinkFailed as exc:
        prompts.say(f"qrgate units link: {exc}")
        return 1
    except httpx.HTTPError as exc:
        prompts.say(f"qrgate units link: cannot reach {base_url}: {exc}")
        return 2
    result = answer.json()
    unit = result["unit"]
    if as_json:
        print(json.dumps(result), flush=True)
    prompts.say(f"已进入单位 / Entered the unit {unit['tin']} as {ROLE_WORDS.get(unit['role'], unit['role'])}")
    return 0
