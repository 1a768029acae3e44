"""Issue 17 as a real process: malformed settings exit 2 naming the setting (never 4), no secret
in any output, reads create nothing, and `serve` answers an unparsable request (a NUL in a
header) with a problem document and keeps tokens in query strings out of its access log."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from tests.apiutil import ADMIN_TOKEN
from tests.e2e.test_cli import COMMAND, Cli
from tests.e2e.test_serve import assert_clean_exit, base_env, running


def _run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    done = subprocess.run([*COMMAND, *args], env=env, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in done.stderr
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    cli = Cli(f"sqlite:///{tmp_path / 'stockctl.db'}")
    cli("init")
    return dict(cli.env)


@pytest.mark.parametrize(
    ("name", "value", "command"),
    [
        ("STOCKCTL_DATABASE_URL", "postgresql://u:pw@127.0.0.1:abc/x", "stock show P"),
        ("STOCKCTL_DATABASE_URL", "postgresql://u:pw@127.0.0.1:1:2/x", "stock show P"),
        ("STOCKCTL_DATABASE_URL", "", "stock show P"),
        ("STOCKCTL_REDIS_URL", "redis://127.0.0.1:abc/5", "cache stats"),
        ("STOCKCTL_REDIS_URL", "http://127.0.0.1:6379", "cache stats"),
        ("STOCKCTL_REDIS_URL", "redis://127.0.0.1:6379/99", "cache stats"),
        ("STOCKCTL_REDIS_URL", "", "cache stats"),
        ("STOCKCTL_API_URL", "http://h:abc", "stock show P"),
        ("STOCKCTL_ACTOR", "a\u202eb", "stock show P"),
        ("STOCKCTL_DATABSE_URL", "sqlite:////tmp/x.db", "stock show P"),
    ],
)
def test_a_malformed_setting_exits_2_naming_it(
    env: dict[str, str], name: str, value: str, command: str
) -> None:
    code, out, err = _run({**env, name: value}, *command.split())
    assert code == 2, err
    assert err.startswith("error: invalid settings: ") and err.count("\n") == 1, err
    assert name.removeprefix("STOCKCTL_").lower() in err or name in err
    assert "pw" not in err


def test_config_show_prints_no_token(env: dict[str, str]) -> None:
    secret = "client-token-" + "s3cr3t" * 3
    servers = json.dumps([{"name": "ops", "token": "server-" + secret, "scopes": ["admin"]}])
    code, out, err = _run(
        {**env, "STOCKCTL_API_TOKEN": secret, "STOCKCTL_API_TOKENS": servers},
        "config", "show", "-o", "json",
    )  # fmt: skip
    assert code == 0, err
    assert secret not in out and secret not in err
    assert json.loads(out)["api_token"] == "***"


def test_a_read_on_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent" / "dir" / "x.db"
    cli = Cli(f"sqlite:///{missing}")
    for args in (["stock", "show", "P"], ["overview"], ["db", "current"], ["product", "list"]):
        result = cli(*args, ok=False)
        assert result.code == 3, result.err
        assert "run `stockctl init`" in result.err
        assert not (tmp_path / "nonexistent").exists(), args
    cli("init")
    assert missing.is_file()


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_serve_answers_a_nul_in_a_header_with_a_problem_and_masks_tokens_in_its_log(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'stockctl.db'}"
    Cli(url)("init")
    with running(base_env(url), "serve") as server:
        port = int(server.url.rsplit(":", 1)[1])
        answer = _raw(port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), answer
        assert b"content-type: application/problem+json" in head.lower(), answer
        problem = json.loads(body)
        assert problem["type"].endswith("/bad-request") and problem["status"] == 400
        query = f"?product_id=P&token={ADMIN_TOKEN}&api_key=k3y-value&x={ADMIN_TOKEN}"
        response = server.http.get(f"/v1/inventory{query}", headers={"Authorization": "Bearer x"})
        assert response.status_code == 401
        code, out, err = server.stop()
    assert_clean_exit(code, out, err)  # no token anywhere in what serve printed
    log = out + err  # uvicorn's access log goes to stdout
    assert "k3y-value" not in log and "token=***" in log and "api_key=***" in log, log
