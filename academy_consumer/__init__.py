"""
academy-consumer: keeps a local ``EnterpriseAcademy`` table current from the Enterprise Catalog.

The data path, in reading order:

* ``academy_consumer.decode``    -- one Kafka message -> an academy event (its typed record) or the reason not.
* ``academy_consumer.normalize`` -- pure functions: a catalog item or an event's record -> normalized academy
  or rejection (the source's shape, then one set of value rules).
* ``academy_consumer.apply``     -- the apply rules, once: any number of changes -> one outcome each.
* ``academy_consumer.sync``      -- a full sync with a catalog list (``reconcile_academies``), on that apply.
* ``academy_consumer.catalog``   -- the catalog REST client used by ``reconcile_academies``.
"""

__version__ = "0.1.0"
