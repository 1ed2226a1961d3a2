"""
Avro deserialization of the academy events that keeps falsy values.

openedx-events' ``AvroSignalDeserializer.from_dict`` (10.5.0) only keeps a value of a field that has a
default when the value is truthy (``if sub_data or attribute.default is attr.NOTHING``), so
``is_active=False``, ``display_order=0`` and ``""`` arrive as ``None`` -- i.e. "not carried". For these
events that turns a deactivation into "absent means active" and a reset to 0 into "keep". Consumers
should use ``AcademyAvroSignalDeserializer`` (same schema, same API) instead.
"""
import io

import fastavro
from openedx_events.event_bus.avro.deserializer import AvroSignalDeserializer

from academy_consumer_signals.data import AcademyData, academy_data_from_dict


class AcademyAvroSignalDeserializer(AvroSignalDeserializer):
    """
    ``AvroSignalDeserializer`` for the academy signals whose ``from_dict`` keeps ``False``, ``0`` and ``""``.

    ``schema_string()`` is unchanged, so it plugs into ``confluent_kafka``'s ``AvroDeserializer`` the same way.
    """

    def from_dict(self, avro_record_dict):
        """Convert an Avro record dictionary to event data (``{"academy": AcademyData}``)."""
        event_data = {}
        for data_key, data_type in self.signal.init_data.items():
            if data_type is not AcademyData:  # pragma: no cover - all academy signals carry AcademyData
                raise TypeError(f"{self.signal.event_type}: unexpected data type {data_type!r} for {data_key!r}")
            event_data[data_key] = academy_data_from_dict(avro_record_dict[data_key])
        return event_data


def deserialize_bytes_to_academy_event(bytes_from_wire, signal):
    """Like ``openedx_events``' ``deserialize_bytes_to_event_data``, with ``AcademyAvroSignalDeserializer``."""
    deserializer = AcademyAvroSignalDeserializer(signal)
    as_dict = fastavro.schemaless_reader(io.BytesIO(bytes_from_wire), deserializer.schema)
    return deserializer.from_dict(as_dict)
