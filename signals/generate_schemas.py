"""
(Re)write the checked-in Avro schemas of the academy signals, with openedx-events' own generator.

Usage::

    python -m academy_consumer_signals.generate_schemas          # write signals/schemas/<event type>_schema.avsc
    python -m academy_consumer_signals.generate_schemas --check  # exit 1 if a checked-in schema differs from the code

The files are named and generated as openedx-events' ``generate_avro_schemas`` command does
(``AvroSignalSerializer(signal).schema``, event type with ``.`` replaced by ``+``). As there, a schema
that consumers already rely on should only change compatibly (tests/test_signals.py checks it).
"""
import argparse
import json
import sys
from pathlib import Path

from openedx_events.event_bus.avro.serializer import AvroSignalSerializer

from academy_consumer_signals import ACADEMY_SIGNALS

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"


def schema_path(signal) -> Path:
    """Path of the checked-in schema of ``signal``."""
    return SCHEMAS_DIR / f"{signal.event_type.replace('.', '+')}_schema.avsc"


def generate_schema(signal) -> dict:
    """The Avro schema openedx-events generates for ``signal`` (what producers register)."""
    return AvroSignalSerializer(signal).schema


def main(argv=None) -> int:
    """Write (or with ``--check``, compare) the schema file of every academy signal."""
    parser = argparse.ArgumentParser(prog="python -m academy_consumer_signals.generate_schemas",
                                     description=__doc__.split("\n")[1])
    parser.add_argument("--check", action="store_true", help="only report schemas that differ from the code")
    args = parser.parse_args(argv)
    stale = []
    for signal in ACADEMY_SIGNALS:
        path, schema = schema_path(signal), generate_schema(signal)
        if args.check:
            if not path.exists() or json.loads(path.read_text()) != schema:
                stale.append(path)
            continue
        SCHEMAS_DIR.mkdir(exist_ok=True)
        path.write_text(json.dumps(schema, indent=2) + "\n")
        print(f"wrote {path}")
    for path in stale:
        print(f"out of date: {path} (run: python -m academy_consumer_signals.generate_schemas)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
