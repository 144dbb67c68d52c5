"""Eduzz's webhook signature: hex HMAC-SHA256 of the raw body, in ``x-signature``.

A deployment may serve several schools. Secrets are then bound to team ids in
a TOML file, and a body whose team has bound secrets is accepted only when
signed with one of them; every other body needs one of the deployment's shared
secrets (all a single-school deployment lists):

    # ENGAGEMENT_WEBHOOK_SECRETS_FILE=secrets.toml
    secrets = ["shared-secret"]            # teams without secrets of their own

    [teams."7b2a07197113e91691214a0f2b8ea243"]
    secrets = ["this-school-new", "this-school-old"]   # rotation: both valid

The signature is checked before the body is parsed (which secrets match it),
and the team afterwards (whether one of them is the team's). A body without a
team (a ping, the 2024 drafts) may be signed with any of the secrets.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr

from engagement.toml_files import load_toml

SIGNATURE_HEADER = "x-signature"
_HEX_DIGITS = frozenset("0123456789abcdef")

# The scope of the deployment's shared secrets, beside the team ids.
SHARED = ""


def sign(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _candidate(signature: str | None) -> str | None:
    if not signature:
        return None
    candidate = signature.strip().lower()
    if len(candidate) != 64 or not set(candidate) <= _HEX_DIGITS:
        return None
    return candidate


def verify(body: bytes, signature: str | None, secrets: Iterable[SecretStr]) -> bool:
    """True when ``signature`` is the body's HMAC under any of ``secrets``."""
    return bool(SecretBook.shared_only(secrets).scopes(body, signature))


class _TeamSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid")
    secrets: list[SecretStr]


class _SecretsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    secrets: list[SecretStr] = []
    teams: dict[str, _TeamSecrets] = {}


@dataclass(frozen=True)
class SecretBook:
    """Every secret the receiver accepts, each with its scope (a team, or shared)."""

    shared: tuple[SecretStr, ...] = ()
    teams: Mapping[str, tuple[SecretStr, ...]] = field(default_factory=dict)

    @classmethod
    def shared_only(cls, secrets: Iterable[SecretStr]) -> SecretBook:
        return cls(shared=tuple(secrets))

    @classmethod
    def load(cls, shared: Iterable[SecretStr], path: Path | None) -> SecretBook:
        """The shared secrets given, plus those of the TOML file at ``path``."""
        shared = tuple(shared)
        if path is None:
            return cls(shared=shared)
        parsed = load_toml(path, _SecretsFile, "the webhook secrets file")
        teams = {
            team.strip(): tuple(entry.secrets)
            for team, entry in parsed.teams.items()
            if entry.secrets
        }
        return cls(shared=shared + tuple(parsed.secrets), teams=teams)

    def __bool__(self) -> bool:
        return bool(self.shared or self.teams)

    def scopes(self, body: bytes, signature: str | None) -> frozenset[str]:
        """The scopes (team ids, or SHARED) whose secrets signed ``body``.

        Every secret is compared, in constant time, whatever the outcome, so
        the answer's timing tells nothing about which secret matched.
        """
        candidate = _candidate(signature)
        if candidate is None:
            return frozenset()
        matched = set()
        for scope, secrets in ((SHARED, self.shared), *self.teams.items()):
            for secret in secrets:
                expected = sign(body, secret.get_secret_value())
                if hmac.compare_digest(expected, candidate):
                    matched.add(scope)
        return frozenset(matched)

    def allows(self, scopes: frozenset[str], team_id: str) -> bool:
        """Whether a body of ``team_id``, signed by ``scopes``, may be accepted.

        A body without a team (a ping; the 2024 drafts) writes into no school's
        data, so any configured secret will do.
        """
        if not team_id:
            return bool(scopes)
        if team_id in self.teams:
            return team_id in scopes
        return SHARED in scopes
