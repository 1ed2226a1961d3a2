"""Django app configuration."""

from django.apps import AppConfig


class AcademyConsumerConfig(AppConfig):
    """Keeps the local EnterpriseAcademy table in step with the Enterprise Catalog."""

    name = "academy_consumer"
    verbose_name = "Academy consumer"
    default_auto_field = "django.db.models.BigAutoField"
