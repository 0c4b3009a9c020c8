"""Secrets: admin tokens, agent tokens and enrollment keys.

All three are high-entropy random values (>= 125 bits), so they are stored as their
SHA-256 digest and checked with a constant-time compare of digests: a slow password hash
would buy nothing against brute force and would sit on the connect path of every agent.
The clear value is shown once, when it is made, and never stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def matches(secret: str, stored_digest: bytes) -> bool:
    return hmac.compare_digest(digest(secret), stored_digest)


def new_admin_token() -> str:
    return "tta_" + secrets.token_urlsafe(32)


def new_agent_token() -> str:
    return "tag_" + secrets.token_urlsafe(32)


def new_agent_id() -> str:
    return secrets.token_hex(8)


def new_enroll_key() -> str:
    """An Armadito-style key, ``AAAAA-AAAAA-AAAAA-AAAAA-AAAAA`` (25 base32 chars, 125 bits)."""
    chars = "".join(secrets.choice(_B32) for _ in range(25))
    return "-".join(chars[i : i + 5] for i in range(0, 25, 5))


def normalise_enroll_key(key: str) -> str:
    """Keys are case-insensitive and may be typed without dashes or with spaces."""
    chars = "".join(c for c in key.upper() if c.isalnum())
    return "-".join(chars[i : i + 5] for i in range(0, len(chars), 5))
