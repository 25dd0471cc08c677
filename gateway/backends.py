"""What a process talks to, made from the settings: the state store and the password hasher. Both the
gateway and the units service build theirs here."""

from __future__ import annotations

from gateway.guard.hashing import PasswordHashing
from gateway.settings import Settings
from gateway.state.base import StateStore
from gateway.state.memory import MemoryStore


def create_store(settings: Settings) -> StateStore:
    if not settings.redis_url:
        return MemoryStore()
    from gateway.state.redis import RedisStore  # only a process configured for Redis loads its client

    return RedisStore.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_connect_timeout,
        retries=settings.redis_retries,
    )


def password_hashing(settings: Settings) -> PasswordHashing:
    return PasswordHashing(
        memory_kib=settings.argon2_memory_kib,
        time_cost=settings.argon2_time_cost,
        parallelism=settings.argon2_parallelism,
        workers=settings.hash_workers,
    )
