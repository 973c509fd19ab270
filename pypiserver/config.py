"""The one immutable configuration every other module reads.

It is built either from command-line flags (see :mod:`pypiserver.cli`) or
from the keyword arguments of :func:`pypiserver.app`, which accepts the names
pypiserver 1.x and 2.x used.  Every bad value becomes a :class:`ConfigError`
whose message is one line a person can act on.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

if TYPE_CHECKING:
    from .accounts import Action

__all__ = [
    "BACKENDS",
    "Config",
    "ConfigError",
    "DEFAULT_FALLBACK_URL",
    "DEFAULT_ROOT",
    "HASH_ALGO_OFF",
    "parse_actions",
    "parse_hash_algo",
    "parse_health_endpoint",
    "parse_port",
]

BACKENDS = ("auto", "simple-dir", "cached-dir")
DEFAULT_FALLBACK_URL = "https://pypi.org/simple/"
DEFAULT_ROOT = Path("~/packages")
#: Threads per worker process, without --threads.
DEFAULT_THREADS = 16
#: Values of ``--hash-algo`` that switch the URL fragment off.
HASH_ALGO_OFF = frozenset({"0", "no", "off", "false", "none"})

Auther = Callable[[str, str], bool]


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Config:
    roots: tuple[Path, ...] = (DEFAULT_ROOT,)
    host: str = "0.0.0.0"
    port: int = 8080
    #: Actions that need a password (pypiserver's ``-a``).
    authenticate: frozenset[Action] = frozenset({"update"})
    #: An htpasswd file, or None (``-P .``) for none.
    password_file: Path | None = None
    #: A callable ``(username, password) -> bool`` that replaces the file.
    auther: Auther | None = None
    disable_fallback: bool = False
    fallback_url: str = DEFAULT_FALLBACK_URL
    health_endpoint: str = "/health"
    server: str = "auto"
    overwrite: bool = False
    #: The hashlib algorithm named in file links, or None for no fragment.
    hash_algo: str | None = "sha256"
    welcome_file: Path | None = None
    #: ``max-age`` for package downloads, or None for no Cache-Control header.
    cache_control: int | None = None
    #: ``max-age`` for index pages and JSON documents. 0 means clients
    #: revalidate every time (cheap: they get a 304 for an unchanged ETag),
    #: so a page is never stale after a publish.
    index_max_age: int = 0
    backend: str = "auto"
    server_base_url: str | None = None
    #: Where the digest cache, yank state and change journal live; by default
    #: a dot-directory in the first root, which is never listed or served.
    state_dir: Path | None = None
    #: Largest accepted upload in bytes (413 beyond it); None for no limit.
    max_upload_size: int | None = None
    verbosity: int = 0
    log_file: Path | None = None
    log_stream: str | None = "stderr"
    log_frmt: str = "%(asctime)s|%(name)s|%(levelname)s|%(thread)d|%(message)s"
    log_req_frmt: str = "%(bottle.request)s"
    log_res_frmt: str = "%(status)s"
    log_err_frmt: str = "%(body)s: %(exception)s \n%(traceback)s"
    #: Number of worker processes for servers that fork (granian, gunicorn).
    workers: int | None = None
    #: Number of threads per worker (see thread_count).
    threads: int | None = None

    def __post_init__(self) -> None:
        if not self.roots:
            raise ConfigError("at least one package directory is needed")
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}"
            )
        parse_port(self.port)
        parse_health_endpoint(self.health_endpoint)
        if self.hash_algo is not None:
            parse_hash_algo(self.hash_algo)

    @property
    def upload_root(self) -> Path:
        """Uploads land in the first package directory."""
        return self.roots[0]

    @property
    def resolved_state_dir(self) -> Path:
        return self.state_dir or self.roots[0] / ".pypiserver"

    @property
    def thread_count(self) -> int:
        return self.threads or DEFAULT_THREADS

    @property
    def transfer_places(self) -> int:
        """How many transfers paced by their clients one worker process runs
        at once (files over 1 MiB sent, request bodies read): all its
        threads but a quarter (12 of 16), leaving at least one unless there
        is only one.

        Each holds a thread for as long as its client takes (under granian
        and gunicorn, for ever if it stops).  A further one is refused, so
        that slow clients cannot leave pages and small files without a
        thread.
        """
        threads = self.thread_count
        return max(1, threads - max(1, threads // 4))

    def checked(self) -> "Config":
        """Check what can only be checked against the file system."""
        for root in self.roots:
            check_directory(root)
        if self.welcome_file is not None:
            try:
                self.welcome_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    f"cannot read welcome file {self.welcome_file}: {_reason(exc)}"
                ) from None
        if self.password_file is not None and not os.access(self.password_file, os.R_OK):
            raise ConfigError(f"cannot read password file {self.password_file}")
        return self

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "Config":
        """A Config from the keyword names ``pypiserver.app()`` has always taken."""
        values: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key in _IGNORED_KWARGS:
                continue
            if key == "redirect_to_fallback":
                # The old name meant the opposite of ``disable_fallback``.
                key, value = "disable_fallback", not value
            name = _KWARG_ALIASES.get(key, key)
            if name not in _FIELD_NAMES:
                raise ConfigError(f"unknown configuration keyword {key!r}")
            values[name] = _coerce(name, value)
        return cls(**values)


def parse_port(value: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"invalid port {value!r}: expected a number from 0 to 65535") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"invalid port {port}: expected a number from 0 to 65535")
    return port


def parse_hash_algo(value: str | None) -> str | None:
    """The hashlib name to use, or None when the fragment is switched off."""
    if value is None or str(value).strip().lower() in HASH_ALGO_OFF:
        return None
    algo = str(value).strip().lower()
    if algo not in hashlib.algorithms_available:
        raise ConfigError(
            f"unknown hash algorithm {value!r}: choose one of "
            f"{', '.join(sorted(hashlib.algorithms_guaranteed))}, or 'off'"
        )
    if algo.startswith("shake_"):
        raise ConfigError(f"hash algorithm {algo!r} has no fixed length; choose e.g. sha256")
    return algo


def parse_health_endpoint(value: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or value == "/":
        raise ConfigError(
            f"invalid health endpoint {value!r}: it must be a path such as /health"
        )
    if any(ch.isspace() or ch in "?#" for ch in value):
        raise ConfigError(f"invalid health endpoint {value!r}: no spaces, '?' or '#'")
    return value


def parse_actions(value: str | Iterable[str]) -> frozenset[Action]:
    """``-a`` values: a comma-separated list of actions, or ``.`` for none."""
    from .accounts import InvalidActions, parse_actions as parse

    text = value if isinstance(value, str) else ",".join(value) or "."
    try:
        return parse(text)
    except InvalidActions as exc:
        raise ConfigError(str(exc)) from None


def check_directory(path: Path) -> None:
    if not path.exists():
        raise ConfigError(f"package directory {path} does not exist")
    if not path.is_dir():
        raise ConfigError(f"package directory {path} is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise ConfigError(f"package directory {path} is not readable")


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)


_FIELD_NAMES = frozenset(f.name for f in fields(Config))

# pypiserver 1.x/2.x keyword names and their Config field.
_KWARG_ALIASES: Mapping[str, str] = {
    "root": "roots",
    "passwords": "password_file",
    "authenticated": "authenticate",
    "welcome": "welcome_file",
    "backend_arg": "backend",
    "interface": "host",
    "verbose": "verbosity",
}
# Keywords older releases took that no longer change anything here.
_IGNORED_KWARGS = frozenset({"log_conf", "cache_control_max_age_default", "plugins"})


def _coerce(name: str, value: Any) -> Any:
    if name == "roots":
        items = [value] if isinstance(value, (str, os.PathLike)) else list(value)
        paths: list[Path] = []
        for item in items:
            # A paste .ini gives several roots as one whitespace-separated value.
            parts = item.split() if isinstance(item, str) else [item]
            paths.extend(Path(part).expanduser().resolve() for part in parts)
        return tuple(paths)
    if name == "authenticate":
        return parse_actions(value)
    if name in ("password_file", "welcome_file", "state_dir", "log_file"):
        if value in (None, "", "."):
            return None
        return Path(value).expanduser()
    if name == "hash_algo":
        return parse_hash_algo(value)
    if name in ("port",):
        return parse_port(value)
    if name in ("cache_control", "max_upload_size", "workers", "threads"):
        return None if value in (None, "") else int(value)
    if name in ("overwrite", "disable_fallback") and isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return value

