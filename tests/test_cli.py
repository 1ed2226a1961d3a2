"""
The console script under bad settings and missing databases, run as users run it (a subprocess): one
line on stderr, the documented exit status (1 runtime / database, 2 bad settings), no traceback, no
password, and no SQLite file left behind.
"""

import os
import sqlite3
import subprocess
import sys

import pytest

pytestmark = pytest.mark.stack  # every test here runs the console script as a subprocess

SECRET = "s3cret"
UNREACHABLE = {"mysql": f"mysql://u:{SECRET}@127.0.0.1:1/x", "postgres": f"postgres://u:{SECRET}@127.0.0.1:1/x"}
DEFAULT_FILE = "academy_consumer.sqlite3"


def run_here(cwd, *args, env=None):
    """``academy-consumer ARGS`` in ``cwd`` with no DATABASE_URL or settings module of the caller's."""
    full_env = {key: value for key, value in os.environ.items()
                if key not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "LOG_LEVEL")
                and not key.startswith(("ACADEMY_", "EVENT_BUS_", "DATABASE_"))}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "academy_consumer.cli", *args], env=full_env, cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def assert_one_line(done, status, *words):
    """Exit ``status``, exactly one line on stderr holding ``words``, no traceback, no secret."""
    assert done.returncode == status, (done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and SECRET not in done.stderr + done.stdout
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# --- bad settings: exit 2 ------------------------------------------------------------------------------

GARBAGE_URLS = ["garbage", f"mysql://u:{SECRET}/x", f"nosuchdb://u:{SECRET}@host/x", "postgres://h:99999999/x"]


@pytest.mark.parametrize("url", GARBAGE_URLS)
@pytest.mark.parametrize("args", [["--help"], ["help"], ["help", "list_academies"], ["list_academies", "--help"]])
def test_help_works_with_a_garbage_database_url(tmp_path, url, args):
    done = run_here(tmp_path, *args, env={"DATABASE_URL": url})
    assert_one_line(done, 0, "warning", "DATABASE_URL")
    assert "list_academies" in done.stdout or "--active-only" in done.stdout
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("url", GARBAGE_URLS)
@pytest.mark.parametrize("command", ["migrate", "showmigrations", "list_academies", "consume_academy_events"])
def test_garbage_database_url_is_one_line_exit_2(tmp_path, url, command):
    done = run_here(tmp_path, command, env={"DATABASE_URL": url})
    assert_one_line(done, 2, "academy-consumer: bad setting: DATABASE_URL")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name, value, command", [
    ("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS", "abc", "migrate"),
    ("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS", "-5", "list_academies"),
    ("LOG_LEVEL", "loud", "list_academies"),
    ("LOG_LEVEL", "loud", "migrate"),
    ("ACADEMY_CONSUMER_KAFKA_CONFIG", "{not json", "consume_academy_events"),
    ("ACADEMY_CONSUMER_KAFKA_CONFIG", "[1, 2]", "consume_academy_events"),
    ("ACADEMY_CONSUMER_BATCH_SIZE", "0", "consume_academy_events"),
    ("ACADEMY_CONSUMER_BATCH_SIZE", "ten", "list_academies"),
    ("ACADEMY_CONSUMER_RETRY_MAX_SECONDS", "-1", "reconcile_academies"),
    ("ACADEMY_CONSUMER_BATCH_SIZE", "0", "migrate"),  # Django's own commands too: not its system check report
    ("ENTERPRISE_CUSTOMER_UUID", "acme", "showmigrations"),
])
def test_bad_setting_is_one_line_exit_2(tmp_path, name, value, command):
    done = run_here(tmp_path, command, env={name: value})
    assert_one_line(done, 2, "bad setting", name)
    assert not list(tmp_path.iterdir())


