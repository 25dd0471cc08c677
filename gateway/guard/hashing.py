"""argon2id password hashing, always off the event loop (argon2 releases the GIL while it works)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class PasswordHashing:
    def __init__(self, *, memory_kib: int, time_cost: int, parallelism: int, workers: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        # Verified when the identifier is unknown, so both answers take the same time.
        self._decoy = self._hasher.hash("decoy password that matches nothing")

    def hash_sync(self, password: str) -> str:
        return str(self._hasher.hash(password))

    def _threads(self) -> ThreadPoolExecutor:
        """Made on first use (again after `close`, should the app be started a second time)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="argon2")
        return self._pool

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._threads(), self.hash_sync, password)

    def _verify(self, stored_hash: str | None, password: str) -> bool:
        try:
            return bool(self._hasher.verify(stored_hash or self._decoy, password)) and stored_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Constant work whether or not the person exists (stored_hash None verifies a decoy)."""
        return await asyncio.get_running_loop().run_in_executor(self._threads(), self._verify, stored_hash, password)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
