"""DPoP (RFC 9449): proof verification lives in the qrgate-verify package (verify/), shared with
downstream services; here is what only the gateway needs, a replay cache every gateway process
shares through the state store."""

from __future__ import annotations

from gateway.state import keys
from gateway.state.base import StateStore
from qrgate_verify.dpop import (
    MAX_PROOF_BYTES,
    PROOF_ALGORITHMS,
    DpopVerifier,
    InvalidProof,
    MemoryReplayCache,
    ReplayCache,
    access_token_hash,
    normalise_htu,
    single_proof,
    thumbprint,
)

__all__ = [
    "MAX_PROOF_BYTES",
    "PROOF_ALGORITHMS",
    "DpopVerifier",
    "InvalidProof",
    "MemoryReplayCache",
    "ReplayCache",
    "StoreReplayCache",
    "access_token_hash",
    "normalise_htu",
    "single_proof",
    "thumbprint",
]


class StoreReplayCache:
    """Replay cache in the gateway's state store: shared by every gateway process."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    async def first_use(self, key: str, ttl: int) -> bool:
        return await self._store.hit(keys.key(keys.Space.DPOP_PROOF, key), ttl) == 1
