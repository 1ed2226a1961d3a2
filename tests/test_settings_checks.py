"""
The app's settings under Django's system checks (``academy_consumer.checks``), as a host's ``manage.py check``
runs them: each bad value of the app's own settings is an ``Error`` naming the setting, with an id of its own;
the host's catalog API names are left to ``check --deploy``. (``tests/test_host.py`` runs ``check`` itself
through ``django-admin`` with a host's settings module.)
"""

import io

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from academy_consumer import conf
from academy_consumer.checks import CATALOG_API_ID, CHECK_IDS


def academy_issues(**kwargs):
    return [issue for issue in checks.run_checks(**kwargs) if issue.id.startswith("academy_consumer.")]


def test_every_setting_of_the_apps_own_has_an_id_of_its_own():
    own = [name for name in conf.SETTING_NAMES if name not in conf.HOST_OWNED_SETTING_NAMES]
    assert sorted(CHECK_IDS) == sorted(own), "give a new setting the next id in academy_consumer/checks.py"
    assert len(set(CHECK_IDS.values())) == len(CHECK_IDS)


def test_the_standalone_defaults_pass():
    assert academy_issues() == []
    assert academy_issues(include_deployment_checks=True) == []


def test_each_bad_setting_is_an_error_naming_it(settings):
    settings.ACADEMY_CONSUMER_BATCH_SIZE = 0
    settings.ACADEMY_CONSUMER_KAFKA_CONFIG = "{not json"
    settings.ENTERPRISE_CUSTOMER_UUID = "acme"

    issues = academy_issues()

    assert [(issue.obj, issue.id) for issue in issues] == [
        ("ENTERPRISE_CUSTOMER_UUID", "academy_consumer.E016"),
        ("ACADEMY_CONSUMER_BATCH_SIZE", "academy_consumer.E005"),
        ("ACADEMY_CONSUMER_KAFKA_CONFIG", "academy_consumer.E008"),
    ]
    assert all(issue.level == checks.ERROR and issue.obj in issue.msg for issue in issues)
    assert "not '0'" in issues[1].msg
    # the commands' start-up check says the same, in one line
    with pytest.raises(ImproperlyConfigured) as excinfo:
        conf.check_all()
    assert str(excinfo.value) == "; ".join(issue.msg for issue in issues)


def test_manage_py_check_reports_it_and_a_silenced_id_is_silenced(settings):
    settings.ACADEMY_CONSUMER_BATCH_SIZE = 0
    with pytest.raises(SystemCheckError, match=r"ACADEMY_CONSUMER_BATCH_SIZE: \(academy_consumer.E005\)"):
        call_command("check", stdout=io.StringIO(), stderr=io.StringIO())

    settings.SILENCED_SYSTEM_CHECKS = ["academy_consumer.E005"]
    call_command("check", stdout=io.StringIO(), stderr=io.StringIO())


def test_the_hosts_catalog_names_are_left_to_check_deploy(settings):
    """A host's base settings hold placeholders there: no Error that would stop its migrate, a deploy Warning."""
    settings.ENTERPRISE_CATALOG_URL, settings.SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT = "", "replace-me"

    assert academy_issues() == []
    warnings = academy_issues(include_deployment_checks=True)
    assert [(issue.id, issue.level) for issue in warnings] == [(CATALOG_API_ID, checks.WARNING)]
    assert "SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT must be an http:// or https:// URL" in warnings[0].msg

    settings.SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT = "http://lms.example.com"
    assert "set ENTERPRISE_CATALOG_URL" in academy_issues(include_deployment_checks=True)[0].msg
