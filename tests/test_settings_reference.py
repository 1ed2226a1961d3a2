"""
The settings reference (docs/reference/settings.md) against the code: every setting the code reads is annotated,
every annotation is of a setting the code reads, and the page is what docs/settings_reference.py writes from
them. The checker itself is tried on a small package written here, so that a read it stopped seeing would fail
this file rather than pass it silently.
"""
# The annotations below are test data inside strings, which edx-lint's annotation checker reads as if they were
# comments (and then misses their default and description lines):
# pylint: disable=annotation-missing-token

import subprocess
import sys
import textwrap

import pytest

from academy_consumer import conf
from tests.helpers import ROOT, settings_reference

reference = settings_reference()


@pytest.fixture(scope="module")
def collected():
    """``reference.collect()`` of academy_consumer/: (settings by name, problems)."""
    return reference.collect()


def test_every_setting_the_code_reads_is_annotated_and_every_annotation_read(collected):
    _, problems = collected
    assert problems == []


def test_the_page_is_what_the_generator_writes():
    assert reference.check() == [], "run `make settings-reference` and commit docs/reference/settings.md"


def test_every_accessor_of_conf_is_on_the_page_as_a_host_setting(collected):
    settings, _ = collected
    assert set(conf.SETTING_NAMES) <= set(settings)
    page = reference.OUTPUT.read_text(encoding="utf-8")
    for name in conf.SETTING_NAMES:
        assert reference.scope(settings[name]) == "host and standalone"
        assert f"\n## {name}\n" in page


def test_the_settings_the_old_table_left_out_are_on_the_page_with_who_reads_them(collected):
    """Issue 18: SECRET_KEY, DEBUG, ALLOWED_HOSTS, the Kafka and registry credentials, OPENEDX_TELEMETRY and
    EVENTS_SERVICE_NAME were read but not documented."""
    settings, _ = collected
    expected = {
        "SECRET_KEY": "Django", "DEBUG": "Django", "ALLOWED_HOSTS": "Django",
        "EVENT_BUS_KAFKA_API_KEY": "edx-event-bus-kafka", "EVENT_BUS_KAFKA_API_SECRET": "edx-event-bus-kafka",
        "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_API_KEY": "edx-event-bus-kafka",
        "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_API_SECRET": "edx-event-bus-kafka",
        "EVENT_BUS_KAFKA_CONSUMERS_ENABLED": "edx-event-bus-kafka",
        "OPENEDX_TELEMETRY": "edx-django-utils", "EVENTS_SERVICE_NAME": "openedx-events",
    }
    for name, library in expected.items():
        assert library in settings[name].read_by, name
        assert "settings.py" in settings[name].read_in, name
        assert settings[name].description, name
    assert reference.scope(settings["DATABASE_URL"]) == "standalone only"
    assert reference.scope(settings["ENTERPRISE_CATALOG_URL"]) == "host and standalone"


def _package(tmp_path, files):
    """A package folder under ``tmp_path`` holding ``files`` (name: source, dedented)."""
    package = tmp_path / "pkg"
    package.mkdir()
    for name, text in files.items():
        (package / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return package


ANNOTATED = textwrap.dedent("""
    from django.conf import settings

    # .. setting_name: READ_BY_GETATTR
    # .. setting_default: None
    # .. setting_description: Read with getattr.
    A = getattr(settings, "READ_BY_GETATTR", None)
""")


@pytest.mark.parametrize("module, source, unannotated", [
    ("catalog.py", 'from django.conf import settings\nX = getattr(settings, "NEW_URL", "")\n', "NEW_URL"),
    ("catalog.py", "from django.conf import settings\nX = settings.NEW_TIMEOUT\n", "NEW_TIMEOUT"),
    ("conf.py", 'def _raw(name, default):\n    return default\nX = _raw("NEW_ACCESSOR", 1)\n', "NEW_ACCESSOR"),
    ("settings.py", 'def env(name, default=None):\n    return default\nX = env("NEW_ENV", "")\n', "NEW_ENV"),
])
def test_the_check_names_a_read_setting_without_annotation(tmp_path, module, source, unannotated):
    package = _package(tmp_path, {"reads.py": ANNOTATED, module: source})
    settings, problems = reference.collect(package)
    assert list(settings) == ["READ_BY_GETATTR"]
    assert problems == [f"{unannotated} is read in {module} but has no `.. setting_name:` annotation"]


def test_the_check_names_an_annotation_nothing_reads_and_a_stale_page(tmp_path):
    package = _package(tmp_path, {"reads.py": ANNOTATED + textwrap.dedent("""
        # .. setting_name: GONE
        # .. setting_default: 1
        # .. setting_description: No longer read.
        B = 1
        """)})
    _, problems = reference.collect(package)
    assert problems == ["GONE is annotated in reads.py but nothing in academy_consumer/ reads it"]

    page = tmp_path / "settings.md"
    settings, _ = reference.collect(package)
    page.write_text(reference.render(settings), encoding="utf-8")
    assert reference.check(package, page) == problems
    page.write_text(reference.render(settings).replace("Read with getattr.", "Edited by hand."), encoding="utf-8")
    assert reference.check(package, page)[-1].endswith("is not what `python docs/settings_reference.py` writes: "
                                                       "run it (make settings-reference)")


def test_method_arguments_in_the_settings_module_are_no_reads(tmp_path):
    package = _package(tmp_path, {"reads.py": ANNOTATED, "settings.py": """
        DATABASES = {"default": {}}
        DATABASES["default"].setdefault("OPTIONS", {})
        ENGINE = DATABASES["default"].get("ENGINE")
        """})
    assert reference.collect(package)[1] == []


@pytest.mark.stack
def test_the_script_checks_the_committed_page():
    done = subprocess.run([sys.executable, "docs/settings_reference.py", "--check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert (done.returncode, done.stderr) == (0, "")
