"""Where the client finds the head's address and the cluster token (mirrors the Rust CLI)."""

import json
import os
import tempfile
from pathlib import Path
from typing import Optional, Tuple

from .errors import ConfigError

ADDRESS_ENV = "TROUPE_ADDRESS"
TOKEN_ENV = "TROUPE_TOKEN"
TOKEN_FILE_ENV = "TROUPE_TOKEN_FILE"
HOME_ENV = "TROUPE_HOME"


def up_dir() -> Path:
    """The state directory of the cluster `troupe up` started: $TROUPE_HOME, else /tmp/troupe-up."""
    home = os.environ.get(HOME_ENV)
    return Path(home) if home else Path(tempfile.gettempdir()) / "troupe-up"


def normalize_address(address: str) -> str:
    """`host:port` or `http://host:port` (a trailing slash allowed) -> `host:port`."""
    text = address.strip()
    if text.startswith("https://"):
        raise ConfigError(f"head address {address!r}: the head serves plain gRPC, use http:// or host:port")
    if text.startswith("http://"):
        text = text[len("http://") :]
    text = text.rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or "/" in text:
        raise ConfigError(f"head address {address!r}: expected host:port or http://host:port")
    return text


def resolve_address(address: Optional[str]) -> str:
    """The argument, else $TROUPE_ADDRESS, else the head of the cluster `troupe up` started."""
    if address:
        return normalize_address(address)
    from_env = os.environ.get(ADDRESS_ENV)
    if from_env:
        return normalize_address(from_env)
    state = up_dir() / "cluster.json"
    try:
        return normalize_address(json.loads(state.read_text())["head_address"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    raise ConfigError(
        "no head address: pass address= (or --address), set TROUPE_ADDRESS, "
        "or start a cluster with `troupe up`"
    )


def parse_token(text: str, origin: str) -> str:
    """Checks a token as the head does: trimmed, non-empty, at most 512 printable ASCII characters."""
    token = text.strip()
    if not token:
        raise ConfigError(f"the token {origin} is empty")
    if len(token) > 512:
        raise ConfigError(f"the token {origin} is longer than 512 characters")
    if not all(33 <= ord(c) <= 126 for c in token):
        raise ConfigError(f"the token {origin} has characters other than printable ASCII")
    return token


def _read_token_file(path: Path, origin: str) -> str:
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"reading the token file {path} ({origin}): {error}") from error
    return parse_token(text, f"in {path}")


def resolve_token(token: Optional[str]) -> Tuple[Optional[str], str]:
    """The token and a phrase saying where it came from; (None, ...) when there is none."""
    if token is not None:
        return parse_token(token, "given as an argument"), "the `token` argument"
    from_env = os.environ.get(TOKEN_ENV)
    if from_env is not None:
        return parse_token(from_env, "in $TROUPE_TOKEN"), "$TROUPE_TOKEN"
    token_file = os.environ.get(TOKEN_FILE_ENV)
    if token_file:
        path = Path(token_file)
        return _read_token_file(path, "named by $TROUPE_TOKEN_FILE"), f"the file {path} ($TROUPE_TOKEN_FILE)"
    path = up_dir() / "head" / "token"
    if path.exists():
        return _read_token_file(path, "of the cluster `troupe up` started"), f"the file {path}"
    return None, f"none (no token was found; looked for $TROUPE_TOKEN, $TROUPE_TOKEN_FILE, {path})"
