#!/bin/sh
# Entrypoint of the pypiserver image.
#
# The container takes the same arguments as `pypi-server`, except that the
# port inside the container is always 8080 (publish it with `-p HOST:8080`).
# The first argument decides what runs:
#
#   (none)                 pypi-server run -p 8080 /data/packages
#   run | update           pypi-server "$@"            (a 2.x subcommand, as is)
#   -h | --help | --version, alone
#                          pypi-server "$@"            (top-level help/version)
#   -U / --update-packages anywhere in an option-first command line
#                          pypi-server "$@"            (legacy update form; the
#                                                       CLI translates it)
#   -anything              pypi-server run -p 8080 "$@"
#   an existing directory  pypi-server run -p 8080 "$@"
#   anything else          exec "$@"                   (docker run IMAGE bash)
#
# So `docker run IMAGE -P .htpasswd packages` serves /data/packages with
# authentication (WORKDIR is /data).  The `-p 8080` we add comes first, so a
# `-p` given by the user comes later and wins; that is their explicit choice,
# but the image only exposes and health-checks 8080.
#
# Every branch uses `exec`, so the server replaces this shell, runs as PID 1
# and receives `docker stop`'s SIGTERM directly.
#
# PYPISERVER_BIN names the server executable (default: `pypi-server` on PATH);
# the tests set it to run this script outside a container.
set -eu

bin="${PYPISERVER_BIN:-pypi-server}"
port=8080

if [ "$#" -eq 0 ]; then
    exec "$bin" run -p "$port" /data/packages
fi

# True when the arguments ask for the legacy `-U` (update) mode, which must
# not be prefixed with `run`.
wants_legacy_update() {
    for arg in "$@"; do
        case "$arg" in
            -U | --update-packages) return 0 ;;
        esac
    done
    return 1
}

case "$1" in
    run | update)
        exec "$bin" "$@"
        ;;
    -h | --help | --version)
        if [ "$#" -eq 1 ]; then
            exec "$bin" "$@"
        fi
        exec "$bin" run -p "$port" "$@"
        ;;
    -*)
        if wants_legacy_update "$@"; then
            exec "$bin" "$@"
        fi
        exec "$bin" run -p "$port" "$@"
        ;;
esac

if [ -d "$1" ]; then
    exec "$bin" run -p "$port" "$@"
fi

exec "$@"
