"""GET /v1/openapi.json: a valid OpenAPI 3.1 document naming exactly the app's routes, whose request schemas
accept what the API accepts and refuse what it refuses."""
from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from api import create_app
from api.errors import ApiError
from api.openapi import UNDOCUMENTED_BLUEPRINTS
from api.parsing import parse_new_job
from genq.catalog import Catalog
from genq.settings import Settings
from models.params import BOUNDS, GenerationParams, ParamError

IGNORED_METHODS = {"HEAD", "OPTIONS"}  # Flask answers these on every route by itself
ERROR = {"$ref": "#/components/schemas/Error"}
OPENAI_ERROR = {"$ref": "#/components/schemas/OpenAIError"}


@pytest.fixture
def settings(migrated_sqlite_url: str, filesystem_broker_url: str) -> Settings:
    """The document depends on configuration, not on the database: one database is enough."""
    return Settings.from_env({"DATABASE_URL": migrated_sqlite_url, "GENQ_BROKER_URL": filesystem_broker_url})


@pytest.fixture
def app(settings: Settings) -> Flask:
    return create_app(settings)


@pytest.fixture
def document(app: Flask) -> dict[str, Any]:
    response = app.test_client().get("/v1/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def _validator(document: dict[str, Any], component: str) -> Draft202012Validator:
    # the document is the root, so its "#/components/..." references resolve
    return Draft202012Validator({**document, "$ref": f"#/components/schemas/{component}"})


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_route_is_documented_and_every_documented_operation_is_a_route(
    app: Flask, document: dict[str, Any]
) -> None:
    routes = {
        (re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in IGNORED_METHODS and rule.endpoint.split(".")[0] not in UNDOCUMENTED_BLUEPRINTS
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes == documented


def test_every_operation_documents_the_error_shape_for_every_error_status(document: dict[str, Any]) -> None:
    responses = document["components"]["responses"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert "500" in operation["responses"], (path, method)
            for status, response in operation["responses"].items():
                response = responses[response["$ref"].rsplit("/", 1)[1]] if "$ref" in response else response
                if int(status) >= 400:
                    shape = OPENAI_ERROR if path.startswith("/openai/") else ERROR  # the OpenAI-compatible surface
                    assert response["content"] == {"application/json": {"schema": shape}}, (path, method, status)


def _boundary_values(schema: dict[str, Any]) -> list[tuple[Any, bool]]:
    """(value, whether the schema allows it) at and just past each bound of a numeric parameter schema."""
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    step = 1 if "integer" in types else 1e-9
    out: list[tuple[Any, bool]] = []
    if "minimum" in schema:
        out += [(schema["minimum"], True), (schema["minimum"] - step, False)]
    if "exclusiveMinimum" in schema:
        out += [(schema["exclusiveMinimum"], False), (schema["exclusiveMinimum"] + step, True)]
    if "maximum" in schema:
        out += [(schema["maximum"], True), (schema["maximum"] + step, False)]
    return out


def test_generation_parameter_bounds_in_the_document_are_the_enforced_ones(document: dict[str, Any]) -> None:
    properties = document["components"]["schemas"]["GenerationParamsRequest"]["properties"]
    assert set(properties) == set(GenerationParams.__dataclass_fields__)
    checked = 0
    for name in BOUNDS:
        for value, allowed in _boundary_values(properties[name]):
            if name == "min_new_tokens" and value > GenerationParams().max_new_tokens:
                continue
            try:
                GenerationParams.resolve({name: value})
                accepted = True
            except ParamError:
                accepted = False
            assert accepted == allowed, (name, value)
            assert _validator(document, "GenerationParamsRequest").is_valid({name: value}) == allowed, (name, value)
            checked += 1
    assert checked >= 2 * len([b for b in BOUNDS.values() if b.kind != "bool"])


BODIES: list[dict[str, Any]] = [
    {"prompt": "Hi"},
    {"messages": [{"role": "user", "content": "Hi"}], "params": {"max_new_tokens": 4, "stop": "x"}},
    {"prompt": "Hi", "messages": None, "model": None, "params": None, "metadata": None},
    {"prompt": "Hi", "params": {"seed": None, "logprobs": 3, "stop": ["a", "b"], "stop_token_ids": [2]}},
    {"prompt": "Hi", "metadata": {"k": [1, 2]}},
    {"prompt": "Hi", "priority": 9, "ttl_seconds": 60, "deadline_seconds": None, "max_attempts": 1},
    # refused
    {},
    {"prompt": "Hi", "messages": [{"role": "user", "content": "Hi"}]},
    {"prompt": ""},
    {"prompt": "Hi", "max_tokens": 5},
    {"messages": []},
    {"messages": [{"role": "user", "content": "Hi", "name": "x"}]},
    {"messages": [{"role": "boss", "content": "Hi"}]},
    {"prompt": "Hi", "params": {"top_p": 0}},
    {"prompt": "Hi", "params": {"max_tokens": 5}},
    {"prompt": "Hi", "params": {"stop": ""}},
    {"prompt": "Hi", "params": {"stop_token_ids": [-1]}},
    {"prompt": "Hi", "params": {"temperature": None}},
    {"prompt": "Hi", "model": "no-such-model"},
    {"prompt": "Hi", "metadata": [1]},
    {"prompt": "Hi", "webhook_events_filter": ["finished"]},
    {"prompt": "Hi", "priority": 10},
    {"prompt": "Hi", "max_attempts": 0},
    {"prompt": "Hi", "ttl_seconds": 1.5},
]


@pytest.mark.parametrize("body", BODIES, ids=[str(i) for i in range(len(BODIES))])
def test_the_job_request_schema_accepts_exactly_what_the_api_accepts(
    settings: Settings, document: dict[str, Any], body: dict[str, Any]
) -> None:
    try:
        parse_new_job(body, Catalog(settings), settings.max_metadata_bytes, settings.webhook_allow)
        accepted = True
    except ApiError:
        accepted = False
    assert _validator(document, "JobRequest").is_valid(body) == accepted


def test_the_document_states_this_instance_s_models_and_limits(
    migrated_sqlite_url: str, filesystem_broker_url: str
) -> None:
    settings = Settings.from_env({
        "DATABASE_URL": migrated_sqlite_url, "GENQ_BROKER_URL": filesystem_broker_url,
        "GENQ_MAX_BODY_BYTES": "54321", "GENQ_MAX_METADATA_BYTES": "1234", "GENQ_BATCH_MAX_LINES": "77",
    })
    document = create_app(settings).test_client().get("/v1/openapi.json").get_json()
    properties = document["components"]["schemas"]["JobRequest"]["properties"]
    assert properties["model"]["enum"] == [*sorted(settings.models), None]
    assert "1234 bytes" in properties["metadata"]["description"]
    assert "54321 bytes" in document["paths"]["/v1/jobs"]["post"]["responses"]["413"]["description"]
    jsonl = document["paths"]["/v1/batches"]["post"]["requestBody"]["content"]["application/jsonl"]["schema"]
    assert "77 lines" in jsonl["description"]


def test_the_openai_compatible_surface_is_tagged_as_such(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert (operation.get("tags") == ["OpenAI-compatible"]) == path.startswith("/openai/v1/"), (path, method)
