"""The contract in protocols/: load the JSON Schemas, the OpenAPI and the AsyncAPI documents, and
hold values against them.

Schemas refer to each other by relative file name (`"$ref": "scanner.json"`), exactly as
openapi.yaml refers to them (`$ref: ./schemas/scanner.json`); here every file is registered under
its file URI, so references resolve offline, the same way schemathesis resolves them.
"""

from __future__ import annotations

import base64
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml

PROTOCOLS = Path(__file__).resolve().parents[2] / "protocols"
SCHEMAS = PROTOCOLS / "schemas"
OPENAPI = PROTOCOLS / "openapi.yaml"
ASYNCAPI = PROTOCOLS / "asyncapi.yaml"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


def schema_files() -> list[Path]:
    return sorted(SCHEMAS.glob("*.json"))


@cache
def load_schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return loaded


@cache
def registry() -> jsonschema_rs.Registry:
    return jsonschema_rs.Registry([(path.as_uri(), load_schema(path.name)) for path in schema_files()])


@cache
def validator(name: str) -> jsonschema_rs.Validator:
    """A validator for `protocols/schemas/<name>` (formats checked, references resolved)."""
    return jsonschema_rs.validator_for(
        load_schema(name), registry=registry(), base_uri=(SCHEMAS / name).as_uri(), validate_formats=True
    )


def errors(name: str, instance: object) -> list[str]:
    return [
        f"{'/'.join(map(str, error.instance_path)) or '(root)'}: {error.message}"
        for error in validator(name).iter_errors(instance)
    ]


def assert_valid(name: str, instance: object) -> None:
    """Fail with every violation of `protocols/schemas/<name>` by `instance`."""
    found = errors(name, instance)
    assert not found, f"{name} violated by {instance!r}:\n  " + "\n  ".join(found)


def openapi_schema_errors(schema: dict[str, Any], instance: object) -> list[str]:
    """Violations of a schema written inline in openapi.yaml (a response's `allOf` of a schema file and
    its narrowing): its `./schemas/*.json` references resolve against the document, as in schemathesis."""
    checker = jsonschema_rs.Draft202012Validator(
        schema, registry=registry(), base_uri=OPENAPI.as_uri(), validate_formats=True
    )
    return [
        f"{'/'.join(map(str, error.instance_path)) or '(root)'}: {error.message}"
        for error in checker.iter_errors(instance)
    ]


@cache
def _parsed_yaml(path: Path, mtime_ns: int) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ten times faster
    loaded: dict[str, Any] = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 (a safe loader)
    return loaded


def load_yaml(path: Path) -> dict[str, Any]:
    """The parsed document, parsed once per version of the file (shared: do not modify it)."""
    return _parsed_yaml(path, path.stat().st_mtime_ns)


def openapi() -> dict[str, Any]:
    return load_yaml(OPENAPI)


def asyncapi() -> dict[str, Any]:
    return load_yaml(ASYNCAPI)


def refs(node: object) -> list[str]:
    """Every `$ref` value anywhere in a document."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(refs(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(refs(item))
    return found


def pointer(document: dict[str, Any], ref: str) -> Any:
    """Resolve a local JSON pointer (`#/components/...`) in `document`."""
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The decoded header and claims of a JWT (no signature check)."""

    def segment(raw: str) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        return decoded

    header, claims, _signature = token.split(".")
    return segment(header), segment(claims)
