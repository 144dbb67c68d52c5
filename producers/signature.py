"""Eduzz's webhook signature: hex HMAC-SHA256 of the raw body, in ``x-signature``."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from pydantic import SecretStr

SIGNATURE_HEADER = "x-signature"
_HEX_DIGITS = frozenset("0123456789abcdef")


def sign(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, signature: str | None, secrets: Iterable[SecretStr]) -> bool:
    """True when ``signature`` is the body's HMAC under any of ``secrets``.

    Every secret is compared, in constant time, whatever the outcome, so the
    answer's timing tells nothing about which secret (if any) matched.
    """
    if not signature:
        return False
    candidate = signature.strip().lower()
    if len(candidate) != 64 or not set(candidate) <= _HEX_DIGITS:
        return False

    matched = False
    for secret in secrets:
        expected = sign(body, secret.get_secret_value())
        matched |= hmac.compare_digest(expected, candidate)
    return matched
