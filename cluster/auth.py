"""Ray token authentication: where a client finds a cluster's token, and how a cluster's token file is made.

Ray (2.52 and later) enforces a static bearer token on the GCS, the raylets and the dashboard (Jobs API,
state API) when every process of the cluster runs with ``RAY_AUTH_MODE=token``. Each process, and every
client, takes the token from the first of ``$RAY_AUTH_TOKEN``, the file named by ``$RAY_AUTH_TOKEN_PATH``
and ``~/.ray/auth_token``. This module reads them in that order without importing Ray, so that plain HTTP
clients (``cluster.local``'s health checks, the Jobs SDK client of ``vsp submit``) send the same token.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"


def default_token_path() -> Path:
    """Ray's default token file, ``~/.ray/auth_token``."""
    return Path.home() / ".ray" / "auth_token"


def _read(path: str | os.PathLike[str]) -> str | None:
    try:
        return Path(path).expanduser().read_text().strip() or None
    except OSError:
        return None


def token_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The token a Ray client would use (``None`` when there is none, or when ``RAY_AUTH_MODE=disabled``).

    An explicit ``$RAY_AUTH_TOKEN`` or ``$RAY_AUTH_TOKEN_PATH`` always counts; the default file only when
    ``RAY_AUTH_MODE=token``, so a token meant for one cluster is not offered to every address.
    """
    env = os.environ if env is None else env
    mode = env.get(MODE_ENV, "").strip().lower()
    if mode == "disabled":
        return None
    if env.get(TOKEN_ENV, "").strip():
        return env[TOKEN_ENV].strip()
    if env.get(TOKEN_PATH_ENV):
        return _read(env[TOKEN_PATH_ENV])
    return _read(default_token_path()) if mode == "token" else None


def bearer(token: str | None) -> dict[str, str]:
    """The HTTP header that carries ``token`` (empty without one)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def auth_headers(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{"Authorization": "Bearer ..."}`` for the token of :func:`token_from_env`, else ``{}``."""
    return bearer(token_from_env(env))


def write_token(path: str | os.PathLike[str], token: str | None = None, replace: bool = True) -> str:
    """Write ``token`` (default: 256 random bits, like ``ray get-auth-token --generate``) to ``path``, 0600.

    The file is created readable and writable by its owner only before the token is written (never a
    moment with wider permissions), then moved into place whole. ``replace=False`` keeps a file that is
    already there (another process won the race to create it). Returns the token now in ``path``.
    """
    token = token or secrets.token_hex(32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)  # a leftover tmp file keeps its old mode through O_CREAT
        os.write(fd, token.encode())
    finally:
        os.close(fd)
    if replace:
        os.replace(tmp, path)
        return token
    try:
        os.link(tmp, path)  # atomic, and fails if the file exists
    except FileExistsError:
        token = _read(path) or token
    finally:
        tmp.unlink(missing_ok=True)
    return token


def owner_only(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` grants nothing to its group or others."""
    return Path(path).stat().st_mode & 0o077 == 0