def test_check_reports_each_bad_setting_with_its_id(tmp_path):
    """``check`` is the report: Django's system check output, an id per setting, exit 1 as Django has it."""
    done = run_here(tmp_path, "check", env={"ACADEMY_CONSUMER_BATCH_SIZE": "0", "ACADEMY_MAX_INPUT_BYTES": "x"})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "ACADEMY_CONSUMER_BATCH_SIZE: (academy_consumer.E005)" in done.stderr
    assert "ACADEMY_MAX_INPUT_BYTES: (academy_consumer.E012)" in done.stderr
    assert run_here(tmp_path, "check").returncode == 0


def test_settings_module_that_cannot_be_imported(tmp_path):
    done = run_here(tmp_path, "list_academies", env={"DJANGO_SETTINGS_MODULE": "no_such_settings_module"})
    assert_one_line(done, 2, "bad setting", "no_such_settings_module")


def test_host_settings_module_still_wins(tmp_path):
    """A host service's DJANGO_SETTINGS_MODULE is used as is: academy_consumer.settings is not read."""
    (tmp_path / "host_settings.py").write_text(
        "SECRET_KEY = 'host'\nUSE_TZ = True\n"
        "INSTALLED_APPS = ['django.contrib.contenttypes', 'django.contrib.auth', 'academy_consumer']\n"
        f"DATABASES = {{'default': {{'ENGINE': 'django.db.backends.sqlite3', "
        f"'NAME': {str(tmp_path / 'host.db')!r}}}}}\n")
    env = {"DJANGO_SETTINGS_MODULE": "host_settings", "PYTHONPATH": str(tmp_path), "DATABASE_URL": "garbage"}
    assert run_here(tmp_path, "migrate", env=env).returncode == 0
    done = run_here(tmp_path, "list_academies", env=env)
    assert done.returncode == 0, done.stderr
    assert "(0 academies)" in done.stdout
    # Django's --settings / --pythonpath options work the same
    done = run_here(tmp_path, "list_academies", "--settings=host_settings", "--pythonpath", str(tmp_path),
                    env={"DATABASE_URL": "garbage"})
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / DEFAULT_FILE).exists()


# --- database missing, unreachable or not migrated: exit 1 ---------------------------------------------

@pytest.mark.parametrize("args", [
    ["list_academies"], ["list_academies", "--json"], ["showmigrations"], ["consume_academy_events"],
    ["reconcile_academies", "--from-file", "-"],
    ["createsuperuser", "--noinput", "--username", "a", "--email", "a@b.c"],
])
def test_no_database_here_says_run_migrate_and_creates_no_file(tmp_path, args):
    done = run_here(tmp_path, *args)
    assert_one_line(done, 1, str(tmp_path / DEFAULT_FILE), "does not exist", "run `academy-consumer migrate`")
    assert not list(tmp_path.iterdir())


def test_migrate_still_creates_the_database(tmp_path):
    assert run_here(tmp_path, "migrate").returncode == 0
    assert (tmp_path / DEFAULT_FILE).exists()
    done = run_here(tmp_path, "list_academies")
    assert done.returncode == 0 and "(0 academies)" in done.stdout, done.stderr


def test_database_that_is_not_migrated(tmp_path):
    sqlite3.connect(tmp_path / DEFAULT_FILE).close()  # an empty database file
    done = run_here(tmp_path, "list_academies")
    assert_one_line(done, 1, "not migrated", "run `academy-consumer migrate`")
    done = run_here(tmp_path, "createsuperuser", "--noinput", "--username", "a", "--email", "a@b.c")
    assert_one_line(done, 1, "no such table", "run `academy-consumer migrate`")


@pytest.mark.parametrize("vendor", sorted(UNREACHABLE))
@pytest.mark.parametrize("args", [["migrate"], ["showmigrations"], ["list_academies"],
                                  ["createsuperuser", "--noinput", "--username", "a"]])
