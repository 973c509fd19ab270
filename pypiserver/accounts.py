"""Who may do what: protected actions, htpasswd logins and the ``auther`` hook.

Three actions can be protected (``-a/--authenticate``): ``update`` (upload,
remove, yank), ``download`` and ``list``.  Credentials arrive as HTTP Basic
authentication (RFC 7617) and are checked by an *auther*: any callable
``(username, password) -> bool``, either given through the API or built from
an Apache htpasswd file (``-P/--passwords``).

The web layer asks :meth:`AccessPolicy.decide` once per request and turns the
:class:`Decision` into a status code; it holds no permission logic itself.
"""

from __future__ import annotations

import base64
import binascii
import collections
import enum
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Iterable, Literal, Mapping, Optional, Tuple

__all__ = [
    "ACTIONS",
    "AccessPolicy",
    "Action",
    "Auther",
    "Credentials",
    "Decision",
    "HtpasswdAuther",
    "InvalidActions",
    "PasswordFileError",
    "REALM",
    "parse_actions",
    "parse_basic_authorization",
    "policy_from_config",
]

log = logging.getLogger(__name__)

Action = Literal["update", "download", "list"]
ACTIONS: Tuple[Action, ...] = ("update", "download", "list")

#: The realm named in ``WWW-Authenticate: Basic realm="pypiserver"``.
REALM = "pypiserver"

Credentials = Tuple[str, str]
Auther = Callable[[str, str], bool]

#: The ``-a``/``-P`` value that stands for "nothing".
_NOTHING = "."


class InvalidActions(ValueError):
    """An ``--authenticate`` value names an action that does not exist."""


class PasswordFileError(ValueError):
    """The htpasswd file given with ``-P/--passwords`` cannot be used."""


class Decision(enum.Enum):
    """What the web layer should answer for one request."""

    ALLOW = "allow"
    #: No credentials were sent: answer 401 with a Basic challenge.
    CHALLENGE = "challenge"
    #: Credentials were sent and refused: answer 403.
    FORBIDDEN = "forbidden"


def parse_actions(value: str) -> frozenset[Action]:
    """Parse a comma-separated, case-insensitive list of actions.

    ``"."`` means no action at all (everything public).
    """
    if value.strip() == _NOTHING:
        return frozenset()
    words = [word.strip().lower() for word in value.split(",")]
    words = [word for word in words if word]
    valid = ", ".join(ACTIONS)
    if not words:
        raise InvalidActions(
            f"no action given in {value!r}; use a comma-separated list of "
            f"{valid}, or '.' to protect nothing"
        )
    for word in words:
        if word not in ACTIONS:
            raise InvalidActions(
                f"unknown action {word!r} in {value!r}; valid actions are "
                f"{valid}, or '.' to protect nothing"
            )
    return frozenset(words)  # type: ignore[arg-type]  # checked just above


def _check_actions(actions: Iterable[str]) -> frozenset[Action]:
    chosen = frozenset(actions)
    unknown = sorted(chosen.difference(ACTIONS))
    if unknown:
        raise InvalidActions(
            f"unknown action(s) {', '.join(map(repr, unknown))}; "
            f"valid actions are {', '.join(ACTIONS)}"
        )
    return chosen  # type: ignore[return-value]  # checked just above


def parse_basic_authorization(header: Optional[str]) -> Optional[Credentials]:
    """Return ``(username, password)`` from a Basic ``Authorization`` header.

    Anything that is not well-formed Basic credentials gives ``None``, so the
    request is treated like one without credentials.
    """
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    # RFC 7235: the scheme name is case-insensitive.
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # RFC 7617 allows other charsets; latin-1 is what older clients send.
        text = raw.decode("latin-1")
    username, colon, password = text.partition(":")
    if not colon:
        return None
    return username, password


@dataclass(frozen=True)
class _Snapshot:
    """One parsed version of the password file; never mutated after load."""

    signature: Optional[Tuple[int, int, int]]  # see _stat_signature
    hashes: Mapping[str, bytes]
    dummy_hash: Optional[bytes]


_EMPTY = _Snapshot(signature=None, hashes={}, dummy_hash=None)


def _htpasswd() -> ModuleType:
    """passlib's htpasswd support, imported when a password file is first
    read: at a tenth of a second it is the slowest import of a server that
    may need no passwords at all."""
    import passlib.apache

    return passlib.apache


def _dummy_like(sample: bytes) -> bytes:
    """A hash of a random secret that costs as much to verify as ``sample``."""
    try:
        handler = _htpasswd().htpasswd_context.identify(sample, resolve=True)
        rounds = getattr(handler.from_string(sample), "rounds", None)
        if rounds is not None:
            handler = handler.using(rounds=rounds)
        dummy = handler.hash(secrets.token_urlsafe(16))
    except Exception:
        # An entry passlib cannot re-create: verifying against the entry
        # itself costs the same, and the caller discards that answer.
        return sample
    return dummy.encode("ascii") if isinstance(dummy, str) else dummy


