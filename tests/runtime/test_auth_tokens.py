"""Fail-closed bearer tokens, on a real ``berth-runtime serve`` process.

A token that is present but empty (or only whitespace, or one no client can send) is a
start-up refusal: exit code 2, one line on stderr and in the termination message (the
file the kubelet reads into the pod's status, where the operator finds it). A token is
stripped once, by the same rule from the environment and from a file, so a Secret made
with ``kubectl create secret --from-file`` (a trailing newline) works.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
from runtime_helpers import Server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

REFUSED = "berth-runtime: start-up refused (InvalidAuthToken): "


def _serve_args(model_dir: Path, cache: Path) -> list[str]:
    return ["--model-uri", str(model_dir / "ts"), "--format", "torchscript", "--name", "cnn",
            "--cache-dir", str(cache)]  # fmt: skip


@pytest.mark.parametrize(
    ("env_token", "file_token", "says"),
    [
        # the Secret's key holds "": the kubelet sets the variable to ""; main turned auth off
        ("", None, "from BERTH_AUTH_TOKEN is empty"),
        # only whitespace is empty too once stripped
        (" \t\r\n", None, "from BERTH_AUTH_TOKEN is empty"),
        # the same rule for a mounted file
        (None, "", "is empty or only whitespace"),
        (None, "\n\n  \n", "is empty or only whitespace"),
        # a line break inside can never be sent in an Authorization header: every client
        # would be locked out
        ("abc\ndef", None, "holds the character '\\n'"),
        # a control character, likewise
        (None, "tok\x00en\n", "holds the character '\\x00'"),
        # not ASCII: clients encode header values differently, so no one gets in reliably
        ("p\u00e4ss", None, "holds the character '\u00e4'"),
        # a file that is not text
        (None, b"\xff\xfe\x00", "is not UTF-8 text"),
        # both set: which one is meant is unclear; refuse rather than guess
        ("tok", "tok", "both BERTH_AUTH_TOKEN and --auth-token-file"),
    ],
    ids=[
        "env-empty",
        "env-whitespace",
        "file-empty",
        "file-whitespace",
        "env-newline-inside",
        "file-nul",
        "env-non-ascii",
        "file-not-utf8",
        "env-and-file",
    ],
)
def test_an_unusable_token_refuses_to_start_with_a_clear_message(
    tmp_path: Path,
    model_dir: Path,
    env_token: str | None,
    file_token: str | bytes | None,
    says: str,
) -> None:
    termination = tmp_path / "termination-log"
    termination.write_text("")  # the kubelet creates the file; the runtime writes into it
    env = {"BERTH_TERMINATION_LOG": str(termination)}
    args = _serve_args(model_dir, tmp_path / "cache")
    if env_token is not None:
        env["BERTH_AUTH_TOKEN"] = env_token
    if file_token is not None:
        path = tmp_path / "token"
        if isinstance(file_token, bytes):
            path.write_bytes(file_token)
        else:
            path.write_text(file_token)
        args += ["--auth-token-file", str(path)]
    server = Server(args, tmp_path / "server.log", env=env)
    try:
        code = server.proc.wait(timeout=120)  # main's code served instead (fail open)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the runtime started with an unusable token:\n{server.output()}")
    finally:
        server.stop()
    out = server.output()
    assert code == 2, out
    lines = [x for x in out.splitlines() if x.startswith(REFUSED)]
    assert len(lines) == 1 and says in lines[0], out
    message = termination.read_text()
    assert message == lines[0] + "\n", message


def test_the_termination_message_is_not_created_outside_kubernetes(
    tmp_path: Path, model_dir: Path
) -> None:
    """Outside a pod the file does not exist: a refusal writes nowhere but stderr."""
    termination = tmp_path / "absent" / "termination-log"
    server = Server(_serve_args(model_dir, tmp_path / "cache"), tmp_path / "server.log",
                    env={"BERTH_TERMINATION_LOG": str(termination), "BERTH_AUTH_TOKEN": ""})  # fmt: skip
    try:
        code = server.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the runtime started with an empty token:\n{server.output()}")
    finally:
        server.stop()
    assert code == 2 and REFUSED in server.output()
    assert not termination.parent.exists()


@pytest.mark.parametrize(
    "how",
    [
        # BERTH_AUTH_TOKEN from a Secret made with --from-file: the newline is part of the
        # value; main compared it unstripped and locked every client out
        "env",
        # the same Secret mounted as a file: the same rule (strip once) applies
        "file",
    ],
)
def test_a_token_with_surrounding_whitespace_works_stripped(
    tmp_path: Path, model_dir: Path, how: str
) -> None:
    raw = "  s3cret-token\r\n"
    args = _serve_args(model_dir, tmp_path / "cache")
    env: dict[str, str] = {}
    if how == "env":
        env["BERTH_AUTH_TOKEN"] = raw
    else:
        (tmp_path / "token").write_text(raw)
        args += ["--auth-token-file", str(tmp_path / "token")]
    server = Server(args, tmp_path / "server.log", env=env)
    try:
        server.wait_ready()
        url = f"{server.url}/v2/models/cnn"
        assert httpx.get(url, timeout=10).status_code == 401
        bad = httpx.get(url, headers={"Authorization": "Bearer s3cret"}, timeout=10)
        assert bad.status_code == 401
        ok = httpx.get(url, headers={"Authorization": "Bearer s3cret-token"}, timeout=10)
        assert ok.status_code == 200, ok.text
    finally:
        server.stop()
