"""The pre-2.0 command line, translated to the current one.

``pypi-server -p 8080 DIR`` becomes ``pypi-server run -p 8080 DIR`` and
``pypi-server -U -x DIR`` becomes ``pypi-server update -x DIR``.  Old scripts,
systemd units and Docker commands keep working; each run says how to update
them.
"""

from __future__ import annotations

__all__ = ["translate_legacy_argv"]

# Old options that take a value, so the value is not taken for a directory.
_WITH_VALUE = frozenset(
    """-p --port -i -H --interface --host -a --authenticate -P --passwords
    -r --root -d --download-directory --fallback-url --server --hash-algo
    --welcome --log-file --log-stream --log-frmt --log-req-frmt --log-res-frmt
    --log-err-frmt --cache-control --log-conf --blacklist-file --ignorelist-file
    --index-url --health-endpoint --backend --server-base-url --state-dir
    --max-upload-size --index-max-age --workers --threads""".split()
)
# Short flags without a value that old invocations bundled, as in ``-Ux``.
_BUNDLABLE = frozenset("Uxuvo")
_UPDATE_ONLY = frozenset({"-x", "--execute", "-d", "--download-directory", "-u", "--allow-unstable", "--blacklist-file", "--ignorelist-file", "--index-url"})
_UPDATE_KEEPS = _UPDATE_ONLY | {"-h", "--help", "-v", "--verbose", "--log-file", "--log-stream", "--log-frmt", "--state-dir"}
_DROPPED = frozenset({"--log-conf"})


def translate_legacy_argv(argv: list[str]) -> tuple[list[str], str]:
    """The current form of a pre-2.0 command line, and a warning to print."""
    tokens = _unbundle(argv)
    update = "-U" in tokens or "--update-packages" in tokens
    options: list[tuple[str, str | None]] = []
    directories: list[str] = []
    position = 0
    while position < len(tokens):
        token = tokens[position]
        position += 1
        if token in ("-U", "--update-packages"):
            continue
        name, has_inline, inline = token.partition("=")
        if token.startswith("-") and name in _WITH_VALUE:
            value = inline if has_inline else (tokens[position] if position < len(tokens) else None)
            if not has_inline:
                position += 1
            if name in ("-r", "--root") and value is not None:
                directories.append(value)
            elif value is not None:
                options.append((name, value))
            continue
        if token.startswith("-"):
            options.append((token, None))
        else:
            directories.append(token)
    command = "update" if update else "run"
    translated = [command]
    for name, value in options:
        if name in _DROPPED or (update and name not in _UPDATE_KEEPS):
            continue
        translated.extend([name] if value is None else [name, value])
    translated.extend(directories)
    warning = (
        "this form of the command is deprecated and will be removed; "
        f"use: pypi-server {' '.join(translated)}"
    )
    return translated, warning


def _unbundle(argv: list[str]) -> list[str]:
    tokens: list[str] = []
    for token in argv:
        letters = token[1:]
        if token.startswith("-") and not token.startswith("--") and len(letters) > 1 and set(letters) <= _BUNDLABLE:
            tokens.extend(f"-{letter}" for letter in letters)
        else:
            tokens.append(token)
    return tokens
