"""Credentials and agents in the in-memory store (as ``sqlite_credentials`` and
``sqlite_agents``): enrollment by :func:`tether.protocol.enrollment.decide`, secrets kept as
their digests."""

from __future__ import annotations

from ...protocol.codec import pack
from ...protocol.console import KeyView, TokenView
from ...protocol.enrollment import Proof, decide
from ...protocol.errors import ErrorCode, ProtocolError
from ...protocol.lifecycle import (
    DeliveryEvent,
)
from .. import credentials
from ..effects import Effects
from . import (
    AgentAuth,
    Enrollment,
)
from .memory_tables import AgentRecord, KeyRecord, MemoryTables, TokenRecord, next_id


class MemoryAgents(MemoryTables):
    async def bootstrap(self, now: float, *, key_uses: int | None = None,
                        key_expires_at: float | None = None) -> Effects[tuple[str, str] | None]:
        def op() -> Effects[tuple[str, str] | None]:
            if self._tokens:
                return Effects(None)
            token, key = credentials.new_admin_token(), credentials.new_enroll_key()
            self._tokens[1] = TokenRecord(1, credentials.digest(token), "admin", "initial", now)
            key_id = next_id(self._keys)
            self._keys[key_id] = KeyRecord(key_id, credentials.digest(key), [], now, key_expires_at, key_uses)
            return Effects((token, key))

        return self._write(op)

    async def admin_login(self, token: str) -> tuple[int, str] | None:
        digest = credentials.digest(token)
        for t in self._tokens.values():
            if t.token_hash == digest and t.revoked_at is None:
                return t.id, t.role
        return None

    async def create_token(self, role: str, label: str, now: float) -> Effects[TokenView]:
        token = credentials.new_admin_token()

        def op() -> Effects[TokenView]:
            token_id = next_id(self._tokens)
            self._tokens[token_id] = TokenRecord(token_id, credentials.digest(token), role, label, now)
            return Effects(TokenView(token_id=token_id, role=role, label=label, created_at=now, revoked_at=None,
                                     token=token))

        return self._write(op)

    async def list_tokens(self) -> list[TokenView]:
        return [TokenView(token_id=t.id, role=t.role, label=t.label, created_at=t.created_at, revoked_at=t.revoked_at)
                for t in sorted(self._tokens.values(), key=lambda t: t.id)]

    async def revoke_token(self, token_id: int, now: float) -> Effects[bool]:
        def op() -> Effects[bool]:
            token = self._tokens.get(token_id)
            if token is None:
                raise ProtocolError(ErrorCode.UNKNOWN_TOKEN, f"no admin token with id {token_id}")
            if token.revoked_at is not None:
                return Effects(False)
            if token.role == "admin" and not any(
                    t.role == "admin" and t.revoked_at is None and t.id != token_id for t in self._tokens.values()):
                raise ProtocolError(ErrorCode.LAST_ADMIN_TOKEN,
                                    f"token {token_id} is the last admin token; create another admin token first")
            token.revoked_at = now
            return Effects(True)

        return self._write(op)

    async def create_key(self, tags: list[str], expires_at: float | None, uses: int | None, now: float,
                         *, allow_requested_tags: bool = False) -> Effects[KeyView]:
        key = credentials.new_enroll_key()
        tags = sorted(set(tags))

        def op() -> Effects[KeyView]:
            key_id = next_id(self._keys)
            self._keys[key_id] = KeyRecord(key_id, credentials.digest(key), tags, now, expires_at, uses,
                                      allow_requested_tags)
            return Effects(KeyView(key_id=key_id, tags=tags, created_at=now, expires_at=expires_at, uses_left=uses,
                                   revoked_at=None, key=key, allow_requested_tags=allow_requested_tags))

        return self._write(op)

    async def list_keys(self) -> list[KeyView]:
        return [KeyView(key_id=k.id, tags=list(k.tags), created_at=k.created_at, expires_at=k.expires_at,
                        uses_left=k.uses_left, revoked_at=k.revoked_at, allow_requested_tags=k.allow_requested_tags)
                for k in sorted(self._keys.values(), key=lambda k: k.id)]

    async def revoke_key(self, key_id: int, now: float) -> Effects[bool]:
        def op() -> Effects[bool]:
            key = self._keys.get(key_id)
            if key is None:
                raise ProtocolError(ErrorCode.UNKNOWN_KEY, f"no enrollment key with id {key_id}")
            if key.revoked_at is not None:
                return Effects(False)
            key.revoked_at = now
            return Effects(True)

        return self._write(op)

    def _login(self, agent_id: str) -> AgentRecord | None:
        """The agent an agent id logs in as (a merged agent's: the one it was merged into)."""
        agent = self._agents.get(agent_id)
        if agent is not None and agent.merged_into is not None:
            return self._agents[agent.merged_into]
        return agent

    async def enroll(
        self, key: str, machine_uuid: str, hostname: str, platform: str, tags: list[str], now: float,
        *, proof: tuple[str, str] | None = None, certificate: bytes | None = None,
    ) -> Effects[Enrollment]:
        key_hash = credentials.digest(credentials.normalise_enroll_key(key))
        token = credentials.new_agent_token()

        def op() -> Effects[Enrollment]:
            usable = next((k for k in self._keys.values() if k.key_hash == key_hash and k.revoked_at is None), None)
            if usable is None:
                raise ProtocolError(ErrorCode.ENROLL_KEY_UNKNOWN, "unknown or revoked enrollment key")
            if usable.expires_at is not None and usable.expires_at <= now:
                raise ProtocolError(ErrorCode.ENROLL_KEY_EXPIRED, "this enrollment key has expired; ask for a new one")
            if usable.uses_left is not None and usable.uses_left <= 0:
                raise ProtocolError(ErrorCode.ENROLL_KEY_EXHAUSTED, "this enrollment key has been used up")
            twin = None
            if proof is None and machine_uuid:
                same = [a for a in self._agents.values() if a.machine_uuid == machine_uuid and a.live]
                same.sort(key=lambda a: (a.clone_of is not None, a.enrolled_at))
                twin = same[0].id if same else None
            decision = decide(key_tags=usable.tags, allow_requested=usable.allow_requested_tags, asked=tags,
                              twin=twin, proof=None if proof is None else self._prove(*proof),
                              machine_uuid=machine_uuid)
            if usable.uses_left is not None:
                usable.uses_left -= 1
            if decision.agent_id is not None:
                assert proof is not None
                agent = self._agents[decision.agent_id]
                agent.hostname, agent.platform, agent.machine_uuid = hostname, platform, machine_uuid
                agent.cert_sha256 = certificate if certificate is not None else agent.cert_sha256
                return Effects(Enrollment(agent_id=agent.id, token=proof[1], tags=decision.tags, status="existing"))
            agent = AgentRecord(credentials.new_agent_id(), credentials.digest(token), machine_uuid, hostname, platform, now,
                           decision.clone_of, certificate, set(decision.tags))
            self._agents[agent.id] = agent
            if decision.replaces is not None:
                old = self._agents[decision.replaces]
                old.replaced_by, old.token_hash = agent.id, b""
            # An agent enrolling is not online yet: it gets these when its session opens.
            items = self._materialise(agent, decision.tags, now) + self._materialise_selected(agent, now)
            return Effects(Enrollment(agent_id=agent.id, token=token, tags=decision.tags,
                                      clone_of=decision.clone_of or "", replaces=decision.replaces or ""),
                           items=items)

        return self._write(op)

    def _prove(self, agent_id: str, token: str) -> Proof:
        agent = self._login(agent_id)
        if agent is None or not credentials.matches(token, agent.token_hash):
            return Proof(agent_id, ok=False)
        return Proof(agent.id, ok=True, tags=sorted(agent.tags), machine_uuid=agent.machine_uuid)

    async def authenticate_agent(self, agent_id: str, token: str) -> AgentAuth | None:
        agent = self._login(agent_id)
        if agent is None or not credentials.matches(token, agent.token_hash):
            return None
        return AgentAuth(agent_id=agent.id, certificate=agent.cert_sha256)

    async def bind_certificate(self, agent_id: str, certificate: bytes) -> Effects[bool]:
        def op() -> Effects[bool]:
            agent = self._agents.get(agent_id)
            if agent is None or agent.cert_sha256 is not None:
                return Effects(False)
            agent.cert_sha256 = certificate
            return Effects(True)

        return self._write(op)

    async def revoke_agent(self, agent_id: str) -> Effects[bool]:
        def op() -> Effects[bool]:
            agent = self._live(agent_id)
            revoked = bool(agent.token_hash)
            agent.token_hash = b""
            return Effects(revoked)

        return self._write(op)

    def _clone_of(self, agent_id: str, verb: str) -> str:
        agent = self._live(agent_id)
        if agent.clone_of is None:
            raise ProtocolError(ErrorCode.INVALID_PARAMS, (
                f"agent {agent_id} is not marked a possible clone; nothing to {verb} "
                "(tetherctl agents shows possible clones)"))
        return agent.clone_of

    async def approve_agent(self, agent_id: str) -> Effects[None]:
        def op() -> Effects[None]:
            self._clone_of(agent_id, "approve")
            self._agents[agent_id].clone_of = None
            return Effects(None)

        return self._write(op)

    async def remove_agent(self, agent_id: str, now: float) -> Effects[None]:
        def op() -> Effects[None]:
            agent = self._live(agent_id)
            effects: Effects[None] = Effects(None)
            self._end(effects, lambda d: d.agent_id == agent_id, DeliveryEvent.UNTASK, now)
            self._retire(agent, now)
            return effects

        return self._write(op)

    async def merge_agent(self, clone_id: str, now: float) -> Effects[str]:
        def op() -> Effects[str]:
            original_id = self._clone_of(clone_id, "merge")
            original = self._agents.get(original_id)
            if original is None or not original.live:
                raise ProtocolError(ErrorCode.UNKNOWN_AGENT, (
                    f"agent {original_id}, of which {clone_id} is a possible clone, was removed: nothing to merge "
                    f"into (tetherctl agent approve {clone_id} keeps it as an agent of its own)"))
            clone = self._agents[clone_id]
            original.token_hash, original.machine_uuid = clone.token_hash, clone.machine_uuid
            original.hostname, original.platform = clone.hostname, clone.platform
            effects = Effects(original_id)
            self._end(effects, lambda d: d.agent_id == clone_id, DeliveryEvent.UNTASK, now)
            clone.merged_into = original_id
            self._retire(clone, now)
            return effects

        return self._write(op)

    @staticmethod
    def _retire(agent: AgentRecord, now: float) -> None:
        """Out of every target and listing (its row stays for its deliveries' history)."""
        agent.removed_at, agent.token_hash = now, b""
        agent.tags.clear()

    def agent_seen(
        self, agent_id: str, hostname: str, platform: str, commands: list[str], version: str, now: float
    ) -> None:
        def op() -> None:
            agent = self._agents.get(agent_id)
            if agent is not None:
                agent.hostname, agent.platform, agent.commands = hostname, platform, pack(commands)
                agent.agent_version, agent.last_seen = version, now

        self._write(op)
