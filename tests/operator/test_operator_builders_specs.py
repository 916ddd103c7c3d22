"""Inline tensor specs reach the runtime container, in a form the runtime's parser reads."""

from __future__ import annotations

from typing import Any

import pytest
from berth_operator import builders
from berth_operator.settings import Settings
from berth_runtime.manifest import TensorSpec
from berth_runtime.settings import parse_settings

pytestmark = pytest.mark.unit


def env_of(model: dict[str, Any]) -> dict[str, str]:
    md = {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"model": model},
    }
    container = builders.deployment(md, Settings())["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


def test_inline_specs_become_runtime_settings() -> None:
    env = env_of(
        {
            "uri": "file:///models/m.pt",
            "format": "torchscript",
            "inputs": [
                {"name": "image", "datatype": "FP32", "shape": [-1, 3, 224, 224]},
                {"name": "ids", "datatype": "INT64", "shape": [-1, 8]},
            ],
            "outputs": [{"name": "logits"}],
        }
    )
    assert env["BERTH_INPUTS"] == (
        '[{"name":"image","datatype":"FP32","shape":[-1,3,224,224]},'
        '{"name":"ids","datatype":"INT64","shape":[-1,8]}]'
    )
    assert env["BERTH_OUTPUTS"] == '[{"name":"logits"}]'
    s = parse_settings(["serve"], env)
    assert s.inputs == (
        TensorSpec("image", "FP32", (-1, 3, 224, 224)),
        TensorSpec("ids", "INT64", (-1, 8)),
    )
    assert s.output_names == ("logits",)


def test_no_inline_specs_no_variables() -> None:
    env = env_of({"uri": "file:///models/m.pt", "format": "torchscript"})
    assert "BERTH_INPUTS" not in env and "BERTH_OUTPUTS" not in env
