"""Card signature keys for a deployed API: JWK Sets read by ``consul_agents.a2a.jwks_keys`` and the
``serve --card-keys`` / ``--require-signed-cards`` settings, refused with one line naming the problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from consul_agents import InvalidAgentError
from consul_agents.a2a import card_verifier, jwks_keys, sign_card
from consul_agents.cli import main

PRIVATE = ec.generate_private_key(ec.SECP256R1())
PUBLIC_JWK: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(PRIVATE.public_key()))
PRIVATE_JWK: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(PRIVATE))
CARD = {
    "name": "n",
    "description": "d",
    "version": "1",
    "supportedInterfaces": [{"url": "http://127.0.0.1:1/", "protocolBinding": "JSONRPC"}],
    "skills": [{"id": "s", "name": "s", "description": "s", "tags": []}],
}


def test_a_jwks_public_key_verifies_a_card_signed_with_its_private_key() -> None:
    """Keys read from a JWK Set, by kid, verify a card sign_card signed with the matching private key."""
    keys = jwks_keys(json.dumps({"keys": [{**PUBLIC_JWK, "kid": "k1", "use": "sig"}]}))
    assert list(keys) == ["k1"]
    card_verifier(keys)(sign_card(CARD, PRIVATE, kid="k1"))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "not JSON"),
        ("[]", '"keys" list'),
        ('{"keys": []}', '"keys" list'),
        ('{"keys": [1]}', "keys[0] is not a JSON object"),
        (json.dumps({"keys": [PUBLIC_JWK]}), 'has no "kid"'),
        (json.dumps({"keys": [{**PUBLIC_JWK, "kid": "a"}] * 2}), "appears twice"),
        (json.dumps({"keys": [{**PRIVATE_JWK, "kid": "a"}]}), "private or symmetric key ('d')"),
        (json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "a"}]}), "private or symmetric"),
        (json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": "a"}]}), "not a usable public key"),
        (json.dumps({"keys": [{"kid": "a"}]}), "not a usable public key"),
        (json.dumps({"keys": [{**PUBLIC_JWK, "kid": str(i)} for i in range(257)]}), "at most 256"),
        ("x" * (1024 * 1024 + 1), "larger than"),
    ],
    ids=[
        "not-json",
        "not-object",
        "empty",
        "entry-not-object",
        "no-kid",
        "duplicate-kid",
        "private",
        "symmetric",
        "incomplete",
        "no-kty",
        "too-many",
        "too-large",
    ],
)
def test_an_unusable_jwks_is_refused_naming_the_problem(text: str, problem: str) -> None:
    """jwks_keys raises InvalidAgentError (field card_keys) naming the source and the problem."""
    with pytest.raises(InvalidAgentError) as raised:
        jwks_keys(text, "keys.json")
    assert raised.value.field == "card_keys"
    assert problem in str(raised.value) and "keys.json" in str(raised.value)


@pytest.mark.parametrize(
    ("flags", "env", "problem"),
    [
        (["--require-signed-cards"], {}, "needs --card-keys"),
        ([], {"CONSUL_AGENTS_REQUIRE_SIGNED_CARDS": "yes"}, "needs --card-keys"),
        (["--card-keys", "{missing}"], {}, "cannot be read"),
        ([], {"CONSUL_AGENTS_CARD_KEYS": "{private}"}, "private or symmetric key"),
        ([], {"CONSUL_AGENTS_REQUIRE_SIGNED_CARDS": "maybe"}, "neither true nor false"),
    ],
    ids=["flag-without-keys", "env-without-keys", "missing-file", "private-key-env", "unclear-env"],
)
def test_serve_refuses_unusable_signature_settings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    env: dict[str, str],
    problem: str,
) -> None:
    """`serve` exits 2 with one line naming the problem, before serving, when the card keys cannot be used
    or the require-signed setting is unclear."""
    private = tmp_path / "private.json"
    private.write_text(json.dumps({"keys": [{**PRIVATE_JWK, "kid": "k1"}]}))
    paths = {"missing": tmp_path / "none.json", "private": private}
    monkeypatch.delenv("CONSUL_AGENTS_CARD_KEYS", raising=False)
    monkeypatch.delenv("CONSUL_AGENTS_REQUIRE_SIGNED_CARDS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(**paths))
    args = [flag.format(**paths) for flag in flags]
    assert main(["serve", "--listen", "127.0.0.1:0", "-http-addr", "http://127.0.0.1:1", *args]) == 2
    err = capsys.readouterr().err
    assert problem in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
