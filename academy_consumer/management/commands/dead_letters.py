"""
The dead-letter topic: list its letters, or redrive them (see ``academy_consumer.dead_letters`` and
``academy_consumer.redrive`` for the rules).

    academy-consumer dead_letters list [--since ISO8601] [--error-class NAME] [--json]
    academy-consumer dead_letters redrive [--since ISO8601] [--error-class NAME] [--dry-run] [--json]

``list`` needs no database and commits nothing. Exit status: 0 done (for ``redrive``: every matching letter
applied, or back in the dead-letter topic); 1 a runtime failure (Kafka or the database unavailable, a fatal
consumer error; the batch in hand is not committed); 2 bad arguments, bad settings, no dead-letter topic.
"""

import datetime
import json

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError

from academy_consumer import conf, dead_letters, redrive
from academy_consumer.apply import _UNPRINTABLE_RE
from academy_consumer.errors import FatalError, TransientError
from academy_consumer.management.base import EXIT_ROW_ERRORS, AcademyCommand, fail
from academy_consumer.management.commands.produce_academy_event import iso_time


def _age(letter, now):
    if letter.dead_lettered_at is None:
        return "?"
    seconds = int((now - letter.dead_lettered_at).total_seconds())
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds}s"


def _safe(text):
    """Text from a message as printed: control characters and unpaired surrogates become U+FFFD, so a header
    can neither forge a line nor send a terminal escape (--json needs none of this: JSON escapes them)."""
    return _UNPRINTABLE_RE.sub("\ufffd", str(text))


def _line(letter, now):
    where = f"{_safe(letter.original_topic)}[{letter.original_partition}]@{letter.original_offset}"
    count = f" redriven {letter.redrive_count}x" if letter.redrive_count else ""
    return (f"[{letter.partition}]@{letter.offset} {_age(letter, now)} ago from {where} {_safe(letter.event_type)} "
            f"{_safe(letter.academy_uuid)}: {_safe(letter.error_class)}: {_safe((letter.error_message or '')[:300])}"
            f"{count}")


class Command(AcademyCommand):
    """``dead_letters list`` and ``dead_letters redrive``."""
    help = "List the dead-letter topic, or redrive its letters through the consumer's apply path."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", metavar="list|redrive")
        actions.required = True
        for name, text in (("list", "Print every dead letter (reads to the current end; commits nothing)."),
                           ("redrive", "Re-apply dead letters; what fails again goes back to the topic.")):
            sub = actions.add_parser(name, help=text, description=text)
            # Late-bound: the base command replaces parser.error (a one-line error) after add_arguments.
            sub.error = lambda message: parser.error(message)  # pylint: disable=unnecessary-lambda
            sub.add_argument("--since", type=iso_time, metavar="ISO8601",
                             help="Only letters dead-lettered at or after this time.")
            sub.add_argument("--error-class", metavar="NAME",
                             help="Only letters of this dlq-error-class (full name or last part).")
            sub.add_argument("--json", action="store_true", dest="as_json", help="One JSON object.")
            if name == "redrive":
                sub.add_argument("--dry-run", action="store_true",
                                 help="Report what would happen; apply, re-dead-letter and commit nothing.")

    def execute(self, *args, **options):
        self.needs_database = options.get("action") != "list"
        return super().execute(*args, **options)

    def handle(self, *args, **options):
        try:
            conf.require_event_bus(registry=options["action"] == "redrive")  # a setting fault: exit 2, not 1
            if options["action"] == "list":
                self._list(options)
            else:
                self._redrive(options)
        except dead_letters.NoTopic as exc:
            raise fail(str(exc)) from exc
        except ImproperlyConfigured as exc:
            raise fail(f"event bus not configured: {exc} (run `academy-consumer devstack` for a local one)") from exc
        except (dead_letters.KafkaUnavailable, FatalError, TransientError, DatabaseError) as exc:
            raise fail(f"dead_letters {options['action']} stopped: {exc}", EXIT_ROW_ERRORS) from exc

    def _list(self, options):
        """Print the dead letters (or one JSON object)."""
        letters = dead_letters.list_letters(options["since"], options["error_class"])
        now = datetime.datetime.now(datetime.timezone.utc)
        if options["as_json"]:
            self.stdout.write(json.dumps(
                {"count": len(letters), "letters": [letter.as_dict(now) for letter in letters]}, indent=2))
            return
        for letter in letters:
            self.stdout.write(_line(letter, now))
        pending = sum(1 for letter in letters if not letter.redriven)
        self.stdout.write(f"{len(letters)} dead letter(s), {pending} not redriven yet")

    def _redrive(self, options):
        """Redrive the matching letters and print each outcome and the counts."""
        results = redrive.Redrive(since=options["since"], error_class=options["error_class"],
                                  dry_run=options["dry_run"]).redrive()
        counts = {}
        for result in results:
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
        back = sum(1 for result in results if result.back_in_dlq)
        if options["as_json"]:
            self.stdout.write(json.dumps({"dry_run": options["dry_run"], "counts": counts,
                                          "back_in_dead_letter_topic": back,
                                          "letters": [result.as_dict() for result in results]}, indent=2))
            return
        now = datetime.datetime.now(datetime.timezone.utc)
        for result in results:
            reason = f" ({_safe(result.reason[:300])})" if result.reason else ""
            self.stdout.write(f"{result.outcome}{reason}: {_line(result.letter, now)}")
        summary = ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or "nothing to redrive"
        verb = "would redrive" if options["dry_run"] else "redrove"
        self.stdout.write(f"{verb} {len(results)} dead letter(s): {summary}; {back} back in the dead-letter topic")
