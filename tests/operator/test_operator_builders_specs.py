"""Inline tensor specs reach the runtime container, in a form the runtime's parser reads."""

from __future__ import annotations

from typing import Any

import pytest
from berth_operator import builders
from berth_operator.errors import RenderError
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


@pytest.mark.parametrize(
    "uri",
    [
        "https://user:pw@host/m.pt#sha256=" + "a" * 64,
        "s3://key:secret@bucket/m.pt",
        "gs://token@bucket/m.pt",
    ],
)
def test_credentials_in_uri_refused_without_echo(uri: str) -> None:
    # The CRD refuses these; the builder does not trust that it ran, and never repeats them.
    with pytest.raises(RenderError) as info:
        env_of({"uri": uri, "format": "torchscript"})
    assert info.value.field == "spec.model.uri"
    assert "credentials" in str(info.value) and "pw" not in str(info.value)
    assert "secret" not in str(info.value) and "token" not in str(info.value)


def test_at_sign_in_path_is_not_credentials() -> None:
    env = env_of({"uri": "https://host/a@b/m.pt#sha256=" + "a" * 64, "format": "torchscript"})
    assert env["BERTH_MODEL_URI"].startswith("https://host/a@b/")
