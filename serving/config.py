"""The server's settings, read from the environment and checked once, where they are built.

:class:`ServingConfig` is what the app is built from (``MAX_BATCH``,
``MODEL_CHECK_SECONDS``, the feature log's ``FEATURE_LOG_*``, gunicorn's
``WEB_CONCURRENCY``, ``WEB_THREADS`` and ``REQUEST_READ_TIMEOUT``, the access token
``SERVING_TOKEN`` / ``SERVING_TOKEN_FILE``, and :class:`~core.settings.Settings` for
``DATA_DIR``, ``HOST``, ``PORT``...). A value that is not a number, or out of range, is a
:class:`~core.errors.ConfigError` naming the variable, so ``serving serve`` refuses it
with exit code 2 before gunicorn starts; so is a ``HOST`` beyond loopback without a token.

This module imports nothing heavy: ``gunicorn_conf.py`` reads :class:`WebConfig` in the
gunicorn master before any worker imports ``prometheus_client`` or Feast.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from core.errors import ConfigError
from core.settings import Settings

if TYPE_CHECKING:
    from core.usecase import UseCase

#: Entities per /predict request, and bytes per request body.
MAX_BATCH = 100
MAX_BODY_BYTES = 256 * 1024
#: How often (seconds, at most) a request checks whether champion.json changed.
MODEL_CHECK_SECONDS = 1.0
#: Seconds a client has to send a whole request (headers and body), counted from its
#: connection or, on a kept-alive one, from the request's first byte.
REQUEST_READ_TIMEOUT = 10.0
#: The fewest characters of an access token (``SERVING_TOKEN``): long enough not to be guessed.
MIN_TOKEN_CHARS = 16

_KIND_NAMES = {int: "a whole number", float: "a number"}


def env_number(env: Mapping[str, str], name: str, default, kind: type, minimum=None, maximum=None):
    """The variable ``name`` of ``env`` as ``kind`` (``int`` or ``float``; ``default`` when
    unset or empty) within ``[minimum, maximum]``, else a :class:`ConfigError` naming it."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw.strip())
    except ValueError:
        value = None
    if (value is None or not math.isfinite(value)
            or (minimum is not None and value < minimum) or (maximum is not None and value > maximum)):
        raise ConfigError(f"{name}={raw!r} must be {_KIND_NAMES[kind]}{_range(minimum, maximum)}")
    return value


def _range(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum} to {maximum}"
    if minimum is not None:
        return f" of at least {minimum}"
    return "" if maximum is None else f" of at most {maximum}"


@dataclass(frozen=True)
class LogConfig:
    """The served-feature log (``serving/featurelog.py``): where, how much, how often."""

    directory: Path
    sample_rate: float = 1.0
    batch_rows: int = 1000
    flush_seconds: float = 30.0
    seed: int = 0
    #: Rows buffered at most while the writer is behind (a stalled disk, an overloaded
    #: machine); past it whole requests are dropped and counted, never the server's memory.
    max_buffered_rows: int = 20_000

    @classmethod
    def from_env(cls, directory: Path, env: Mapping[str, str]) -> "LogConfig":
        """``FEATURE_LOG_SAMPLE_RATE`` (0..1), ``FEATURE_LOG_BATCH_ROWS`` (at least 1),
        ``FEATURE_LOG_FLUSH_SECONDS``, ``FEATURE_LOG_SEED`` and
        ``FEATURE_LOG_MAX_BUFFERED_ROWS`` (at least the batch)."""
        config = cls(directory=directory,
                     sample_rate=env_number(env, "FEATURE_LOG_SAMPLE_RATE", 1.0, float, minimum=0, maximum=1),
                     batch_rows=env_number(env, "FEATURE_LOG_BATCH_ROWS", 1000, int, minimum=1),
                     flush_seconds=env_number(env, "FEATURE_LOG_FLUSH_SECONDS", 30.0, float, minimum=0),
                     seed=env_number(env, "FEATURE_LOG_SEED", 0, int),
                     max_buffered_rows=env_number(env, "FEATURE_LOG_MAX_BUFFERED_ROWS", 20_000, int))
        if config.max_buffered_rows < config.batch_rows:
            raise ConfigError(f"FEATURE_LOG_MAX_BUFFERED_ROWS={config.max_buffered_rows} must be at least "
                              f"FEATURE_LOG_BATCH_ROWS={config.batch_rows}")
        return config


