"""``python -m pypiserver``: the same as the ``pypi-server`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
