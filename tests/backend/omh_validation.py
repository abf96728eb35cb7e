"""Validation of Open mHealth data points against the official schemas vendored in omh_schemas/.

The schemas are copies of openmhealth/schemas (Apache 2.0, LICENSE beside them; see README there). They
refer to each other by relative file name (`unit-value-1.x.json`), so each is registered under its file
name below one base URI, and each is validated with the draft its `$schema` names (04 or 07).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator, Draft7Validator, FormatChecker
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4, DRAFT7

SCHEMAS = Path(__file__).parent / "omh_schemas"
BASE = "https://w3id.org/openmhealth/schemas/omh/"
DRAFTS = {
    "http://json-schema.org/draft-04/schema#": (DRAFT4, Draft4Validator),
    "http://json-schema.org/draft-07/schema#": (DRAFT7, Draft7Validator),
}


@cache
def _registry() -> Registry:
    resources = []
    for path in sorted(SCHEMAS.glob("*.json")):
        contents = json.loads(path.read_text())
        spec, _ = DRAFTS[contents["$schema"]]
        resources.append((BASE + path.name, Resource.from_contents(contents, default_specification=spec)))
    return Registry().with_resources(resources)


@cache
def validator(file_name: str) -> Validator:
    """The validator of one vendored schema, e.g. `heart-rate-2.0.json`."""
    contents = json.loads((SCHEMAS / file_name).read_text())
    spec, cls = DRAFTS[contents["$schema"]]
    schema = {**contents, ("id" if spec is DRAFT4 else "$id"): BASE + file_name}  # the base of its $refs
    return cls(schema, registry=_registry(), format_checker=FormatChecker())


def data_point_errors(point: dict[str, Any]) -> list[str]:
    """Everything wrong with a data point: the envelope (data-point-1.0, header 1.x) and its body,
    against the schema its header names (`omh:<name>:<version>` is `<name>-<version>.json`)."""
    errors = [f"data point: {e.message}" for e in validator("data-point-1.0.json").iter_errors(point)]
    schema_id = point.get("header", {}).get("schema_id", {})
    name = f"{schema_id.get('name')}-{schema_id.get('version')}.json"
    if schema_id.get("namespace") != "omh" or not (SCHEMAS / name).exists():
        return [*errors, f"no vendored schema for {schema_id}"]
    body = point.get("body", {})
    return errors + [f"{name}: {e.json_path}: {e.message}" for e in validator(name).iter_errors(body)]
