"""
Settings for the bench's line 5h: ``consume_academy_events`` with ONE no-op host receiver of the academy signals
connected, as a host connects its own (``DJANGO_SETTINGS_MODULE=bench.host_receiver``, the repository on
``PYTHONPATH``). The standalone settings, plus this module as an app whose ``ready()`` connects ``received`` to
``ACADEMY_CREATED``, ``ACADEMY_UPDATED`` and ``ACADEMY_DELETED``. At exit, one line on stderr says how many events
it got: the bench checks it against the events the consumer applied, so the line measures what it says.
"""

import atexit
import sys

from django.apps import AppConfig

# pylint: disable=wildcard-import,unused-wildcard-import
from academy_consumer.settings import *  # noqa: F401,F403  (the standalone settings, unchanged)

INSTALLED_APPS = [*INSTALLED_APPS, "bench.host_receiver.HostReceiverConfig"]  # noqa: F405

RECEIVED = {"events": 0}
REPORT = "bench host receiver: {} event(s)"


def received(sender, **kwargs):  # pylint: disable=unused-argument
    """The no-op host receiver: counts."""
    RECEIVED["events"] += 1


class HostReceiverConfig(AppConfig):
    """Connects ``received`` to the academy signals, as a host's app would in its ``ready()``."""

    name = "bench"
    label = "bench_host_receiver"

    def ready(self):
        from academy_consumer_signals import ACADEMY_SIGNALS  # pylint: disable=import-outside-toplevel
        for signal in ACADEMY_SIGNALS:
            signal.connect(received, weak=False, dispatch_uid=f"bench-host-receiver-{signal.event_type}")
        atexit.register(lambda: sys.stderr.write(REPORT.format(RECEIVED["events"]) + "\n"))