def test_unreachable_database_is_one_line_exit_1(tmp_path, vendor, args):
    done = run_here(tmp_path, *args, env={"DATABASE_URL": UNREACHABLE[vendor]})
    assert_one_line(done, 1, "127.0.0.1:1/x")
    assert not list(tmp_path.iterdir())


def test_traceback_option_still_shows_the_traceback(tmp_path):
    done = run_here(tmp_path, "migrate", "--traceback", env={"DATABASE_URL": UNREACHABLE["mysql"]})
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_unknown_command_is_one_line_exit_2(tmp_path):
    assert_one_line(run_here(tmp_path, "no_such_command"), 2, "unknown command 'no_such_command'")


def test_a_dropped_table_whose_migration_is_recorded_is_one_line(tmp_path):
    """Not one error per row or a traceback: the table is gone although Django thinks it is migrated."""
    assert run_here(tmp_path, "migrate", "--verbosity", "0").returncode == 0
    connection = sqlite3.connect(tmp_path / DEFAULT_FILE)
    connection.execute("DROP TABLE academy_consumer_enterpriseacademy")
    connection.commit()
    connection.close()
    (tmp_path / "one.json").write_text('[{"title": "Data Academy"}]')
    for args in (["reconcile_academies", "--from-file", "one.json"], ["list_academies"]):
        assert_one_line(run_here(tmp_path, *args), 1, "has no table", "--fake")


# --- devstack: a development tool, not a command of the app ----------------------------------------------

APP_COMMANDS = ["consume_academy_events", "consumer_lag", "dead_letters", "list_academies", "produce_academy_event",
                "reconcile_academies", "repair_future_timestamps"]


def test_the_apps_command_list_holds_its_operational_commands_only(tmp_path):
    """What a host's ``manage.py help`` lists of the app, here through the script (Django's own listing)."""
    done = run_here(tmp_path, "help")
    assert done.returncode == 0, done.stderr
    listed = done.stdout.split("[academy_consumer]\n", 1)[1].split("\n\n", 1)[0].split()
    assert listed == APP_COMMANDS
    assert "devstack" not in done.stdout


def test_devstack_runs_from_the_dev_package_and_help_devstack_shows_its_options(tmp_path):
    for args in (["devstack", "--help"], ["help", "devstack"]):
        done = run_here(tmp_path, *args)
        assert done.returncode == 0 and done.stderr == "", done
        assert done.stdout.startswith("usage: academy-consumer devstack ") and "--partitions" in done.stdout
    assert not list(tmp_path.iterdir())


# A production install (`pip install academy-consumer`) has no academy_devstack: simulated by blocking the import
# (a None in sys.modules makes `import academy_devstack` raise ModuleNotFoundError, as a missing package does).
WITHOUT_DEV_PACKAGE = ("import sys; sys.modules['academy_devstack'] = None; "
                       "from academy_consumer.cli import main; main()")


@pytest.mark.parametrize("args", [["devstack"], ["devstack", "--wait"], ["devstack", "--help"], ["help", "devstack"]])
def test_devstack_without_the_dev_package_is_one_line_exit_2(tmp_path, args):
    env = {key: value for key, value in os.environ.items() if key not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")}
    done = subprocess.run([sys.executable, "-c", WITHOUT_DEV_PACKAGE, *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert (done.returncode, done.stdout) == (2, ""), done
    assert done.stderr == ("academy-consumer: devstack is a development tool, installed from the repository "
                           "(`make requirements`, or `pip install -e ./devstack`), not with the academy-consumer "
                           "package\n")
    assert not list(tmp_path.iterdir())


def test_an_unreadable_devstack_env_file_is_a_bad_setting(tmp_path):
    (tmp_path / ".devstack.env").write_text("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS='127.0.0.1:1\n")
    assert_one_line(run_here(tmp_path, "list_academies"), 2, "bad setting", ".devstack.env cannot be read as a dev "
                    "stack env file (No closing quotation)")
    assert_one_line(run_here(tmp_path, "help"), 0, "warning", ".devstack.env")
