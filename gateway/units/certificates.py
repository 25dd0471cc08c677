"""CA verification of a unit: a certificate chain and a signature over a server challenge.

The checks, in order, each with its own problem code:
1. the certificates parse (PEM, leaf first, at most MAX_CHAIN): 400 `invalid_certificate`;
2. the leaf is within its validity dates: 403 `certificate_expired`;
3. a chain leads from the leaf to a CA of the trust bundle (`QRGATE_UNITS_CA_TRUST_BUNDLE`), every
   certificate valid now, each CA a CA (basicConstraints, keyCertSign): 403 `certificate_untrusted`
   (cryptography's RFC 5280 path validation; the leaf needs no subjectAltName, and if it has a
   keyUsage it must allow digitalSignature);
4. the leaf names the unit: its subject's `organizationIdentifier` (2.5.4.97, optionally with the
   ETSI EN 319 412-1 prefix `NTRCN-`) or `serialNumber` (2.5.4.5) is the unit's unified social credit
   code. The common name is a display name and is never consulted: 403 `certificate_wrong_unit`;
5. the signature over the challenge's UTF-8 bytes verifies with the leaf's key: 403
   `certificate_signature_invalid`. ECDSA (P-256/SHA-256, P-384/SHA-384, DER-encoded signature), RSA
   (PKCS #1 v1.5 with SHA-256) and Ed25519 are accepted; SM2 is not (cryptography has no SM2).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

from gateway import errors

MAX_CHAIN = 4
MAX_CERTIFICATE_CHARS = 8192
MAX_SIGNATURE_BYTES = 1024
ETSI_PREFIX = "NTRCN-"


class InvalidCertificate(errors.BadRequest):
    code = "invalid_certificate"


class CertificateRefused(errors.Forbidden):
    code = "certificate_untrusted"


class CertificateExpired(CertificateRefused):
    code = "certificate_expired"


class CertificateWrongUnit(CertificateRefused):
    code = "certificate_wrong_unit"


class SignatureInvalid(CertificateRefused):
    code = "certificate_signature_invalid"


def _allows_signing(policy: object, certificate: object, usage: x509.KeyUsage | None) -> None:
    if usage is not None and not (usage.digital_signature or usage.content_commitment):
        raise ValueError("the certificate's key usage does not allow signatures")


def parse_chain(certificates: list[str]) -> list[x509.Certificate]:
    if not 1 <= len(certificates) <= MAX_CHAIN:
        raise InvalidCertificate(f"Send 1 to {MAX_CHAIN} certificates (PEM), the unit's own first.")
    parsed = []
    for number, pem in enumerate(certificates, 1):
        if len(pem) > MAX_CERTIFICATE_CHARS or "-----BEGIN CERTIFICATE-----" not in pem:
            raise InvalidCertificate(f"Certificate {number} is not a PEM certificate.")
        try:
            parsed.append(x509.load_pem_x509_certificate(pem.encode("ascii")))
        except (ValueError, UnicodeEncodeError) as exc:
            raise InvalidCertificate(f"Certificate {number} cannot be read.") from exc
    return parsed


def named_tins(certificate: x509.Certificate) -> set[str]:
    """The unified social credit codes the certificate's subject names (see the module docstring)."""
    found = set()
    for oid in (NameOID.ORGANIZATION_IDENTIFIER, NameOID.SERIAL_NUMBER):
        for attribute in certificate.subject.get_attributes_for_oid(oid):
            value = attribute.value if isinstance(attribute.value, str) else attribute.value.decode("latin-1")
            found.add(value.strip().upper().removeprefix(ETSI_PREFIX))
    return found


def check_signature(certificate: x509.Certificate, signature: bytes, data: bytes) -> None:
    key = certificate.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            digest: hashes.HashAlgorithm = hashes.SHA384() if key.curve.key_size > 256 else hashes.SHA256()
            key.verify(signature, data, ec.ECDSA(digest))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            raise SignatureInvalid("The certificate's key type is not supported (use ECDSA, RSA or Ed25519).")
    except InvalidSignature as exc:
        raise SignatureInvalid("The signature over the challenge does not verify with the certificate.") from exc


class CaTrust:
    """The CA certificates trusted for unit certificates (a PEM bundle, read once at start-up)."""

    def __init__(self, bundle: list[x509.Certificate]) -> None:
        if not bundle:
            raise ValueError("the CA trust bundle holds no certificate")
        self._store = verification.Store(bundle)
        self._leaf_policy = verification.ExtensionPolicy.permit_all().may_be_present(
            x509.KeyUsage, verification.Criticality.AGNOSTIC, _allows_signing
        )

    @classmethod
    def from_file(cls, path: str | Path) -> CaTrust:
        return cls(x509.load_pem_x509_certificates(Path(path).read_bytes()))

    def verify(
        self, *, tin: str, challenge: str, certificates: list[str], signature: bytes, now: datetime | None = None
    ) -> x509.Certificate:
        """The leaf certificate, once every check of the module docstring has passed."""
        moment = now or datetime.now(UTC)
        chain = parse_chain(certificates)
        leaf = chain[0]
        if not leaf.not_valid_before_utc <= moment <= leaf.not_valid_after_utc:
            raise CertificateExpired("The unit's certificate is expired or not yet valid; renew it at the CA.")
        verifier = (
            verification.PolicyBuilder()
            .store(self._store)
            .time(moment)
            .max_chain_depth(MAX_CHAIN)
            .extension_policies(
                ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=self._leaf_policy
            )
            .build_client_verifier()
        )
        try:
            verifier.verify(leaf, chain[1:])
        except verification.VerificationError as exc:
            raise CertificateRefused("The certificate is not issued by a CA this service trusts.") from exc
        if tin not in named_tins(leaf):
            raise CertificateWrongUnit(f"The certificate does not name the unit {tin}.")
        if not 0 < len(signature) <= MAX_SIGNATURE_BYTES:
            raise SignatureInvalid("The signature is empty or too long.")
        check_signature(leaf, signature, challenge.encode())
        return leaf
