"""
What ``pip install academy-consumer`` puts into a host service: the wheel, built as a release is built
(``pip wheel --no-deps`` of a clean copy of the sources, in a subprocess), then read as pip reads it.

* its import packages are ``academy_consumer`` and the event contract ``academy_consumer_signals`` (ADR 0008),
  nothing else at the top level, and nothing of the development-only dev stack (``devstack/``);
* its package data is there: the Avro schemas of the contract and the sample files;
* its ``Requires-Dist`` holds nothing of the standalone service outside an extra (settings from a URL, the
  metrics server, a database driver), nor Unidecode (the slug rule is text-unidecode's, wherever the app runs);
  the extras hold what docs/reference/tested-versions.md says they hold.
"""

import email.parser
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack  # a subprocess builds the wheel

ROOT = Path(__file__).resolve().parent.parent
# What the build reads (pyproject.toml's backend, setup.cfg's metadata and packages): copied to a clean directory,
# so that nothing left in the checkout's build/ from an earlier build can slip into the wheel.
SOURCES = ("pyproject.toml", "setup.cfg", "README.md", "academy_consumer", "signals")
STANDALONE_ONLY = {"dj-database-url", "prometheus-client", "psycopg2-binary", "psycopg2", "psycopg", "mysqlclient"}
EXTRAS = {
    "standalone": {"dj-database-url", "prometheus-client"},
    "metrics": {"prometheus-client"},
    "postgresql": {"psycopg2-binary"},
    "mysql": {"mysqlclient"},
}


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(name="wheel", scope="module")
def wheel_fixture(tmp_path_factory):
    """The built wheel, open as a zip file."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__", "*.pyc")}
                                            if (ROOT / name).is_dir() else {}))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    (built,) = out.glob("academy_consumer-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def metadata(wheel):
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.parser.Parser().parsestr(wheel.read(name).decode("utf-8"))


def requirements(wheel):
    """``[(distribution name, extra or None)]`` of the wheel's Requires-Dist."""
    found = []
    for line in metadata(wheel).get_all("Requires-Dist") or []:
        name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line).group(1)
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", line)
        found.append((canonical(name), extra.group(1) if extra else None))
    return found


def test_the_wheel_installs_academy_consumer_and_academy_consumer_signals_only(wheel):
    tops = {name.split("/")[0] for name in wheel.namelist() if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"academy_consumer", "academy_consumer_signals"}
    modules = {name for name in wheel.namelist() if name.endswith(".py")}
    assert "academy_consumer_signals/__init__.py" in modules and "academy_consumer/apps.py" in modules
    assert not [name for name in wheel.namelist() if name.startswith("signals/")]
    # the dev stack (devstack/, academy_devstack) is a development-only package: nothing of it ships
    assert not [name for name in wheel.namelist() if "devstack" in name]


def test_the_package_data_is_in_the_wheel(wheel):
    names = set(wheel.namelist())
    schemas = sorted(path.name for path in (ROOT / "signals" / "schemas").glob("*.avsc"))
    samples = sorted(path.name for path in (ROOT / "academy_consumer" / "samples").iterdir())
    assert len(schemas) == 3 and samples
    for schema in schemas:
        assert f"academy_consumer_signals/schemas/{schema}" in names
        assert wheel.read(f"academy_consumer_signals/schemas/{schema}") == (ROOT / "signals" / "schemas" /
                                                                            schema).read_bytes()
    for sample in samples:
        assert f"academy_consumer/samples/{sample}" in names
    assert "academy_consumer/migrations/0001_initial.py" in names


def test_requires_dist_holds_nothing_of_the_standalone_service_outside_an_extra(wheel):
    found = requirements(wheel)
    plain = {name for name, extra in found if extra is None}
    assert not plain & STANDALONE_ONLY
    assert "unidecode" not in {name for name, _ in found}
    # what a host installs: the product's own imports (fastavro and urllib3 too), nothing else
    assert plain == {"django", "attrs", "confluent-kafka", "edx-django-utils", "edx-event-bus-kafka",
                     "edx-rest-api-client", "fastavro", "openedx-events", "python-slugify", "requests",
                     "text-unidecode", "urllib3"}
    extras = {}
    for name, extra in found:
        if extra is not None:
            extras.setdefault(extra, set()).add(name)
    assert extras == EXTRAS
    assert set(metadata(wheel).get_all("Provides-Extra")) == set(EXTRAS)