def _pick_dummy(hashes: Mapping[str, bytes]) -> Optional[bytes]:
    # Most users look like the majority, so unknown users should too.
    if not hashes:
        return None
    schemes = collections.Counter()
    samples: dict[str, bytes] = {}
    for hashed in hashes.values():
        try:
            scheme = _htpasswd().htpasswd_context.identify(hashed) or "?"
        except ValueError:
            scheme = "?"
        schemes[scheme] += 1
        samples.setdefault(scheme, hashed)
    scheme, _ = schemes.most_common(1)[0]
    return _dummy_like(samples[scheme])


def _stat_signature(stat: os.stat_result) -> Tuple[int, int, int]:
    # The inode catches a file replaced by rename within one clock tick.
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _load(path: str) -> _Snapshot:
    """Read and parse the file; raises OSError or ValueError."""
    with open(path, "rb") as fh:
        # Stat the open file before reading: a change made during the read
        # leaves a stale signature, which triggers another load next time.
        signature = _stat_signature(os.fstat(fh.fileno()))
        data = fh.read()
    parsed = _htpasswd().HtpasswdFile.from_string(data)
    hashes = {user: parsed.get_hash(user) for user in parsed.users()}
    return _Snapshot(signature, hashes, _pick_dummy(hashes))


class HtpasswdAuther:
    """Check passwords against an Apache htpasswd file, following its edits.

    Accepts every scheme passlib's htpasswd support knows: apr1 (MD5),
    ``{SHA}``, bcrypt, sha256-crypt, sha512-crypt, des-crypt and plaintext.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            self._snapshot = _load(self.path)
        except (OSError, ValueError) as exc:
            raise PasswordFileError(
                f"cannot use password file {self.path!r}: {exc}"
            ) from exc
        self._reload_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    def __call__(self, username: str, password: str) -> bool:
        snapshot = self._current()
        known = snapshot.hashes.get(username)
        hashed = known if known is not None else snapshot.dummy_hash
        if hashed is None:
            return False
        try:
            # passlib compares digests in constant time.
            matches = bool(_htpasswd().htpasswd_context.verify(password, hashed))
        except (ValueError, TypeError):
            matches = False
        return matches and known is not None

    def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        try:
            signature: Optional[Tuple[int, int, int]] = _stat_signature(
                os.stat(self.path)
            )
        except OSError:
            signature = None
        if signature == snapshot.signature:
            return snapshot
        with self._reload_lock:
            # Another thread may have reloaded while this one waited.
            if self._snapshot.signature != signature:
                self._snapshot = self._reload(signature)
            return self._snapshot

    def _reload(self, signature: Optional[Tuple[int, int, int]]) -> _Snapshot:
        if signature is None:
            log.warning(
                "password file %r is gone; refusing every login until it "
                "is back",
                self.path,
            )
            return _EMPTY
        try:
            return _load(self.path)
        except (OSError, ValueError) as exc:
            log.warning(
                "cannot read password file %r (%s); refusing every login "
                "until it is fixed",
                self.path,
                exc,
            )
            # Remember what was seen so the warning is logged once per change.
            return _Snapshot(signature, {}, None)


@dataclass(frozen=True)
class AccessPolicy:
    """Which actions need a login, and who checks the login."""

    protected: frozenset[Action]
    auther: Optional[Auther] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "protected", _check_actions(self.protected))

    def decide(
        self, action: Action, credentials: Optional[Credentials]
    ) -> Decision:
        if action not in ACTIONS:
            # A typo here must not silently make something public.
            raise InvalidActions(
                f"unknown action {action!r}; valid actions are "
                f"{', '.join(ACTIONS)}"
            )
        if action not in self.protected:
            return Decision.ALLOW
        if credentials is None:
            return Decision.CHALLENGE
        if self.auther is None:
            return Decision.FORBIDDEN
        username, password = credentials
        try:
            accepted = bool(self.auther(username, password))
        except Exception:
            log.exception(
                "authentication of user %r for %r failed; refusing",
                username,
                action,
            )
            return Decision.FORBIDDEN
        return Decision.ALLOW if accepted else Decision.FORBIDDEN


def policy_from_config(
    authenticate: Iterable[str],
    password_file: Optional[str],
    auther: Optional[Auther],
) -> AccessPolicy:
    """Build the policy from ``-a``, ``-P`` and the API's ``auther``.

    An ``auther`` given through the API wins over the password file.  With no
    auther and no password file (``None`` or ``"."``), protected actions are
    refused to everyone; the CLI is expected to warn about that.
    """
    protected = _check_actions(authenticate)
    if auther is None and password_file not in (None, _NOTHING):
        auther = HtpasswdAuther(password_file)  # type: ignore[arg-type]
    return AccessPolicy(protected=protected, auther=auther)
