"""The chart's files, checked without a server: CRDs identical to crds/, every value
commented, the schema closed (unknown keys refused) everywhere."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "berth"
# Values that are Kubernetes (or CRD) objects passed through as they are: the comment on
# the key covers its content, and the API server checks it.
PASSTHROUGH = {"resources", "podSecurityContext", "securityContext", "spec"}


@pytest.mark.unit
def test_crds_are_byte_identical_to_the_repository_crds() -> None:
    canonical = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    copies = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert canonical, "no CRDs in crds/"
    assert copies.keys() == canonical.keys(), "charts/berth/crds/ lists other files"
    for name, data in canonical.items():
        assert copies[name] == data, (
            f"charts/berth/crds/{name} differs from crds/{name}: cp crds/*.yaml charts/berth/crds/"
        )


def _leaf_paths(values: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in PASSTHROUGH:
            out += _leaf_paths(value, path + ".")
        else:
            out.append(path)
    return out


@pytest.mark.unit
def test_every_value_is_commented() -> None:
    # each key line of values.yaml has a comment line right above it (or is a section
    # whose first child is commented)
    lines = (CHART / "values.yaml").read_text().splitlines()
    missing = []
    passthrough_indent: int | None = None
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w-]*):(.*)$", line)
        if not m:
            continue
        indent = len(m.group(1))
        if passthrough_indent is not None and indent > passthrough_indent:
            continue  # inside a Kubernetes object passed through
        passthrough_indent = indent if m.group(2) in PASSTHROUGH else None
        if m.group(3).strip() == "" and m.group(2) not in PASSTHROUGH:
            continue  # a section header: its children carry the comments
        prev = lines[i - 1].strip() if i else ""
        if not prev.startswith("#"):
            missing.append(line.strip())
    assert not missing, f"values without a comment line above: {missing}"


def _objects(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if schema.get("type") == "object" and "properties" in schema:
        out.append((path or "<root>", schema))
        for key, sub in schema["properties"].items():
            out += _objects(sub, f"{path}.{key}" if path else key)
    return out


@pytest.mark.unit
def test_schema_refuses_unknown_keys_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    objects = _objects(schema)
    assert len(objects) > 10
    open_ = [p for p, s in objects if s.get("additionalProperties") is not False]
    assert not open_, f"schema objects that accept unknown keys: {open_}"


@pytest.mark.unit
def test_schema_covers_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in _leaf_paths(values):
        node: dict[str, Any] = schema
        for part in path.split("."):
            assert part in node.get("properties", {}), f"values.yaml {path}: not in the schema"
            node = node["properties"][part]
