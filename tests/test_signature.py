import hashlib
import hmac

from pydantic import SecretStr

from producers.signature import sign, verify

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
