"""API keys: random, shown once, stored as SHA-256."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "mlx_"


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
