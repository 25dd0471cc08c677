"""The Redis Cluster's slot map: which master serves each of the 16384 key slots.

It is read with CLUSTER SLOTS, the way redis-py's cluster client reads it: ask the nodes this process
knows (the URL's at first, then every node the Cluster announced), in random order so that processes
do not all ask the same one, and take the first answer that covers every slot. It is kept here rather
than taken from a redis-py client, whose map is reachable only through its internals; the wire asks for
a new read after a MOVED reply or a lost node.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.state.redis_clients import SLOTS
from gateway.state.redis_clients import exceptions as rx

MAX_DISAGREEMENTS = 5


@dataclass(frozen=True, slots=True)
class Node:
    host: str
    port: int
    name: str = field(init=False, compare=False)  # "host:port", as MOVED and ASK name it

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", f"{self.host}:{self.port}")  # once: routing reads it per command


class SlotMap:
    def __init__(self, startup: Sequence[tuple[str, int]]) -> None:
        self.known: list[Node] = [Node(host, port) for host, port in startup]  # whom to ask
        self.masters: list[Node] = []  # in the order the Cluster listed them
        self.owners: list[Node | None] = []  # indexed by slot; empty until read

    def owner(self, slot: int) -> Node:
        owner = self.owners[slot] if self.owners else None
        if owner is None:
            raise rx.SlotNotCoveredError(f'Slot "{slot}" is not covered by the cluster.')
        return owner

    async def read(self, ask: Callable[[Node], Awaitable[Any]]) -> None:
        """Read the map again; `ask(node)` returns the node's CLUSTER SLOTS reply (or raises).

        RedisClusterException when no node answers or the answers leave slots uncovered; the map
        is then left as it was."""
        candidates = list(self.known)
        random.shuffle(candidates)
        owners: list[Node | None] = [None] * SLOTS
        nodes: dict[Node, bool] = {}  # every node announced -> whether it is a master
        disagreements: list[str] = []
        reachable = covered = False
        error: BaseException | None = None
        for asked in candidates:
            try:
                reply = await ask(asked)
            except Exception as exc:  # try the next node; report the last failure if none answers
                error = exc
                continue
            reachable = True
            for entry in reply:
                # A master that does not know its own address (a single-node Cluster) is the one asked.
                master = Node(str(entry[2][0]) or asked.host, int(entry[2][1]))
                nodes[master] = True
                for replica in entry[3:]:
                    nodes.setdefault(Node(str(replica[0]), int(replica[1])), False)
                for slot in range(int(entry[0]), int(entry[1]) + 1):
                    found = owners[slot]
                    if found is None:
                        owners[slot] = master
                    elif found != master:
                        disagreements.append(f"{found.name} vs {master.name} on slot: {slot}")
                        if len(disagreements) > MAX_DISAGREEMENTS:
                            raise rx.RedisClusterException(
                                f"the nodes could not agree on a slot map: {', '.join(disagreements)}"
                            )
            if None not in owners:
                covered = True
                break
        if not reachable:
            raise rx.RedisClusterException(
                f"Redis Cluster cannot be connected. Please provide at least one reachable node: {error}"
            ) from error
        if not covered:
            held = SLOTS - owners.count(None)
            raise rx.RedisClusterException(f"All slots are not covered by the Cluster: {held} of {SLOTS} covered")
        self.owners = owners
        self.masters = [node for node, is_master in nodes.items() if is_master]
        self.known = list(nodes)
