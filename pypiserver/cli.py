"""The ``pypi-server`` command.

Subcommands: ``run`` (serve directories), ``update`` (look for newer releases
upstream), ``yank`` and ``unyank``.  The pre-2.0 form without a subcommand
(``pypi-server -p 8080 DIR``, ``pypi-server -U DIR``) is translated by
:mod:`pypiserver.legacy` and still works, with a deprecation warning.
Every error is one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from . import __version__
from .config import (
    BACKENDS,
    DEFAULT_FALLBACK_URL,
    DEFAULT_ROOT,
    Config,
    ConfigError,
    parse_actions,
    parse_hash_algo,
    parse_health_endpoint,
    parse_port,
)
from .accounts import PasswordFileError
from .legacy import translate_legacy_argv

__all__ = ["main", "run_config", "build_parser"]

log = logging.getLogger("pypiserver")

EXIT_USAGE = 2
COMMANDS = ("run", "update", "yank", "unyank")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are a single line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pypi-server",
        description="A private Python package index for pip, uv, poetry, pdm, hatch and twine.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    parser.commands = commands.choices  # type: ignore[attr-defined] - read by parse()
    _add_run(commands.add_parser("run", help="serve package directories over HTTP"))
    _add_update(commands.add_parser("update", help="list or download newer releases from an index"))
    for name, verb in (("yank", "yank"), ("unyank", "un-yank")):
        _add_yank(commands.add_parser(name, help=f"{verb} a release or one file (PEP 592)"), name)
    return parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "package_directory", nargs="*", type=Path, metavar="PACKAGES_DIRECTORY",
        help=f"directories to serve, searched recursively (default: {DEFAULT_ROOT}); "
        "the first one receives uploads",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging; repeat for more")
    parser.add_argument("--log-file", type=Path, help="also write the log to this file")
    parser.add_argument("--log-stream", default="stderr", choices=("stderr", "stdout", "none"), help="where the log goes (default: stderr)")
    parser.add_argument("--log-frmt", default=Config.log_frmt, help="logging format string")
    parser.add_argument("--state-dir", type=Path, help="where the digest cache and yank state live (default: PACKAGES_DIRECTORY/.pypiserver)")


def _add_run(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    add = parser.add_argument
    add("-p", "--port", type=_checked(parse_port), default=8080, help="port to listen on (default: 8080)")
    add("-i", "-H", "--interface", "--host", dest="host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    add("-a", "--authenticate", type=_checked(parse_actions), default=frozenset({"update"}),
        help="comma-separated actions that need a password: update, download, list; '.' for none (default: update)")
    add("-P", "--passwords", dest="password_file", help="htpasswd file with the users; '.' for none (with -a .)")
    add("--disable-fallback", action="store_true", help="answer 404 for unknown projects instead of redirecting")
    add("--fallback-url", default=DEFAULT_FALLBACK_URL, help=f"where unknown projects redirect (default: {DEFAULT_FALLBACK_URL})")
    add("--health-endpoint", type=_checked(parse_health_endpoint), default="/health", help="path of the health check (default: /health)")
    add("--server", default="auto", help="HTTP server: auto, granian, waitress, wsgiref, gunicorn, or any Bottle server name")
    add("-o", "--overwrite", action="store_true", help="allow uploads to replace existing files")
    add("--hash-algo", type=_checked(parse_hash_algo), default="sha256", help="hash in file links (default: sha256); off, no, 0 or false for none")
    add("--welcome", dest="welcome_file", type=Path, help="HTML template for the welcome page")
    add("--cache-control", type=_non_negative, help="Cache-Control max-age in seconds for downloads")
    add("--index-max-age", type=_non_negative, default=0, help="Cache-Control max-age for index pages (default: 0, revalidate with the ETag)")
    add("--max-upload-size", type=_size, help="largest accepted upload, e.g. 500M or 2G (default: no limit)")
    add("--backend", choices=BACKENDS, default="auto", help="auto, cached-dir (watch the directories), simple-dir (read them on every request)")
    add("--server-base-url", help="external URL of the server, for links and redirects behind a proxy")
    add("--workers", type=_positive, help="worker processes (granian, gunicorn)")
    add("--threads", type=_positive, help="threads per worker process (default 16); at most three quarters send files over 1 MiB or read request bodies at once")
    add("--log-req-frmt", default=Config.log_req_frmt, help="format of logged requests")
    add("--log-res-frmt", default=Config.log_res_frmt, help="format of logged responses")
    add("--log-err-frmt", default=Config.log_err_frmt, help="format of logged errors")


def _add_update(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    add = parser.add_argument
    add("-x", "--execute", action="store_true", help="run the pip commands instead of printing them")
    add("-d", "--download-directory", type=Path, help="where to download (default: beside the newest local file)")
    add("-u", "--allow-unstable", action="store_true", help="consider pre-releases too")
    add("--index-url", default=DEFAULT_FALLBACK_URL, help=f"the index to compare with (default: {DEFAULT_FALLBACK_URL})")
    add("--ignorelist-file", "--blacklist-file", dest="ignorelist_file", type=Path, help="file of projects to skip, one per line")


def _add_yank(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("project", help="project name")
    parser.add_argument("release", metavar="VERSION", help="release version")
    parser.add_argument("--file", default="", help=f"{name} only this file of the release")
    if name == "yank":
        parser.add_argument("--reason", default="", help="why, shown to installers")
    _add_common(parser)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] not in COMMANDS and args_list[0] not in ("-h", "--help", "--version"):
        args_list, warning = translate_legacy_argv(args_list)
        sys.stderr.write(f"pypi-server: warning: {warning}\n")
    parser = build_parser()
    args = parse(parser, args_list)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        _configure_logging(args)
        if args.command == "run":
            return _run(args, args_list[1:])
        if args.command == "update":
            return _update(args)
        return _yank(args)
    except (ConfigError, PasswordFileError) as exc:
        sys.stderr.write(f"pypi-server {args.command}: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def run_config(run_argv: Sequence[str]) -> Config:
    """The checked Config of ``pypi-server run`` with these arguments."""
    return _config(parse(build_parser(), ["run", *run_argv]))


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse a command line, letting options and directories come in any order
    after the subcommand (``yank P V DIR --reason R`` as well as the reverse)."""
    commands = getattr(parser, "commands", {})
    if not argv or argv[0] not in commands:
        return parser.parse_args(argv)
    args = commands[argv[0]].parse_intermixed_args(argv[1:])
    args.command = argv[0]
    return args


