"""The OpenAPI document: generated from the models, and in step with the routes the app really serves."""

from __future__ import annotations

import json
import re

from consul_agents import AgentInfo, AgentRegistration, SelectionCriteria
from consul_agents.api import create_app, openapi_document

UNDOCUMENTED = {"/", "/static/app.js", "/openapi.json"}


def test_every_served_route_is_documented_and_every_documented_one_served() -> None:
    """Paths and methods of the document equal those of the aiohttp router (besides the page and itself)."""
    app = create_app("http://127.0.0.1:1")
    served = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    document = openapi_document()
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert {(p, m) for p, m in served if p not in UNDOCUMENTED} == documented


def test_schemas_come_from_the_models_and_every_reference_resolves() -> None:
    """Component schemas are the models' JSON schemas; no $ref points at a missing component."""
    document = openapi_document()
    schemas = document["components"]["schemas"]
    assert set(schemas["AgentRegistration"]["required"]) == {"agent_type", "capabilities", "endpoint"}
    assert set(schemas["AgentRegistration"]["properties"]) == set(AgentRegistration.model_fields)
    assert set(schemas["SelectionCriteria"]["properties"]) == set(SelectionCriteria.model_fields)
    assert set(schemas["AgentInfo"]["properties"]) == set(AgentInfo.model_fields)
    references = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(document)))
    assert references and references <= set(schemas)


def test_every_operation_documents_its_errors_and_accepts_either_token_header() -> None:
    """Each /v1 operation lists its 4xx answers with the error body, and both token schemes."""
    document = openapi_document()
    for path, item in document["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in item.items():
            errors = {code for code in operation["responses"] if code.startswith(("4", "5"))}
            assert {"403", "503"} <= errors, (path, method)
            for code in errors:
                schema = operation["responses"][code]["content"]["application/json"]["schema"]
                # The batch and replace routes answer a refused batch (422) or a failed step (409) with the
                # error body's fields plus what names the items or the step.
                extended = {("422", "BatchRefusedBody"), ("409", "ReplaceFailedBody")}
                name = schema["$ref"].rsplit("/", 1)[-1]
                assert name == "ErrorBody" or (code, name) in extended, (path, method, code)
                assert {"error", "message"} <= set(document["components"]["schemas"][name]["properties"])
            assert {"consulToken": []} in operation["security"] and {"bearerToken": []} in operation[
                "security"
            ]
