"""
How far a consumer group is behind on the academy topic (see ``academy_consumer.lag`` for how it is read and
what "the group does not exist" means).

    academy-consumer consumer_lag [--group-id G] [--topic T] [--timeout SECONDS] [--json]

Per partition: the group's committed offset ("none" when it has none), the end offset (high watermark) and the
lag (end minus committed; with no committed offset, end minus the low watermark); then the total. ``--json``
prints one object: ``{"topic", "group_id", "partitions": [{"partition", "committed", "end", "lag"}, ...],
"total_lag"}``. Joins no group, commits nothing, needs no database.

Exit status: 0 printed; 1 Kafka did not answer within ``--timeout`` (default 10 s); 2 bad arguments or settings,
no such topic, no such group.
"""

import json
import math

from django.core.exceptions import ImproperlyConfigured

from academy_consumer import lag
from academy_consumer.errors import BadKafkaConfig
from academy_consumer.management.base import EXIT_ROW_ERRORS, AcademyCommand, fail


def seconds(value):
    """argparse type: a finite number of seconds > 0 (``nan`` and ``inf`` are refused)."""
    number = float(value)
    if not math.isfinite(number) or number <= 0 or number > 86400:
        raise ValueError(value)
    return number


seconds.__name__ = "number of seconds (more than 0, at most 86400)"


def lines(result):
    """The human output: one aligned line per partition, then the total line."""
    rows = [(str(p.partition), "none" if p.committed is None else str(p.committed), str(p.end), str(p.lag))
            for p in result.partitions]
    total = str(result.total_lag)
    width = [max([len(row[i]) for row in rows] + [0]) for i in range(4)]
    width[3] = max(width[3], len(total))
    out = [f"partition {part:>{width[0]}}  committed {committed:>{width[1]}}  end {end:>{width[2]}}  "
           f"lag {lag_:>{width[3]}}" for part, committed, end, lag_ in rows]
    indent = len(f"partition {'':>{width[0]}}  committed {'':>{width[1]}}  end {'':>{width[2]}}  ")
    out.append(f"{'total':<{indent}}lag {total:>{width[3]}}  (group {result.group_id}, topic {result.topic})")
    return out


class Command(AcademyCommand):
    """``consumer_lag``: a group's lag per partition, read from the broker."""
    help = "Print a consumer group's committed offset, end offset and lag per partition of the academy topic."
    needs_database = False

    def add_arguments(self, parser):
        parser.add_argument("--group-id", help="Consumer group (default ACADEMY_CONSUMER_GROUP_ID).")
        parser.add_argument("--topic", help="Topic without prefix (default ACADEMY_EVENTS_TOPIC).")
        parser.add_argument("--timeout", type=seconds, default=lag.DEFAULT_TIMEOUT_SECONDS, metavar="SECONDS",
                            help=f"Longest wait for Kafka (default {lag.DEFAULT_TIMEOUT_SECONDS:g}).")
        parser.add_argument("--json", action="store_true", dest="as_json", help="One JSON object.")

    def handle(self, *args, **options):
        try:
            result = lag.read_lag(options["topic"], options["group_id"], options["timeout"])
        except (lag.NoTopic, lag.NoGroup) as exc:
            raise fail(str(exc)) from None
        except BadKafkaConfig as exc:
            raise fail(f"bad setting: {exc}") from None
        except ImproperlyConfigured as exc:
            raise fail(f"event bus not configured: {exc} (run `academy-consumer devstack` for a local one)") from None
        except lag.KafkaUnavailable as exc:
            raise fail(str(exc), EXIT_ROW_ERRORS) from None
        if options["as_json"]:
            self.stdout.write(json.dumps(result.as_dict()))
            return
        for line in lines(result):
            self.stdout.write(line)
