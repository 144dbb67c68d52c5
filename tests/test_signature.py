import hashlib
import hmac

import pytest
from pydantic import SecretStr

from engagement.errors import ConfigurationError
from producers.signature import SecretBook, sign, verify

BODY = b'{"id":"a1","event":"ping","sentDate":"2026-11-20T14:30:05.250Z","data":{}}'
SECRETS = [SecretStr("old-secret"), SecretStr("new-secret")]


def _hmac(body: bytes, key: str) -> str:
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def test_sign_is_hex_hmac_sha256_of_the_raw_body():
    assert sign(BODY, "new-secret") == _hmac(BODY, "new-secret")


def test_any_configured_secret_verifies():
    assert verify(BODY, _hmac(BODY, "old-secret"), SECRETS)
    assert verify(BODY, _hmac(BODY, "new-secret"), SECRETS)


def test_hex_in_upper_case_verifies():
    assert verify(BODY, _hmac(BODY, "new-secret").upper(), SECRETS)


def test_wrong_key_fails():
    assert not verify(BODY, _hmac(BODY, "another-school"), SECRETS)


def test_body_changed_after_signing_fails():
    signature = _hmac(BODY, "new-secret")
    assert not verify(BODY.replace(b"a1", b"a2"), signature, SECRETS)


def test_missing_empty_truncated_or_not_hex_fails():
    signature = _hmac(BODY, "new-secret")
    assert not verify(BODY, None, SECRETS)
    assert not verify(BODY, "", SECRETS)
    assert not verify(BODY, signature[:-2], SECRETS)
    assert not verify(BODY, "z" * 64, SECRETS)


def test_no_secrets_verifies_nothing():
    assert not verify(BODY, _hmac(BODY, "new-secret"), [])


# Scoped secrets: a deployment serving two schools.

SCHOOL_A, SCHOOL_B, SCHOOL_C = "team-a", "team-b", "team-c"
SECRETS_FILE = f"""
secrets = ["shared"]

[teams.{SCHOOL_A}]
secrets = ["a-new", "a-old"]

[teams.{SCHOOL_B}]
secrets = ["b-only"]
"""


def _book(tmp_path) -> SecretBook:
    path = tmp_path / "secrets.toml"
    path.write_text(SECRETS_FILE)
    return SecretBook.load([SecretStr("from-env")], path)


def _accepted(book: SecretBook, key: str, team: str) -> bool:
    return book.allows(book.scopes(BODY, _hmac(BODY, key)), team)


def test_a_team_with_bound_secrets_accepts_only_its_own(tmp_path):
    book = _book(tmp_path)
    assert _accepted(book, "a-new", SCHOOL_A)
    assert _accepted(book, "a-old", SCHOOL_A)  # rotation: both still valid
    assert not _accepted(book, "b-only", SCHOOL_A)  # another school's key
    assert not _accepted(book, "shared", SCHOOL_A)
    assert not _accepted(book, "from-env", SCHOOL_A)


def test_a_team_without_bound_secrets_needs_a_shared_one(tmp_path):
    book = _book(tmp_path)
    assert _accepted(book, "shared", SCHOOL_C)
    assert _accepted(book, "from-env", SCHOOL_C)
    assert not _accepted(book, "a-new", SCHOOL_C)  # no school writes for another


def test_scopes_of_a_bad_signature_are_empty(tmp_path):
    book = _book(tmp_path)
    signature = _hmac(BODY, "a-new")
    assert book.scopes(BODY, signature[:40]) == frozenset()
    assert book.scopes(BODY, "") == frozenset()
    assert book.scopes(BODY + b" ", signature) == frozenset()
    assert book.scopes(BODY, signature.upper()) == {SCHOOL_A}


def test_a_broken_secrets_file_is_a_clear_configuration_error(tmp_path):
    path = tmp_path / "secrets.toml"
    for content, expected in (
        ("secrets = [", "not valid TOML"),
        ("[teams.x]\nsecret = ['typo']", "teams.x"),
    ):
        path.write_text(content)
        with pytest.raises(ConfigurationError, match=expected) as raised:
            SecretBook.load([], path)
        assert "typo" not in str(raised.value)  # a secret never shows in errors
    with pytest.raises(ConfigurationError, match="Cannot read"):
        SecretBook.load([], tmp_path / "missing.toml")


def test_a_body_without_a_team_may_use_any_secret(tmp_path):
    # An activation ping carries no team; it writes into no school's data.
    book = _book(tmp_path)
    assert _accepted(book, "b-only", "")
    assert _accepted(book, "shared", "")
    assert not _accepted(book, "nobody's", "")