def _config(args: argparse.Namespace) -> Config:
    password_file = args.password_file
    if args.authenticate == frozenset() and password_file not in (None, "."):
        log.warning("-a . protects nothing: the password file %s is not used", password_file)
    if args.authenticate == frozenset() and password_file is None:
        raise ConfigError("-a . (no authentication at all) must be confirmed with -P .")
    return Config(
        roots=_roots(args.package_directory),
        host=args.host,
        port=args.port,
        authenticate=args.authenticate,
        password_file=None if password_file in (None, ".") else Path(password_file),
        disable_fallback=args.disable_fallback,
        fallback_url=args.fallback_url,
        health_endpoint=args.health_endpoint,
        server=args.server,
        overwrite=args.overwrite,
        hash_algo=args.hash_algo,
        welcome_file=args.welcome_file,
        cache_control=args.cache_control,
        index_max_age=args.index_max_age,
        backend=args.backend,
        server_base_url=args.server_base_url,
        state_dir=args.state_dir,
        max_upload_size=args.max_upload_size,
        verbosity=args.verbose,
        log_file=args.log_file,
        log_stream=args.log_stream,
        log_frmt=args.log_frmt,
        log_req_frmt=args.log_req_frmt,
        log_res_frmt=args.log_res_frmt,
        log_err_frmt=args.log_err_frmt,
        workers=args.workers,
        threads=args.threads,
    ).checked()


def _run(args: argparse.Namespace, run_argv: list[str]) -> int:
    from .serving import serve

    config = _config(args)
    if "update" in config.authenticate and config.password_file is None:
        log.warning(
            "uploads will be refused: no password file is set. Use -P FILE to allow "
            "users to upload, or -P . -a . to allow anyone"
        )
    serve(config, run_argv)
    return 0


def _update(args: argparse.Namespace) -> int:
    from .updater import UpdateOptions, UpdaterError, read_ignorelist, run_update

    roots = Config(roots=_roots(args.package_directory)).checked().roots
    try:
        ignore = read_ignorelist(args.ignorelist_file) if args.ignorelist_file else frozenset()
    except UpdaterError as exc:
        raise ConfigError(str(exc)) from None
    options = UpdateOptions(
        roots=roots,
        index_url=args.index_url,
        execute=args.execute,
        download_dir=args.download_directory,
        allow_prereleases=args.allow_unstable,
        ignore=ignore,
    )
    return run_update(options)


def _yank(args: argparse.Namespace) -> int:
    from .index import Catalogue, NotFound
    from .state import StateStore
    from .storage import DirectoryStorage
    from .web.app import state_dir

    config = Config(roots=_roots(args.package_directory), state_dir=args.state_dir).checked()
    catalogue = Catalogue(DirectoryStorage(config.roots), StateStore(state_dir(config)))
    catalogue.load()
    try:
        if args.command == "yank":
            catalogue.yank(args.project, args.release, args.file, args.reason)
            print(f"yanked {args.project} {args.release}{' ' + args.file if args.file else ''}")
        elif catalogue.unyank(args.project, args.release, args.file):
            print(f"un-yanked {args.project} {args.release}{' ' + args.file if args.file else ''}")
        else:
            print(f"{args.project} {args.release} was not yanked")
    except NotFound as exc:
        sys.stderr.write(f"pypi-server {args.command}: error: {exc}\n")
        return 1
    return 0


def _roots(directories: list[Path]) -> tuple[Path, ...]:
    chosen = directories or [DEFAULT_ROOT]
    return tuple(path.expanduser().resolve() for path in chosen)


def _configure_logging(args: argparse.Namespace) -> None:
    level = max(logging.DEBUG, logging.WARNING - 10 * args.verbose)
    handlers: list[logging.Handler] = []
    if args.log_stream != "none":
        handlers.append(logging.StreamHandler(sys.stdout if args.log_stream == "stdout" else sys.stderr))
    if args.log_file:
        try:
            handlers.append(logging.FileHandler(args.log_file))
        except OSError as exc:
            raise ConfigError(f"cannot write log file {args.log_file}: {exc.strerror}") from None
    logging.basicConfig(level=level, format=args.log_frmt, handlers=handlers or [logging.NullHandler()], force=True)
    # Start-up progress for large trees is worth seeing without -v.
    for name in ("pypiserver.index", "pypiserver.web.pagestore"):
        logging.getLogger(name).setLevel(min(level, logging.INFO))


def _checked(parse):  # noqa: ANN001, ANN202 - wraps a parse_* function for argparse
    def convert(value: str):  # noqa: ANN202
        try:
            return parse(value)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def _non_negative(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of seconds") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} must not be negative")
    return number


def _positive(value: str) -> int:
    number = _non_negative(value)
    if number == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _size(value: str) -> int:
    text = value.strip().upper().removesuffix("B")
    unit = text[-1:] if text[-1:] in _UNITS else ""
    try:
        number = float(text[: len(text) - len(unit)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a size such as 500M or 2G") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be positive")
    return int(number * _UNITS[unit])
