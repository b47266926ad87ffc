"""`paystream token`: minting development bearer tokens with the configured secret."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from paystream.cli import main
from paystream.settings import Settings, get_settings
from tests.conftest import JWT_SECRET

CLI_SECRET = "cli-test-secret-that-is-long-enough-for-hs256"
# The console script installed next to this interpreter, as a user runs it.
PAYSTREAM = str(Path(sys.executable).with_name("paystream"))
JWT_VARIABLES = ("JWT_SECRET", "JWT_PUBLIC_KEY", "JWT_ISSUER", "JWT_AUDIENCE", "JWT_ROLE_CLAIM")


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """A clean JWT environment in an empty folder, so no `.env` or dev secret is read."""
    monkeypatch.chdir(tmp_path)
    for name in JWT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JWT_SECRET", CLI_SECRET)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def decode(token: str, secret: str = CLI_SECRET) -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(token, secret, algorithms=["HS256"])
    return claims


def test_token_user_role_claims(environment, capsys):
    code = main(["token", "--user", "alice", "--role", "admin"])

    token = capsys.readouterr().out.strip()
    claims = decode(token)
    assert code == 0
    assert claims["sub"] == "alice"
    assert claims["role"] == "admin"


def test_token_default_role_user(environment, capsys):
    main(["token", "--user", "bob"])

    claims = decode(capsys.readouterr().out.strip())
    assert claims["role"] == "user"


def test_token_default_lifetime_one_hour(environment, capsys):
    before = int(time.time())
    main(["token", "--user", "alice"])
    after = int(time.time())

    claims = decode(capsys.readouterr().out.strip())
    assert isinstance(claims["exp"], int)
    assert before + 3600 <= claims["exp"] <= after + 3600


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("45s", 45), ("2h", 7200), ("7d", 604800)]
)
def test_token_expires_sets_exp(environment, capsys, text, seconds):
    before = int(time.time())
    main(["token", "--user", "alice", "--expires", text])
    after = int(time.time())

    claims = decode(capsys.readouterr().out.strip())
    assert isinstance(claims["exp"], int)
    assert before + seconds <= claims["exp"] <= after + seconds


def test_token_wrong_secret_fails_decode(environment, capsys):
    main(["token", "--user", "alice"])

    with pytest.raises(jwt.InvalidSignatureError):
        decode(capsys.readouterr().out.strip(), secret=JWT_SECRET)


@pytest.mark.parametrize("text", ["30", "1w", "-5m", "m", "1.5h", "soon"])
def test_token_bad_duration_rejected(environment, capsys, text):
    with pytest.raises(SystemExit) as exited:
        main(["token", "--user", "alice", f"--expires={text}"])

    captured = capsys.readouterr()
    assert exited.value.code == 2
    assert captured.out == ""
    assert f"duration {text!r} must look like 30m, 1h or 7d." in captured.err


def test_token_unknown_role_rejected(environment, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["token", "--user", "alice", "--role", "owner"])

    captured = capsys.readouterr()
    assert exited.value.code == 2
    assert captured.out == ""
    assert "invalid choice: 'owner'" in captured.err


def test_token_needs_user(environment, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["token"])

    assert exited.value.code == 2
    assert "--user" in capsys.readouterr().err


def test_token_verified_by_server_settings(environment, capsys):
    from paystream.auth import viewer_from_token

    main(["token", "--user", "alice", "--role", "admin", "--expires", "30m"])

    viewer = viewer_from_token(capsys.readouterr().out.strip(), get_settings())
    assert viewer.user_id == "alice"
    assert viewer.is_admin


def test_token_public_key_rejected(environment, capsys):
    # mint_token stops before reading the key, so its text need not parse.
    environment.setenv("JWT_PUBLIC_KEY", "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----")

    code = main(["token", "--user", "alice"])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.startswith("paystream token: JWT_PUBLIC_KEY is set")


def test_token_command_subprocess(tmp_path):
    environ = {name: value for name, value in os.environ.items() if name not in JWT_VARIABLES}
    environ["JWT_SECRET"] = CLI_SECRET
    before = int(time.time())

    result = subprocess.run(
        [PAYSTREAM, "token", "--user", "carol", "--expires", "30m"],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    after = int(time.time())
    claims = decode(result.stdout.strip())
    assert result.returncode == 0, result.stderr
    assert claims["sub"] == "carol"
    assert claims["role"] == "user"
    assert isinstance(claims["exp"], int)
    assert before + 1800 <= claims["exp"] <= after + 1800


def test_token_without_secret_uses_dev_secret(environment, capsys, tmp_path):
    environment.delenv("JWT_SECRET")

    main(["token", "--user", "alice"])

    token = capsys.readouterr().out.strip()
    dev_secret = (tmp_path / Settings.model_fields["jwt_dev_secret_file"].default).read_text()
    assert decode(token, secret=dev_secret.strip())["sub"] == "alice"
