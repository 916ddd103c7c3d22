"""Settings: flags over BERTH_* variables, loud failures naming the flag and variable."""

from __future__ import annotations

import pytest
from berth_runtime.settings import Settings, SettingsError, parse_settings

pytestmark = pytest.mark.unit

BASE = ["serve", "--model-uri", "/m", "--format", "torchscript", "--name", "cnn"]


def test_defaults() -> None:
    s = parse_settings(BASE, {})
    assert s == Settings(model_uri="/m", format="torchscript", name="cnn")
    assert (s.host, s.port, s.max_batch_size, s.max_delay_ms) == ("0.0.0.0", 8080, 32, 5.0)
    assert s.max_body_bytes == 64 * 1024 * 1024 and s.cache_dir == "/tmp/berth-cache"


def test_environment_fills_and_flags_override() -> None:
    env = {
        "BERTH_MODEL_URI": "pvc://models/x",
        "BERTH_FORMAT": "safetensors",
        "BERTH_MODEL_NAME": "x",
        "BERTH_PORT": "9000",
        "BERTH_MAX_BATCH_SIZE": "8",
        "BERTH_FACTORY": "pkg.mod:build",
        "BERTH_CACHE_DIR": "/var/cache/berth",
        "BERTH_THREADS": "2",
        "BERTH_DTYPE": "bfloat16",
        "BERTH_AUTH_TOKEN": "t",
    }
    s = parse_settings(["serve", "--port", "9001"], env)
    assert (s.model_uri, s.format, s.name, s.port) == ("pvc://models/x", "safetensors", "x", 9001)
    assert (s.max_batch_size, s.factory, s.cache_dir, s.threads) == (
        8,
        "pkg.mod:build",
        "/var/cache/berth",
        2,
    )
    assert s.dtype == "bfloat16" and s.resolved_token() == "t"


def test_token_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "token"
    f.write_text("abc\n")
    s = parse_settings([*BASE, "--auth-token-file", str(f)], {})
    assert s.resolved_token() == "abc"


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        # each required setting names its flag and its variable
        (
            ["serve", "--format", "torchscript", "--name", "n"],
            {},
            "--model-uri (or environment BERTH_MODEL_URI)",
        ),
        (["serve", "--model-uri", "/m", "--name", "n"], {}, "BERTH_FORMAT"),
        (["serve", "--model-uri", "/m", "--format", "torchscript"], {}, "BERTH_MODEL_NAME"),
        ([*BASE[:4], "onnx", *BASE[5:]], {}, "--format must be one of"),
        (BASE, {"BERTH_PORT": "http"}, "--port (or BERTH_PORT) must be int"),
        ([*BASE, "--dtype", "int8"], {}, "--dtype must be one of"),
        ([*BASE, "--max-batch-size", "0"], {}, "--max-batch-size is out of range"),
        ([*BASE, "--factory", "nocolon"], {}, "module:function"),
        ([*BASE, "--device", "tpu"], {}, "--device"),
    ],
)
def test_invalid(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_settings(argv, env)
