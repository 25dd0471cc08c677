"""The accounts capability's parts, built once per process and reached as `gateway.accounts`."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.accounts.face import FaceVerifier
from gateway.accounts.rare_chars import RareChars
from gateway.accounts.records import AccountRecords
from gateway.accounts.sms import SmsChallenges, create_sender
from gateway.directory.audit import AuditLog
from gateway.guard.captcha import Captchas
from gateway.guard.throttle import Throttle
from gateway.settings import Settings
from gateway.state.base import StateStore

HALL_STAFF = "hall_staff"


@dataclass
class AccountParts:
    captchas: Captchas
    sms: SmsChallenges
    face: FaceVerifier
    records: AccountRecords
    audit: AuditLog
    rare_chars: RareChars
    login_ip: Throttle
    identity_ip: Throttle
    face_per_identity: Throttle

    @classmethod
    def create(cls, settings: Settings, store: StateStore, engine: AsyncEngine) -> AccountParts:
        return cls(
            captchas=Captchas(settings, store),
            sms=SmsChallenges(settings, store, create_sender(settings)),
            face=FaceVerifier(settings),
            records=AccountRecords(engine),
            audit=AuditLog(engine),
            rare_chars=RareChars(),
            login_ip=Throttle(
                store, "login-ip", settings.login_ip_max_attempts, settings.login_ip_window, what="login attempts"
            ),
            identity_ip=Throttle(
                store,
                "identity-ip",
                settings.identity_ip_max_attempts,
                settings.identity_ip_window,
                what="identity checks from this address",
            ),
            face_per_identity=Throttle(
                store,
                "face-identity",
                settings.face_max_attempts,
                86400,
                what="face verifications for this identity today",
                code="face_attempts_exceeded",
            ),
        )

    async def close(self) -> None:
        self.captchas.close()
        await self.sms.sender.close()
        await self.face.close()
