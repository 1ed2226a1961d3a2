"""
academy-consumer: keeps a local ``EnterpriseAcademy`` table current from the Enterprise Catalog.

The data path, in reading order:

* ``academy_consumer.normalize`` -- pure functions: any catalog payload -> normalized academy or rejection.
* ``academy_consumer.apply``     -- the thin database layer: idempotent, stale-guarded upsert and full sync.
* ``academy_consumer.catalog``   -- the catalog REST client used by ``reconcile_academies``.
"""

__version__ = "0.1.0"
