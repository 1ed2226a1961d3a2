"""Django app configuration."""

from django.apps import AppConfig


class AcademyConsumerConfig(AppConfig):
    """Keeps the local EnterpriseAcademy table in step with the Enterprise Catalog."""

    name = "academy_consumer"
    verbose_name = "Academy consumer"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Connect the academy signal receivers, for our consumer and for openedx-events' consume_events.
        from academy_consumer import receivers  # pylint: disable=import-outside-toplevel,unused-import
