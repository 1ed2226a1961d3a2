"""
Django system checks of the settings academy-consumer reads, under any settings module: a host's
``manage.py check`` (and ``migrate``, ``runserver``, which run the checks) reports each bad value as an
``Error`` naming the setting, with an id of its own (``academy_consumer.E001``...), which a host can list in
``SILENCED_SYSTEM_CHECKS``. Registered by ``AcademyConsumerConfig.ready``.

The values are checked by the accessors of ``academy_consumer.conf`` (``conf.problems()``), the same code
that reads them at run time, so the check and the commands never disagree. The app's own commands skip
Django's checks and still stop at a bad setting with one line and exit 2 (``conf.check_all()``).

The catalog API's settings (``ENTERPRISE_CATALOG_URL``, ``SOCIAL_AUTH_EDX_OAUTH2_URL_ROOT``,
``BACKEND_SERVICE_EDX_OAUTH2_PROVIDER_URL``, ``BACKEND_SERVICE_EDX_OAUTH2_KEY`` / ``_SECRET``) are the host's:
a host's base or test settings may hold placeholders there (enterprise-access: ``''`` and ``'replace-me'``),
and only ``reconcile_academies`` without ``--from-file`` needs them (it says in one line, exit 2, what is
missing). So they are no ``Error`` that would stop the host's ``migrate``: ``check --deploy`` (production
settings) shows one ``Warning``, ``academy_consumer.W001``, when reconcile could not read the catalog API.
"""

from django.core.checks import Error, Warning  # pylint: disable=redefined-builtin
from django.core.exceptions import ImproperlyConfigured

from academy_consumer import conf

# The id of each setting's check. Ids are never reused or renumbered (a host may silence one): a new setting
# takes the next number; tests/test_host_checks.py fails for a setting of conf.SETTING_NAMES not listed here.
CHECK_IDS = {
    "ACADEMY_EVENTS_TOPIC": "academy_consumer.E001",
    "ACADEMY_EVENTS_DLQ_TOPIC": "academy_consumer.E002",
    "ACADEMY_CONSUMER_GROUP_ID": "academy_consumer.E003",
    "ACADEMY_CONSUMER_GROUP_INSTANCE_ID": "academy_consumer.E004",
    "ACADEMY_CONSUMER_BATCH_SIZE": "academy_consumer.E005",
    "ACADEMY_CONSUMER_BATCH_WAIT_SECONDS": "academy_consumer.E006",
    "ACADEMY_CONSUMER_RETRY_MAX_SECONDS": "academy_consumer.E007",
    "ACADEMY_CONSUMER_KAFKA_CONFIG": "academy_consumer.E008",
    "ACADEMY_PRODUCER_FLUSH_TIMEOUT_SECONDS": "academy_consumer.E009",
    "ACADEMY_CONSUMER_MAX_CONSECUTIVE_DEAD_LETTERS": "academy_consumer.E010",
    "ACADEMY_CONSUMER_MAX_FUTURE_SECONDS": "academy_consumer.E011",
    "ACADEMY_MAX_INPUT_BYTES": "academy_consumer.E012",
    "ACADEMY_CONSUMER_METRICS_PORT": "academy_consumer.E013",
    "ACADEMY_CONSUMER_METRICS_HOST": "academy_consumer.E014",
    "ACADEMY_CONSUMER_UNHEALTHY_AFTER_SECONDS": "academy_consumer.E015",
    "ENTERPRISE_CUSTOMER_UUID": "academy_consumer.E016",
    "ACADEMY_CONSUMER_BROKER_SILENCE_SECONDS": "academy_consumer.E017",
}
CATALOG_API_ID = "academy_consumer.W001"
UNLISTED_ID = "academy_consumer.E000"  # a setting missing from CHECK_IDS (a test keeps this from happening)
HINT = "academy_consumer/conf.py documents the setting; docs/how-tos/run-inside-a-host.md says where it is set."


def check_settings(app_configs=None, **kwargs):
    """Django system check: an ``Error`` for each setting ``conf`` reads whose value is not what it takes."""
    if app_configs is not None and not any(config.name == "academy_consumer" for config in app_configs):
        return []
    return [Error(message, hint=HINT, obj=name, id=CHECK_IDS.get(name, UNLISTED_ID))
            for name, message in conf.problems()]


def check_catalog_api(app_configs=None, **kwargs):
    """Django deploy check (``check --deploy``): a ``Warning`` when reconcile could not read the catalog API."""
    if app_configs is not None and not any(config.name == "academy_consumer" for config in app_configs):
        return []
    problems = [message for _, message in conf.problems(conf.HOST_OWNED_SETTING_NAMES)]
    if not problems:
        try:
            conf.catalog_api()
        except ImproperlyConfigured as exc:
            problems.append(str(exc))
    if not problems:
        return []
    return [Warning(f"reconcile_academies cannot read the catalog API: {'; '.join(problems)}",
                    hint="Set them for reconcile_academies without --from-file (the host's own OAuth2 client "
                         "names; see docs/how-tos/run-inside-a-host.md).", id=CATALOG_API_ID)]
