"""
The host's own receivers: each event the consumer applied is also sent as its openedx-events signal.

Under openedx-events' stock ``consume_events`` an academy event reaches every receiver the host connected to
``ACADEMY_CREATED`` / ``ACADEMY_UPDATED`` / ``ACADEMY_DELETED`` (a cache to drop, a notification, billing
code). ``consume_academy_events`` decodes and applies events itself; ``send_applied`` gives those receivers
the same signal, once a batch is through. The rules (docs/how-tos/host-receivers.md says them to hosts):

* When: after the batch's database transaction committed and its dead letters were acknowledged, before its
  offsets are committed. A receiver reads the rows as the batch left them; a crash between the send and the
  offset commit re-reads the batch, re-applies it (harmless) and sends again: at least once across a crash,
  once per event in a run that commits its offsets.
* Which events ("applied"): every event of the batch that decoded and was not dead-lettered, whatever its
  outcome -- created, updated, unchanged, deactivated or stale --, in offset order (so in event order per
  academy: one academy, one key, one partition). That is what the stock loop delivers, less what this
  consumer dead-letters. Not only the events that changed a row: an event re-read after a crash between the
  send and the offset commit comes back ``unchanged``; sending only changed rows would lose it for good, and
  "at least once" would not hold. A receiver that wants changes only compares with the row. Dead-lettered
  events are not sent; a redrive (``dead_letters.Redrive``) sends the letters it applies, when it applies them
  (out of their original order: the metadata's ``time`` is the event's own); a dry run sends nothing.
* What: ``signal.send_event_with_custom_metadata(metadata, send_robust=True, academy=AcademyData)``, as
  edx-event-bus-kafka's consumer sends: the metadata from the message's headers by edx-event-bus-kafka's own
  ``_get_metadata_from_headers`` (id, time, source, sourcehost, minorversion, sourcelib), with ``time`` the
  event time the apply used, in UTC (``EventsMetadata`` takes UTC only; the decoder accepts any offset), and
  the data from the decoded record (``academy_data_from_dict``: ``False``, ``0`` and ``""`` kept, unlike the
  stock deserializer). The request cache is cleared before each event, as the stock loop does per message.
* Never to the app's own receivers again: ``academy_consumer.receivers`` return at once when
  ``applied_here(metadata)`` -- a context variable holds the id of the event being sent around the send.
  Scoped to this context (thread) and this event: a host receiver that sends another academy event, a stock
  consumer or another thread still reaches the app's receivers. (Disconnecting them around the send would
  race with other threads, and calling receivers one by one would bypass openedx-events.)
* Only when it matters: a batch is skipped at once when no signal has a live receiver besides the app's own
  (and openedx-events' producer handler, which declines events from the bus), so a host without receivers
  pays nothing (checked per batch: a receiver connected at run time is seen).
* Failures: ``send_robust`` hands back ``(receiver, exception)`` pairs; each is logged (ERROR: receiver, event
  type, ce_id, academy, position), counted (``academy_consumer_host_receiver_errors_total{receiver}``) and
  recorded (edx-django-utils' ``record_exception``), then the next event is sent. Never retried: the batch is
  committed, its rows stay as applied, nothing is applied again. Under ``settings.DEBUG`` (or
  ``allow_send_event_failure()``) openedx-events sends without ``send_robust``: the first exception ends that
  event's send (the receivers after it do not get it); it is handled the same way, named after the frame it
  escaped from. An event whose metadata or data cannot be built, or that openedx-events refuses
  (``SenderValidationError``), is logged and counted under ``receiver="(not sent)"``. A disabled signal
  (``OpenEdxPublicSignal.disable()``) sends nothing, as under ``consume_events``.
* Time: receivers run in the consumer's thread; the loop waits for them (a slow receiver slows the loop, one
  that runs past half of ``max.poll.interval.ms`` makes ``/healthz`` answer 503 and the group drop the member).
"""

import contextvars
import datetime
import logging
import weakref

from django.dispatch import Signal
from edx_django_utils.cache import RequestCache

from academy_consumer import monitoring
from academy_consumer_signals import ACADEMY_SIGNALS_BY_EVENT_TYPE, academy_data_from_dict

log = logging.getLogger(__name__)

_DISPATCHER = Signal.__module__  # django.dispatch.dispatcher
NOT_SENT = "(not sent)"  # the receiver label of an event that could not be sent at all
_SENDING = contextvars.ContextVar("academy_consumer_host_signal", default=None)  # id of the event being sent


def applied_here(metadata):
    """Whether the event ``metadata`` describes is being sent by ``send_applied``: the app applied it already."""
    sending = _SENDING.get()
    return sending is not None and sending == getattr(metadata, "id", None)


