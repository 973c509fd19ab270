"""Tests for pypiserver.accounts: actions, Basic credentials, htpasswd, policy."""

from __future__ import annotations

import base64
import logging
import os
import statistics
import threading
import time
from pathlib import Path

import pytest
from passlib.apache import HtpasswdFile
from passlib.hash import (
    apr_md5_crypt,
    bcrypt,
    ldap_sha1,
    sha256_crypt,
    sha512_crypt,
)

from pypiserver.accounts import (
    AccessPolicy,
    Decision,
    HtpasswdAuther,
    InvalidActions,
    PasswordFileError,
    parse_actions,
    parse_basic_authorization,
    policy_from_config,
)

# Low cost factors keep the suite fast; the code under test does not care.
SCHEMES = {
    "apr1": apr_md5_crypt,
    "sha1": ldap_sha1,
    "bcrypt": bcrypt.using(rounds=6),
    "sha256": sha256_crypt.using(rounds=5000),
    "sha512": sha512_crypt.using(rounds=5000),
}


def write_htpasswd(path: Path, users: dict[str, tuple[str, object]]) -> None:
    """Write ``{user: (password, passlib handler)}`` with passlib's API."""
    htfile = HtpasswdFile(str(path), new=True)
    for user, (password, handler) in users.items():
        htfile.set_hash(user, handler.hash(password))
    htfile.save()


def bump_mtime(path: Path) -> None:
    # File timestamps move in clock ticks; make a rewrite visibly newer.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    write_htpasswd(
        path,
        {f"user-{name}": (f"pw-{name}", h) for name, h in SCHEMES.items()},
    )
    return path


# --- parse_actions -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("update", {"update"}),
        ("update,download", {"update", "download"}),
        ("Update, DOWNLOAD , list", {"update", "download", "list"}),
        (" list ", {"list"}),
        ("update,update", {"update"}),
        ("update,", {"update"}),
        (".", set()),
        (" . ", set()),
    ],
)
def test_parse_actions(value: str, expected: set[str]) -> None:
    assert parse_actions(value) == frozenset(expected)


@pytest.mark.parametrize(
    ("value", "bad_word"),
    [
        ("upload", "'upload'"),
        ("update,remove", "'remove'"),
        ("update,.", "'.'"),
        ("", "no action"),
        (" , ", "no action"),
    ],
)
def test_parse_actions_rejects(value: str, bad_word: str) -> None:
    with pytest.raises(InvalidActions) as excinfo:
        parse_actions(value)
    message = str(excinfo.value)
    assert bad_word in message
    assert "update, download, list" in message


# --- parse_basic_authorization ------------------------------------------


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode("ascii")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic(b"alice:secret"), ("alice", "secret")),
        (basic(b"alice:se:cr:et"), ("alice", "se:cr:et")),
        (basic(b"alice:"), ("alice", "")),
        (basic(b":secret"), ("", "secret")),
        ("basic " + basic(b"a:b")[6:], ("a", "b")),
        ("BASIC   " + basic(b"a:b")[6:] + "  ", ("a", "b")),
        (basic("j\u00f6rg:p\u00e4ss".encode("utf-8")), ("j\u00f6rg", "p\u00e4ss")),
        (basic("j\u00f6rg:p\u00e4ss".encode("latin-1")), ("j\u00f6rg", "p\u00e4ss")),
        (basic(b"no-colon"), None),
        ("Basic !!!not-base64!!!", None),
        ("Basic YWxpY2U6c2VjcmV0", ("alice", "secret")),
        ("Basic YWxpY2U6c2VjcmV", None),  # truncated, bad padding
        ("Basic", None),
        ("Bearer YWxpY2U6c2VjcmV0", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_basic_authorization(header, expected) -> None:
    assert parse_basic_authorization(header) == expected


# --- HtpasswdAuther ------------------------------------------------------


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_htpasswd_checks_every_scheme(htpasswd: Path, scheme: str) -> None:
    auther = HtpasswdAuther(htpasswd)
    assert auther(f"user-{scheme}", f"pw-{scheme}") is True
    assert auther(f"user-{scheme}", f"pw-{scheme}x") is False
    assert auther(f"user-{scheme}", "") is False


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("nobody", "pw-apr1"),
        ("", ""),
        ("user-apr1:", "pw-apr1"),
        ("USER-APR1", "pw-apr1"),  # htpasswd user names are case-sensitive
        ("user-sha1", "pw-apr1"),  # another user's password
    ],
)
def test_htpasswd_refuses(htpasswd: Path, username: str, password: str) -> None:
    assert HtpasswdAuther(htpasswd)(username, password) is False


