"""Django app configuration."""

from django.apps import AppConfig


class AcademyConsumerConfig(AppConfig):
    """Keeps the local EnterpriseAcademy table in step with the Enterprise Catalog."""

    name = "academy_consumer"
    verbose_name = "Academy consumer"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # pylint: disable=import-outside-toplevel,unused-import
        from django.core import checks

        # Connect the academy signal receivers, for our consumer and for openedx-events' consume_events.
        from academy_consumer import receivers
        from academy_consumer.checks import check_catalog_api, check_settings

        # The app's settings, checked under any settings module (a host's `manage.py check` shows a bad one); the
        # catalog API's (the host's own names) only by `check --deploy`.
        checks.register(check_settings)
        checks.register(check_catalog_api, deploy=True)
