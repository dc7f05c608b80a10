"""Pure ACL pieces: rules per token kind, ACL file validation, up-to-date checks, token output."""

from __future__ import annotations

import json
import ssl
import stat
from pathlib import Path

import pytest

from consul_agents import _acl_rules as rules
from consul_agents._errors import InvalidAgentError, PermissionDeniedError
from consul_agents._gateway import _raise_for, _tls_reason
from consul_agents._settings import ConsulSettings
from consul_agents.acl import ProvisionedToken, load_config, tokens_json, write_tokens

SECRET = "8f0c6d57-5b8e-4a4e-9d55-2d1f0c1e9a77"


def spec(**fields: object) -> rules.TokenSpec:
    return rules.TokenSpec(**fields)  # type: ignore[arg-type]


def test_registrar_rules_grant_write_on_its_types_only() -> None:
    """A registrar may write the service, the liveness anchors (exact names) and the KV metadata prefix of
    each listed type, and nothing more."""
    text = rules.render_rules(spec(name="r", kind="registrar", agent_types=["planner", "coder"]))
    assert text.splitlines() == [
        'service "agent-planner" { policy = "write" }',
        'service "agent-coder" { policy = "write" }',
        'service "consul-agents-liveness-planner" { policy = "write" }',
        'service "consul-agents-liveness-coder" { policy = "write" }',
        'key_prefix "consul-agents/metadata/planner/" { policy = "write" }',
        'key_prefix "consul-agents/metadata/coder/" { policy = "write" }',
    ]


def test_discoverer_of_all_types_reads_every_agent_and_node() -> None:
    """A discoverer without agent_types reads every agent service, every node, every agent's metadata and
    every pool's settings."""
    text = rules.render_rules(spec(name="d", kind="discoverer"))
    assert text.splitlines() == [
        'service_prefix "agent-" { policy = "read" }',
        'node_prefix "" { policy = "read" }',
        'key_prefix "consul-agents/metadata/" { policy = "read" }',
        'key_prefix "consul-agents/pools/" { policy = "read" }',
    ]


def test_scoped_discoverer_reads_only_its_types() -> None:
    """A discoverer of given types reads those services and metadata prefixes, never with write."""
    text = rules.render_rules(spec(name="d", kind="discoverer", agent_types=["planner"]))
    assert 'service "agent-planner" { policy = "read" }' in text
    assert 'key_prefix "consul-agents/metadata/planner/" { policy = "read" }' in text
    assert "write" not in text and "service_prefix" not in text


def test_dns_rules_read_services_and_nodes_without_kv() -> None:
    """The DNS token needs service and node read (what Consul DNS checks) and no KV at all."""
    text = rules.render_rules(spec(name="dns", kind="dns"))
    assert "key_prefix" not in text and "write" not in text
    assert 'node_prefix "" { policy = "read" }' in text


def test_operator_rules_cover_every_agent_but_not_acls() -> None:
    """The operator token writes every agent and the project's KV but has no ACL or operator rights."""
    text = rules.render_rules(spec(name="ops", kind="operator"))
    assert 'service_prefix "agent-" { policy = "write" }' in text
    assert 'service_prefix "consul-agents-liveness-" { policy = "write" }' in text
    assert 'key_prefix "consul-agents/" { policy = "write" }' in text
    assert 'query_prefix "agent-" { policy = "write" }' in text
    assert "acl" not in text and "operator" not in text


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "r", "kind": "registrar"}, "tokens.0"),
        ({"name": "r", "kind": "registrar", "agent_types": []}, "tokens.0.agent_types"),
        ({"name": "o", "kind": "operator", "agent_types": ["a"]}, "tokens.0"),
        ({"name": "Bad Name", "kind": "dns"}, "tokens.0.name"),
        (
            {"name": "d", "kind": "discoverer", "agent_types": ['a" { policy = "write" } #']},
            "tokens.0.agent_types.0",
        ),
        ({"name": "d", "kind": "discoverer", "agent_types": ["a", "a"]}, "tokens.0"),
        ({"name": "d", "kind": "discoverer", "set_as_agent_default": True}, "tokens.0"),
        ({"name": "x", "kind": "root"}, "tokens.0.kind"),
        ({"name": "x", "kind": "dns", "rules": "acl = write"}, "tokens.0.rules"),
    ],
)
def test_bad_token_specs_are_rejected_naming_the_field(fields: dict[str, object], field: str) -> None:
    """Each malformed entry of the ACL file raises InvalidAgentError naming the offending field."""
    with pytest.raises(InvalidAgentError) as caught:
        rules.AclConfig(tokens=[fields])  # type: ignore[list-item]
    assert caught.value.field == field