def test_htpasswd_plaintext_entry(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text("plain:opensesame\n")
    auther = HtpasswdAuther(path)
    assert auther("plain", "opensesame") is True
    assert auther("plain", "opensesam") is False


def test_htpasswd_sees_user_added_later(htpasswd: Path) -> None:
    auther = HtpasswdAuther(htpasswd)
    assert auther("newcomer", "welcome") is False
    htfile = HtpasswdFile(str(htpasswd))
    htfile.set_hash("newcomer", apr_md5_crypt.hash("welcome"))
    htfile.save()
    assert auther("newcomer", "welcome") is True
    assert auther("user-apr1", "pw-apr1") is True


def test_htpasswd_sees_password_change(htpasswd: Path) -> None:
    auther = HtpasswdAuther(htpasswd)
    assert auther("user-sha1", "pw-sha1") is True
    htfile = HtpasswdFile(str(htpasswd))
    htfile.set_hash("user-sha1", ldap_sha1.hash("pw-new1"))  # same length
    htfile.save()
    bump_mtime(htpasswd)
    assert auther("user-sha1", "pw-sha1") is False
    assert auther("user-sha1", "pw-new1") is True


def test_htpasswd_removed_file_denies_everyone(
    htpasswd: Path, caplog: pytest.LogCaptureFixture
) -> None:
    auther = HtpasswdAuther(htpasswd)
    saved = htpasswd.read_bytes()
    assert auther("user-apr1", "pw-apr1") is True
    htpasswd.unlink()
    with caplog.at_level(logging.WARNING, logger="pypiserver.accounts"):
        assert auther("user-apr1", "pw-apr1") is False
        assert auther("user-apr1", "pw-apr1") is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per change, not once per request
    assert str(htpasswd) in warnings[0].getMessage()
    htpasswd.write_bytes(saved)
    assert auther("user-apr1", "pw-apr1") is True


def test_htpasswd_corrupted_file_denies_everyone(
    htpasswd: Path, caplog: pytest.LogCaptureFixture
) -> None:
    auther = HtpasswdAuther(htpasswd)
    assert auther("user-apr1", "pw-apr1") is True
    htpasswd.write_text("this line has no colon\n")
    with caplog.at_level(logging.WARNING, logger="pypiserver.accounts"):
        assert auther("user-apr1", "pw-apr1") is False
    assert any(str(htpasswd) in r.getMessage() for r in caplog.records)


def test_htpasswd_missing_file_at_start(tmp_path: Path) -> None:
    path = tmp_path / "absent.htpasswd"
    with pytest.raises(PasswordFileError, match="absent.htpasswd"):
        HtpasswdAuther(path)


@pytest.mark.parametrize(
    "content", [b"this line has no colon\n", b"a:b:c:d\n\x00\xff:x\n"]
)
def test_htpasswd_malformed_file_at_start(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.htpasswd"
    path.write_bytes(content)
    with pytest.raises(PasswordFileError, match="broken.htpasswd"):
        HtpasswdAuther(path)


def test_htpasswd_directory_at_start(tmp_path: Path) -> None:
    with pytest.raises(PasswordFileError, match=str(tmp_path)):
        HtpasswdAuther(tmp_path)


def _seconds(check) -> float:
    start = time.perf_counter()
    assert check() is False
    return time.perf_counter() - start


def test_htpasswd_unknown_user_costs_like_known_user(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    costly = bcrypt.using(rounds=10)
    write_htpasswd(path, {f"user{i}": (f"pw{i}", costly) for i in range(3)})
    auther = HtpasswdAuther(path)
    auther("warm", "up")
    known, unknown = [], []
    # Alternate the two so load from other processes hits both alike.
    for _ in range(5):
        known.append(_seconds(lambda: auther("user1", "wrong")))
        unknown.append(_seconds(lambda: auther("stranger", "wrong")))
    known_s, unknown_s = statistics.median(known), statistics.median(unknown)
    assert known_s > 0.001, "bcrypt at cost 10 should take milliseconds"
    assert 1 / 3 < unknown_s / known_s < 3


def test_htpasswd_concurrent_checks_during_edits(htpasswd: Path) -> None:
    auther = HtpasswdAuther(htpasswd)
    results: list[bool] = []
    errors: list[BaseException] = []

    def check_many() -> None:
        try:
            for _ in range(30):
                results.append(auther("user-apr1", "pw-apr1"))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=check_many) for _ in range(6)]
    for thread in threads:
        thread.start()
    for i in range(10):
        htfile = HtpasswdFile(str(htpasswd))
        htfile.set_hash(f"extra{i}", apr_md5_crypt.hash("x"))
        # Replace atomically, as a careful admin tool does: an in-place
        # rewrite can be read half-written and refuse one request.
        staged = htpasswd.with_suffix(".new")
        staged.write_bytes(htfile.to_string())
        os.replace(staged, htpasswd)
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert len(results) == 6 * 30
    assert all(results)
    assert auther("extra9", "x") is True


# --- AccessPolicy --------------------------------------------------------


def alice_only(username: str, password: str) -> bool:
    return (username, password) == ("alice", "secret")


def broken_auther(username: str, password: str) -> bool:
    raise RuntimeError("directory service unreachable")


ALICE = ("alice", "secret")
MALLORY = ("alice", "guess")
ALL = frozenset({"update", "download", "list"})
UPDATE = frozenset({"update"})
NONE: frozenset = frozenset()

A, C, F = Decision.ALLOW, Decision.CHALLENGE, Decision.FORBIDDEN


@pytest.mark.parametrize(
    ("protected", "auther", "action", "credentials", "expected"),
    [
        # nothing protected: everyone may do everything
        (NONE, None, "update", None, A),
        (NONE, None, "update", MALLORY, A),
        (NONE, alice_only, "download", None, A),
        # only update protected (the default)
        (UPDATE, alice_only, "download", None, A),
        (UPDATE, alice_only, "list", MALLORY, A),
        (UPDATE, alice_only, "update", None, C),
        (UPDATE, alice_only, "update", ALICE, A),
        (UPDATE, alice_only, "update", MALLORY, F),
        # everything protected
        (ALL, alice_only, "list", None, C),
        (ALL, alice_only, "download", ALICE, A),
        (ALL, alice_only, "download", MALLORY, F),
        # protected but nobody can log in (-P . -a update)
        (UPDATE, None, "update", None, C),
        (UPDATE, None, "update", ALICE, F),
        (UPDATE, None, "list", None, A),
        # an auther that fails refuses, it does not crash
        (UPDATE, broken_auther, "update", ALICE, F),
        (UPDATE, broken_auther, "update", None, C),
        (UPDATE, broken_auther, "download", ALICE, A),
    ],
)
def test_decide(protected, auther, action, credentials, expected) -> None:
    policy = AccessPolicy(protected=protected, auther=auther)
    assert policy.decide(action, credentials) is expected


def test_decide_logs_a_failing_auther(caplog: pytest.LogCaptureFixture) -> None:
    policy = AccessPolicy(protected=UPDATE, auther=broken_auther)
    with caplog.at_level(logging.ERROR, logger="pypiserver.accounts"):
        assert policy.decide("update", ALICE) is Decision.FORBIDDEN
    assert "directory service unreachable" in caplog.text


def test_decide_with_truthy_non_bool_auther() -> None:
    policy = AccessPolicy(protected=UPDATE, auther=lambda u, p: int(u == "a"))
    assert policy.decide("update", ("a", "")) is Decision.ALLOW
    assert policy.decide("update", ("b", "")) is Decision.FORBIDDEN


def test_decide_rejects_unknown_action() -> None:
    policy = AccessPolicy(protected=UPDATE)
    with pytest.raises(InvalidActions, match="'upload'"):
        policy.decide("upload", ALICE)  # type: ignore[arg-type]


def test_policy_rejects_unknown_protected_action() -> None:
    protected = frozenset({"update", "remove"})
    with pytest.raises(InvalidActions, match="'remove'"):
        AccessPolicy(protected=protected)  # type: ignore[arg-type]


def test_policy_with_htpasswd(htpasswd: Path) -> None:
    policy = policy_from_config(UPDATE, str(htpasswd), None)
    assert isinstance(policy.auther, HtpasswdAuther)
    assert policy.decide("update", ("user-bcrypt", "pw-bcrypt")) is A
    assert policy.decide("update", ("user-bcrypt", "pw-apr1")) is F


# --- policy_from_config --------------------------------------------------


@pytest.mark.parametrize("password_file", [None, "."])
@pytest.mark.parametrize("protected", [NONE, UPDATE, ALL])
def test_policy_without_password_file(password_file, protected) -> None:
    policy = policy_from_config(protected, password_file, None)
    assert policy.protected == protected
    assert policy.auther is None
    for action in protected:
        assert policy.decide(action, ALICE) is Decision.FORBIDDEN


def test_policy_auther_wins_over_password_file(tmp_path: Path) -> None:
    # The file is never opened, so it need not exist.
    policy = policy_from_config(UPDATE, str(tmp_path / "absent"), alice_only)
    assert policy.auther is alice_only
    assert policy.decide("update", ALICE) is Decision.ALLOW


def test_policy_missing_password_file(tmp_path: Path) -> None:
    with pytest.raises(PasswordFileError, match="absent"):
        policy_from_config(UPDATE, str(tmp_path / "absent"), None)


def test_policy_from_config_accepts_parsed_actions(htpasswd: Path) -> None:
    policy = policy_from_config(
        parse_actions("update, download"), str(htpasswd), None
    )
    assert policy.decide("list", None) is Decision.ALLOW
    assert policy.decide("download", None) is Decision.CHALLENGE