@dataclass(frozen=True)
class WebConfig:
    """gunicorn's processes (``serving/gunicorn_conf.py``): ``WEB_CONCURRENCY`` workers,
    ``WEB_THREADS`` threads each, the access log (``ACCESS_LOG``: a path, ``-`` for
    stdout, empty for none), and ``REQUEST_READ_TIMEOUT``: the seconds a client has to
    send a whole request (``serving/worker.py`` reads requests before a thread takes them,
    and closes a connection whose request is late with 408)."""

    workers: int = 2
    threads: int = 4
    access_log: str | None = "-"
    read_timeout: float = REQUEST_READ_TIMEOUT

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "WebConfig":
        return cls(workers=env_number(env, "WEB_CONCURRENCY", 2, int, minimum=1),
                   threads=env_number(env, "WEB_THREADS", 4, int, minimum=1),
                   access_log=env.get("ACCESS_LOG", "-") or None,
                   read_timeout=env_number(env, "REQUEST_READ_TIMEOUT", REQUEST_READ_TIMEOUT, float,
                                           minimum=0.1, maximum=600))


def is_loopback(host: str) -> bool:
    """Whether ``host`` (``HOST``) is reachable from this machine only: ``localhost`` or a
    loopback address. Any other name may resolve to an interface others reach."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AuthConfig:
    """The access token clients send as ``Authorization: Bearer <token>``: from
    ``SERVING_TOKEN``, or from the file named by ``SERVING_TOKEN_FILE`` (its first line;
    a secret mounted as a file stays out of the process environment). Required when
    ``HOST`` is beyond loopback; without one the server answers anyone who reaches it."""

    token: str = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str], host: str) -> "AuthConfig | None":
        """The configured token (None: none), checked: set at most one of the two
        variables, printable ASCII without spaces, at least :data:`MIN_TOKEN_CHARS`
        characters. A ``host`` beyond loopback without a token is a :class:`ConfigError`."""
        text, file = env.get("SERVING_TOKEN") or None, env.get("SERVING_TOKEN_FILE") or None
        if text is not None and file is not None:
            raise ConfigError("SERVING_TOKEN and SERVING_TOKEN_FILE are both set: set one of them")
        name = "SERVING_TOKEN"
        if file is not None:
            name = "SERVING_TOKEN_FILE"
            try:
                lines = Path(file).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(f"SERVING_TOKEN_FILE={file!r} cannot be read ({type(e).__name__}): point it "
                                  "at a file holding the token on its first line") from None
            text = lines[0].strip() if lines else ""
            if not text:
                raise ConfigError(f"SERVING_TOKEN_FILE={file!r} holds no token on its first line")
        if text is None:
            if not is_loopback(host):
                raise ConfigError(f"HOST={host!r} is beyond loopback: anyone who reaches it could use every "
                                  "endpoint. Set SERVING_TOKEN (or SERVING_TOKEN_FILE) to a token of at least "
                                  f"{MIN_TOKEN_CHARS} characters, which clients send as "
                                  "'Authorization: Bearer <token>', or bind HOST=127.0.0.1")
            return None
        shown = "SERVING_TOKEN" if name == "SERVING_TOKEN" else f"SERVING_TOKEN_FILE={file!r}"
        if not all("!" <= c <= "~" for c in text):
            raise ConfigError(f"{shown}: the token must be printable ASCII without spaces "
                              "(it travels in an HTTP header)")
        if len(text) < MIN_TOKEN_CHARS:
            raise ConfigError(f"{shown}: the token has {len(text)} characters, fewer than {MIN_TOKEN_CHARS} "
                              "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
        return cls(token=text)


@dataclass(frozen=True)
class ServingConfig:
    """Everything the app is built from; :meth:`from_env` checks every variable it reads."""

    settings: Settings
    use_case: "UseCase"
    max_batch: int = MAX_BATCH
    model_check_seconds: float = MODEL_CHECK_SECONDS
    log: LogConfig | None = None
    web: WebConfig = WebConfig()
    #: The access token (None: none configured, allowed only on loopback).
    auth: AuthConfig | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "ServingConfig":
        from core.usecase import load_use_case

        settings = Settings.from_env(env)
        return cls(settings=settings, use_case=load_use_case(),
                   max_batch=env_number(env, "MAX_BATCH", MAX_BATCH, int, minimum=1),
                   model_check_seconds=env_number(env, "MODEL_CHECK_SECONDS", MODEL_CHECK_SECONDS, float, minimum=0),
                   log=LogConfig.from_env(settings.logs / "served", env),
                   web=WebConfig.from_env(env),
                   auth=AuthConfig.from_env(env, settings.host))