def test_duplicate_token_names_are_rejected() -> None:
    """Two entries with one name would fight over one token, so the file is refused."""
    with pytest.raises(InvalidAgentError, match="repeated: a"):
        rules.AclConfig(tokens=[{"name": "a", "kind": "dns"}, {"name": "a", "kind": "operator"}])  # type: ignore[list-item]


def test_policy_up_to_date_compares_rules_and_description() -> None:
    """A policy is left alone only when its rules and description are exactly what the spec renders."""
    s = spec(name="d", kind="discoverer")
    body = rules.policy_body(s)
    assert rules.policy_up_to_date({**body, "ID": "x"}, s)
    assert not rules.policy_up_to_date({**body, "Rules": body["Rules"] + 'acl = "write"\n'}, s)
    assert not rules.policy_up_to_date({**body, "Datacenters": ["dc2"]}, s)


def test_token_up_to_date_rejects_extra_policies_and_roles() -> None:
    """A token carrying anything beyond its one policy (an added policy, a role) is brought back in line."""
    s = spec(name="d", kind="discoverer")
    token = {"Description": rules.token_description(s), "Policies": [{"Name": rules.policy_name(s)}]}
    assert rules.token_up_to_date(token, s)
    assert not rules.token_up_to_date(
        {**token, "Policies": [*token["Policies"], {"Name": "global-management"}]}, s
    )
    assert not rules.token_up_to_date({**token, "Roles": [{"Name": "admin"}]}, s)


def test_load_config_reads_the_shipped_file() -> None:
    """config/acl.yaml, the example the README points to, is valid and has every kind."""
    config = load_config(Path(__file__).parents[2] / "config" / "acl.yaml")
    assert {t.kind for t in config.tokens} == {"registrar", "discoverer", "dns", "operator", "pool-admin"}


def test_load_config_names_the_file_and_field(tmp_path: Path) -> None:
    """A bad ACL file raises InvalidAgentError with the file name and the field."""
    path = tmp_path / "acl.yaml"
    path.write_text("tokens:\n  - {name: r, kind: registrar, agent_types: [Bad_Type]}\n")
    with pytest.raises(InvalidAgentError, match=r"acl\.yaml") as caught:
        load_config(path)
    assert caught.value.field == "tokens.0.agent_types.0"
    path.write_text("- just a list\n")
    with pytest.raises(InvalidAgentError, match="mapping"):
        load_config(path)
    with pytest.raises(InvalidAgentError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def provisioned() -> ProvisionedToken:
    return ProvisionedToken("d", "discoverer", "acc-1", SECRET, "consul-agents-d", "created")


def test_provisioned_token_repr_hides_the_secret() -> None:
    """The secret of a provisioned token is absent from its repr and str."""
    token = provisioned()
    assert SECRET not in repr(token) and SECRET not in str(token)


def test_write_tokens_creates_an_owner_only_file(tmp_path: Path) -> None:
    """Tokens are written as JSON to a file readable by its owner only, also when it existed before."""
    path = tmp_path / "tokens.json"
    path.write_text("old")
    path.chmod(0o644)
    write_tokens([provisioned()], path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["d"]["secret_id"] == SECRET
    assert json.loads(tokens_json([provisioned()]))["d"]["accessor_id"] == "acc-1"
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.json"]


@pytest.mark.parametrize(
    "address",
    [
        f"http://127.0.0.1:8500/?token={SECRET}",
        f"http://127.0.0.1:8500/v1/catalog/services?token={SECRET}",
        f"http://{SECRET}@127.0.0.1:8500",
        f"http://user:{SECRET}@127.0.0.1:8500",
        f"http://127.0.0.1:8500#{SECRET}",
    ],
)
def test_token_in_consul_address_is_refused_without_echoing_it(address: str) -> None:
    """An address carrying a query, fragment, path or credentials is refused, and the error omits them."""
    with pytest.raises(InvalidAgentError) as caught:
        ConsulSettings.resolve(address, env={})
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)
    assert caught.value.field == "consul_url"


def test_unknown_token_answer_is_denied_and_says_why() -> None:
    """Consul's 403 "ACL not found" (revoked or unknown token) is PermissionDeniedError, not an outage."""
    with pytest.raises(PermissionDeniedError) as caught:
        _raise_for("discover agents", "http://c:8500", 403, "ACL not found")
    assert caught.value.operation == "discover agents"
    assert "revoked" in str(caught.value)


def test_tls_reason_names_the_certificate_problem() -> None:
    """A failed certificate check is described by OpenSSL's own reason, wrapped by aiohttp or not."""
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    error.verify_message = "self-signed certificate"
    assert _tls_reason(error) == "certificate verification failed: self-signed certificate"
    assert _tls_reason(ssl.SSLError(1, "x")) == "certificate or TLS handshake error (SSLError)"
