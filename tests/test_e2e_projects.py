"""Project managers end to end: poetry and pdm lock a project against a real
``pypi-server`` and install it into the project's own virtual environment;
hatch installs an environment's dependencies from it.

They read the index their own way (poetry's "legacy" source, pdm's source
list) and write the file digests the pages give into their lock files, so a
wrong digest or a name the index spells differently fails here.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # the test extras bring tomli on 3.10
    import tomli as tomllib

from conftest import Server, output_of, run_client, tool, tools_env, write_users
from dists import make_sdist, make_wheel

pytestmark = pytest.mark.e2e

# A project that is not a package itself, and the releases it needs.
CONSUMER = """\
[project]
name = "consumer"
version = "0.1"
requires-python = ">=3.9"
dependencies = ["app-top", "Other.Thing"]

"""
# What the resolvers must choose: app-top caps app-core below 2.0.
EXPECTED = {"app-core": "1.5", "app-top": "1.0", "other-thing": "0.1"}
SEEDED = {"pip", "setuptools", "wheel"}
USER, PASSWORD = "reader", "open sesame"
Credentials = tuple[str, str] | None


@pytest.fixture
def packages(packages_dir: Path) -> Path:
    make_wheel(packages_dir, "app-core", "1.5")
    make_sdist(packages_dir, "app-core", "1.5")
    make_wheel(packages_dir, "app-core", "2.0")
    make_wheel(packages_dir, "app-top", "1.0", requires_dist=["app-core<2"])
    make_wheel(packages_dir, "Other_Thing", "0.1")
    return packages_dir


def write_project(project: Path, tool_settings: str) -> None:
    project.mkdir()
    (project / "pyproject.toml").write_text(CONSUMER + tool_settings)


def poetry_install(server: Server, project: Path, env: dict[str, str], credentials: Credentials = None):
    write_project(
        project,
        f"""\
[tool.poetry]
package-mode = false

[[tool.poetry.source]]
name = "private"
url = "{server.url}/simple/"
priority = "primary"
""",
    )
    env = {**env, "POETRY_VIRTUALENVS_IN_PROJECT": "true"}
    if credentials:
        env["POETRY_HTTP_BASIC_PRIVATE_USERNAME"], env["POETRY_HTTP_BASIC_PRIVATE_PASSWORD"] = credentials
    return run_client([tool("poetry"), "--no-ansi", "-n", "-C", str(project), "install"], env=env, timeout=300)


def pdm_install(server: Server, project: Path, env: dict[str, str], credentials: Credentials = None):
    # A source named "pypi" replaces PyPI itself: nothing is asked of pypi.org.
    signed_in = 'username = "{}"\npassword = "{}"\n'.format(*credentials) if credentials else ""
    write_project(
        project,
        f"""\
[tool.pdm]
distribution = false

[[tool.pdm.source]]
name = "pypi"
url = "{server.url}/simple/"
{signed_in}""",
    )
    return run_client([tool("pdm"), "install", "-p", str(project)], env=env, timeout=300)


def locked(lock: Path) -> dict[str, tuple[str, dict[str, str]]]:
    """Project → (version, {filename: digest}) from a poetry.lock or pdm.lock."""
    packages = tomllib.loads(lock.read_text())["package"]
    return {p["name"]: (p["version"], {f["file"]: f["hash"] for f in p["files"]}) for p in packages}


def digests(packages: Path, name: str, version: str) -> dict[str, str]:
    """{filename: "sha256:..."} of the files of one release on disk."""
    prefix = f"{name.replace('-', '_')}-{version}"
    return {
        path.name: "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        for path in packages.iterdir()
        if path.name.lower().startswith(prefix)
    }


def installed(venv: Path) -> dict[str, str]:
    """Distribution → version, from the venv's ``.dist-info`` dirs."""
    found = {}
    for info in venv.glob("lib/python*/site-packages/*.dist-info"):
        name, version = info.name[: -len(".dist-info")].rsplit("-", 1)
        found[name] = version
    return without_seeded(found)


def without_seeded(found: dict[str, str]) -> dict[str, str]:
    """``found`` with names normalized, less the installers a new virtual
    environment may be seeded with."""
    named = {name.replace("_", "-").lower(): version for name, version in found.items()}
    return {name: version for name, version in named.items() if name not in SEEDED}


@pytest.mark.parametrize(
    "install, lock_name", [(poetry_install, "poetry.lock"), (pdm_install, "pdm.lock")], ids=["poetry", "pdm"]
)
def test_project_manager_locks_and_installs_from_the_index(
    server_factory, packages, tmp_path, install, lock_name
):
    server = server_factory([str(packages)])
    project = tmp_path / "consumer"

    result = install(server, project, tools_env(server, tmp_path / "home"))

    assert result.returncode == 0, output_of(result)
    assert installed(project / ".venv") == EXPECTED
    assert locked(project / lock_name) == {
        name: (version, digests(packages, name, version)) for name, version in EXPECTED.items()
    }


@pytest.mark.parametrize("install", [poetry_install, pdm_install], ids=["poetry", "pdm"])
def test_project_manager_signs_in_to_a_protected_index(server_factory, packages, tmp_path, install):
    passwords = tmp_path / "htpasswd"
    write_users(passwords, {USER: PASSWORD}, scheme="bcrypt")
    server = server_factory(["-a", "list,download,update", "-P", str(passwords), str(packages)])
    env = tools_env(server, tmp_path / "home")

    refused = install(server, tmp_path / "anonymous", env)
    signed_in = install(server, tmp_path / "signed-in", env, (USER, PASSWORD))

    assert server.get("/simple/app-top/").status == 401
    assert refused.returncode != 0
    assert installed(tmp_path / "anonymous" / ".venv") == {}
    assert signed_in.returncode == 0, output_of(signed_in)
    assert installed(tmp_path / "signed-in" / ".venv") == EXPECTED


def test_hatch_environment_installs_from_the_index(server_factory, packages, tmp_path):
    server = server_factory([str(packages)])
    project = tmp_path / "consumer"
    write_project(
        project,
        f"""\
[tool.hatch.envs.default]
skip-install = true
dependencies = ["app-top", "Other.Thing"]

[tool.hatch.envs.default.env-vars]
PIP_INDEX_URL = "{server.url}/simple/"
UV_DEFAULT_INDEX = "{server.url}/simple/"
""",
    )
    env = tools_env(server, tmp_path / "home")
    # Only the project's settings name the index: without them the installer
    # would ask PyPI, which these tests never reach.
    for key in ("PIP_INDEX_URL", "UV_INDEX_URL", "UV_DEFAULT_INDEX"):
        del env[key]
    # No braces: hatch would read them as its own context fields.
    report = "import importlib.metadata as m, json; print(json.dumps(dict((d.name, d.version) for d in m.distributions())))"

    result = run_client([tool("hatch"), "run", "python", "-c", report], env=env, cwd=project)

    assert result.returncode == 0, output_of(result)
    assert without_seeded(json.loads(result.stdout.strip().splitlines()[-1])) == EXPECTED
