"""Every kind of key the features keep in the state store, in one table: no two features can collide,
and an operator who finds a key in Redis can tell what it belongs to. (The QR records and refresh
sessions have keys of their own inside each store.)"""

from __future__ import annotations

from enum import StrEnum


class Space(StrEnum):
    CAPTCHA = "captcha"  # guard/captcha.py: a captcha's salted answer, single use
    THROTTLE = "throttle"  # guard/throttle.py: fixed-window counters, scoped by Throttles below
    ATTEMPTS = "attempts"  # guard/guard.py: attempts at a secret, scoped by Guarded below
    SMS = "sms"  # accounts/sms.py: a challenge's salted code
    REGISTRATION = "registration"  # accounts/registration.py: an identity verified, not yet completed
    RESET_TICKET = "reset-ticket"  # accounts/recovery.py: a forgotten-password ticket (by its hash)
    PERSON_SESSIONS = "person-sessions"  # tokens/sessions.py: the session ids of a person
    SESSION_CHILDREN = "session-children"  # tokens/sessions.py: the sessions made from a session
    DPOP_PROOF = "dpop"  # tokens/dpop.py: proofs seen (replay)
    CLIENT_ASSERTION = "client-assertion"  # tokens/client_auth.py: private_key_jwt assertions seen
    UNIT_CA_CHALLENGE = "unit-ca"  # units/ca.py: a CA challenge, single use
    OIDC_REQUEST = "oidc-request"  # oidc/provider.py: an authorization waiting for its sign-in
    OIDC_PAR = "oidc-par"  # oidc/provider.py: a pushed authorization request (RFC 9126)
    OIDC_CODE = "oidc-code"  # oidc/provider.py: an authorization code (by its hash), single use
    OIDC_CODE_SPENT = "oidc-code-spent"  # oidc/provider.py: what a used code issued (reuse revokes it)
    OIDC_CLIENT_SESSIONS = "oidc-client-sessions"  # oidc/client_sessions.py: a relying party's sessions, by day
    SSO_SESSION = "sso-session"  # oidc/provider.py: a browser's sign-in (by its cookie's hash)
    OIDC_LOGOUT = "oidc-logout"  # oidc/logout.py: a logout waiting for the person's confirmation
    BACKCHANNEL_QUEUE = "backchannel-queue"  # oidc/backchannel.py: logout tokens to deliver (a queue)
    QR_EXPIRED = "qr-expired"  # qr/service.py: a code's expiry counted (once, by the first waiter to see it)
    QR_LIVE = "qr-live"  # qr/service.py: the live QR codes, all and by address (state/*.py reserve_live)


class Guarded(StrEnum):
    """The secrets `guard.SecretGuard` counts attempts at, each with counters of its own."""

    LOGIN = "login"  # a person's password
    DECLARATION_PASSWORD = "unit"  # noqa: S105 (a key scope: a unit's declaration password)
    SMS_CODE = "sms-code"  # one SMS challenge's code
    REGISTRATION_CODE = "registration-code"  # the hall code of one identity


class Throttles(StrEnum):
    LOGIN_IP = "login-ip"
    UNIT_IP = "unit-ip"
    IDENTITY_IP = "identity-ip"
    CAPTCHA_IP = "captcha-ip"
    SMS_IP = "sms-ip"
    SMS_RESEND = "sms-resend"
    SMS_DAY = "sms-day"
    FACE_IDENTITY = "face-identity"


def key(space: Space, *parts: str) -> str:
    return ":".join((space.value, *parts))
