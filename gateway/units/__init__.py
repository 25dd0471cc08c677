"""The unit-verification service (单位办税验证): after the real-name login, a person proves the right
to act for a unit and receives a short-lived unit token.

It is a Starlette app of its own (`gateway.units.app`), mounted at `/units` by `qrgate serve` or run
alone by `qrgate serve-units`. It trusts the gateway only through the gateway's JWKS, fetched over
HTTP, and signs unit tokens with keys of its own. See docs/units.md for the whole journey.
"""
