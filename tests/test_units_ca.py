"""CA verification of a unit: the certificate checks on their own (a test CA, an intermediate, a good
unit certificate, a wrong TIN, an expired one, an untrusted issuer, a bad signature), then the
challenge-and-signature flow through the separate units process."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest

from gateway.units import certificates
from gateway.units.certificates import CaTrust
from tests.support.units import (
    Person,
    UnitCertificate,
    UnitPki,
    UnitsStack,
    claims_of,
    issue_unit_certificate,
    new_person,
    new_tin,
    new_unit,
)

PKI = UnitPki()
TIN = new_tin()
CHALLENGE = "qrgate-unit-ca-v1.test.challenge"


def check(unit: UnitCertificate, *, tin: str = TIN, signature: str | None = None) -> None:
    trust = CaTrust([PKI.root.certificate])
    raw = unit.sign(CHALLENGE) if signature is None else signature

    decoded = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    trust.verify(tin=tin, challenge=CHALLENGE, certificates=unit.chain, signature=decoded)


# --- the checks, offline ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["SERIAL_NUMBER", "ORGANIZATION_IDENTIFIER"])
def test_a_good_certificate_from_the_trusted_ca(where: str) -> None:
    check(issue_unit_certificate(PKI.root, TIN, where=where))


def test_a_chain_through_an_intermediate_ca_and_an_rsa_key() -> None:
    check(issue_unit_certificate(PKI.intermediate, TIN, chain=(PKI.intermediate,)))
    check(issue_unit_certificate(PKI.intermediate, TIN, chain=(PKI.intermediate,), rsa_key=True))
    # Without the intermediate the chain cannot be built.
    with pytest.raises(certificates.CertificateRefused) as refused:
        check(issue_unit_certificate(PKI.intermediate, TIN))
    assert refused.value.code == "certificate_untrusted"


def test_the_etsi_prefix_is_understood() -> None:
    check(issue_unit_certificate(PKI.root, f"NTRCN-{TIN}", where="ORGANIZATION_IDENTIFIER"))


@pytest.mark.parametrize(
    ("unit", "code"),
    [
        (issue_unit_certificate(PKI.root, new_tin()), "certificate_wrong_unit"),
        (issue_unit_certificate(PKI.root, TIN, where="COMMON_NAME"), "certificate_wrong_unit"),  # CN is not read
        (issue_unit_certificate(PKI.root, TIN, valid_from=timedelta(days=-400)), "certificate_expired"),
        (issue_unit_certificate(PKI.root, TIN, valid_from=timedelta(days=2)), "certificate_expired"),  # not yet
        (issue_unit_certificate(PKI.rogue, TIN), "certificate_untrusted"),
        # A rogue certificate that names the root CA as its issuer: the signature does not match.
        (issue_unit_certificate(PKI.rogue, TIN, chain=(PKI.root,)), "certificate_untrusted"),
    ],
)
def test_refusals(unit: UnitCertificate, code: str) -> None:
    with pytest.raises(certificates.CertificateRefused) as refused:
        check(unit)
    assert refused.value.code == code
    assert refused.value.status == 403


def test_a_signature_by_another_key_or_over_other_bytes() -> None:
    good = issue_unit_certificate(PKI.root, TIN)
    other = issue_unit_certificate(PKI.root, TIN)
    for signature in (other.sign(CHALLENGE), good.sign(CHALLENGE + "x")):
        with pytest.raises(certificates.SignatureInvalid):
            check(good, signature=signature)


@pytest.mark.parametrize(
    "chain",
    [[], ["not a certificate"], ["-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"], ["x"] * 5],
)
def test_unreadable_certificates(chain: list[str]) -> None:
    with pytest.raises(certificates.InvalidCertificate):
        CaTrust([PKI.root.certificate]).verify(tin=TIN, challenge=CHALLENGE, certificates=chain, signature=b"s")


# --- over HTTP ------------------------------------------------------------------------------------


@pytest.fixture
async def http(units_stack: UnitsStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=units_stack.units_url, timeout=20) as client:
        yield client


async def prove(person: Person, tin: str, unit: UnitCertificate, **changes: object) -> httpx.Response:
    challenge = await person.post(f"/v1/units/{tin}/ca/challenge")
    assert challenge.status_code == 201, challenge.text
    body = challenge.json()
    assert body["challenge"].startswith(f"qrgate-unit-ca-v1.{tin}.")
    proof = {
        "challenge_id": body["challenge_id"],
        "certificates": unit.chain,
        "signature": unit.sign(body["challenge"]),
        **changes,
    }
    return await person.post(f"/v1/units/{tin}/ca/verify", proof)


@pytest.mark.anyio
async def test_ca_verification_over_http(units_stack: UnitsStack, http: httpx.AsyncClient) -> None:
    staff = await new_person(units_stack, http, staff=True)
    clerk = await new_person(units_stack, http)
    tin = await new_unit(staff, ("tax_staff", clerk))
    pki = units_stack.pki
    good = issue_unit_certificate(pki.intermediate, tin, chain=(pki.intermediate,))
    answer = await prove(clerk, tin, good)
    assert answer.status_code == 200, answer.text
    assert answer.json()["unit"] == {"tin": tin, "role": "tax_staff", "via": "ca"}
    assert claims_of(answer.json()["unit_token"])["unit"]["via"] == "ca"
    for unit, code in [
        (issue_unit_certificate(pki.root, new_tin()), "certificate_wrong_unit"),
        (issue_unit_certificate(pki.root, tin, valid_from=timedelta(days=-400)), "certificate_expired"),
        (issue_unit_certificate(pki.rogue, tin), "certificate_untrusted"),
    ]:
        refused = await prove(clerk, tin, unit)
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == code
    forged = await prove(clerk, tin, good, signature=issue_unit_certificate(pki.root, tin).sign("something else"))
    assert forged.json()["code"] == "certificate_signature_invalid"
    garbage = await prove(clerk, tin, good, signature="not base64!")
    assert garbage.status_code == 400


@pytest.mark.anyio
async def test_a_challenge_is_single_use_and_bound(units_stack: UnitsStack, http: httpx.AsyncClient) -> None:
    staff = await new_person(units_stack, http, staff=True)
    clerk, colleague = await new_person(units_stack, http), await new_person(units_stack, http)
    tin = await new_unit(staff, ("tax_staff", clerk), ("tax_staff", colleague))
    other_tin = await new_unit(staff, ("tax_staff", clerk))
    good = issue_unit_certificate(units_stack.pki.root, tin)
    challenge = (await clerk.post(f"/v1/units/{tin}/ca/challenge")).json()
    proof = {
        "challenge_id": challenge["challenge_id"],
        "certificates": good.chain,
        "signature": good.sign(challenge["challenge"]),
    }
    # Someone else, or the same person for another unit, cannot use it...
    assert (await colleague.post(f"/v1/units/{tin}/ca/verify", proof)).json()["code"] == "challenge_invalid"
    challenge = (await clerk.post(f"/v1/units/{tin}/ca/challenge")).json()
    proof = {
        "challenge_id": challenge["challenge_id"],
        "certificates": good.chain,
        "signature": good.sign(challenge["challenge"]),
    }
    assert (await clerk.post(f"/v1/units/{other_tin}/ca/verify", proof)).json()["code"] == "challenge_invalid"
    # ...and a challenge is taken by its first use, right or wrong.
    challenge = (await clerk.post(f"/v1/units/{tin}/ca/challenge")).json()
    proof = {
        "challenge_id": challenge["challenge_id"],
        "certificates": good.chain,
        "signature": good.sign(challenge["challenge"]),
    }
    assert (await clerk.post(f"/v1/units/{tin}/ca/verify", proof)).status_code == 200
    replay = await clerk.post(f"/v1/units/{tin}/ca/verify", proof)
    assert replay.status_code == 400
    assert replay.json()["code"] == "challenge_invalid"
    outsider = await new_person(units_stack, http)
    assert (await outsider.post(f"/v1/units/{tin}/ca/challenge")).json()["code"] == "not_unit_member"