def send_applied(events, monitor):
    """
    Send each applied event of a committed batch -- ``(message, AcademyEvent)`` pairs in offset order -- to the
    host's receivers of its signal; count in ``monitor``. Returns how many events were sent.
    """
    if not events:
        return 0
    signals = {event_type: signal for event_type, signal in ACADEMY_SIGNALS_BY_EVENT_TYPE.items()
               if _has_host_receivers(signal)}
    if not signals:
        return 0
    sent = 0
    for message, event in events:
        signal = signals.get(event.event_type)
        if signal is not None:
            sent += _send(signal, message, event, monitor)
    if sent:
        monitor.host_signals_sent(sent)
    return sent


def _send(signal, message, event, monitor):
    """Send one event; 1 when openedx-events sent it (whatever its receivers did), else 0."""
    try:
        metadata = _metadata(message, event)
        data = academy_data_from_dict(event.academy)
    except Exception as exc:  # pylint: disable=broad-except  # a header or value the stock loop would refuse too
        _failed(NOT_SENT, exc, event, monitor, detail="its metadata or data cannot be built")
        return 0
    RequestCache.clear_all_namespaces()
    token = _SENDING.set(metadata.id)
    try:
        responses = signal.send_event_with_custom_metadata(metadata, send_robust=True, academy=data)
    except Exception as exc:  # pylint: disable=broad-except  # DEBUG: not send_robust; or SenderValidationError
        raiser = _escaped_from(exc)
        _failed(raiser, exc, event, monitor, traceback=True,
                detail="openedx-events refused to send it" if raiser == NOT_SENT else
                "openedx-events sends without send_robust under settings.DEBUG or allow_send_event_failure(): the "
                "receivers after it did not get the event")
        return 0 if raiser == NOT_SENT else 1
    finally:
        _SENDING.reset(token)
    for receiver, response in responses:
        if isinstance(response, Exception):
            _failed(_name(receiver), response, event, monitor)
    return 1 if responses else 0


def _metadata(message, event):
    """The event's ``EventsMetadata``, from its headers as the stock consumer builds it, ``time`` in UTC."""
    headers = [(key, value) for key, value in message.headers() or () if key != "ce_time"]
    headers.append(("ce_time", event.time.astimezone(datetime.timezone.utc).isoformat().encode()))
    # The stock consumer's own header -> EventsMetadata mapping: a host receiver gets the same metadata from either
    # consumer. Internal to edx-event-bus-kafka (as its settings functions are); setup.cfg bounds it. Imported
    # here: the event bus's modules cost every command a quarter of a second of start-up (apps.ready imports us).
    # pylint: disable-next=import-outside-toplevel
    from edx_event_bus_kafka.internal.utils import _get_metadata_from_headers
    return _get_metadata_from_headers(headers)


def _failed(receiver, exc, event, monitor, *, detail="", traceback=False):
    """Log, count and record one failure; the batch stays applied and committed, the event is not sent again."""
    log.error("host receiver %s of %s failed on ce_id %s (academy %s, %s[%d]@%d): %s: %s%s; the event stays "
              "applied and is not sent again", receiver, event.event_type, event.event_id, event.who, event.topic,
              event.partition, event.offset, type(exc).__name__, " ".join(str(exc).split())[:500],
              f" ({detail})" if detail else "", exc_info=exc if traceback else None)
    monitor.host_receiver_failed(receiver)
    monitoring.record_error(exc)


# The app's own receivers: ``academy_consumer.receivers`` adds them when it is imported (``apps.ready``), so that
# this module needs no import of it (it imports this one: no import cycle).
OWN_RECEIVERS = []


def _has_host_receivers(signal):
    """
    Whether ``signal`` has a live receiver other than the app's own (``academy_consumer.receivers``) and
    openedx-events' producer handler (connected by ``EVENT_BUS_PRODUCER_CONFIG``; it declines events sent from
    the event bus, as these are: ``from_event_bus=True``).
    """
    from openedx_events.apps import general_signal_handler  # pylint: disable=import-outside-toplevel
    own = (*OWN_RECEIVERS, general_signal_handler)
    for entry in list(signal.receivers):  # (lookup key, receiver or weak reference[, is_async]) per Django version
        target = entry[1]() if isinstance(entry[1], weakref.ReferenceType) else entry[1]
        if target is not None and target not in own:
            return True
    return False


def _name(receiver):
    """``module.qualname`` of a receiver, as edx-event-bus-kafka names it."""
    try:
        return f"{receiver.__module__}.{receiver.__qualname__}"
    except AttributeError:
        return str(receiver)


def _escaped_from(exc):
    """
    The function an exception escaped into Django's dispatcher from -- the receiver (its first frame outside the
    dispatcher, whose ``send`` may call receivers from a comprehension of its own) --, or NOT_SENT when none ran.
    """
    trace, dispatching = exc.__traceback__, False
    while trace is not None:
        frame = trace.tb_frame
        in_dispatcher = frame.f_globals.get("__name__") == _DISPATCHER
        if dispatching and not in_dispatcher:
            return f"{frame.f_globals.get('__name__', '?')}.{frame.f_code.co_qualname}"
        dispatching = dispatching or in_dispatcher
        trace = trace.tb_next
    return NOT_SENT
