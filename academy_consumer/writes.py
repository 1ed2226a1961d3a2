"""
The statements that write what a fold decided: one ``INSERT`` of the new rows, and one ``UPDATE`` of the
changed rows per set of changed columns (at most ``SHAPES`` such sets; rarer ones together in one more
statement of every column), each split only to stay under the database's parameter limit.

Called by ``apply.Fold.write`` inside a savepoint. The rows were read and locked by the fold, and no unique
value moves from one row to another within one fold (``apply.py`` stops a fold before such a change), so
the statements cannot collide with themselves; an ``IntegrityError`` means another writer or a trigger,
and ``apply.py`` decides what follows.
"""

from django.db import IntegrityError

from academy_consumer.models import EnterpriseAcademy

# Every column an upsert of a changed row writes (all but the primary key and ``created``).
WRITTEN = [field.name for field in EnterpriseAcademy._meta.concrete_fields if field.name not in ("id", "created")]
# UPDATE statements of a fold, one per set of changed columns; rows of rarer sets go in one more, of every
# column. A typical batch changes a handful of sets (a field or two, a rename, a delete, a time).
SHAPES = 6


def write_rows(db, new, existing):
    """
    Write ``new`` (model instances to insert, without ids) and ``existing`` (``(row, names of the columns to
    set)`` of rows read and locked) through ``db``, in as few statements as the shapes allow.
    """
    _Writer(db).write(new, existing)


class _Writer:
    """
    The statements of a batch, in SQL (Django's ``bulk_create`` / ``bulk_update`` compile every value of
    every row through the ORM, which cost more than the rest of the batch): plain values go as they are,
    the columns whose database form differs (uuid, time, JSON) through the field's own ``get_db_prep_save``.

    New rows: one ``INSERT`` without ids. Changed rows: ``UPDATE ... FROM (VALUES ...)`` on PostgreSQL and
    SQLite (3.33+), ``UPDATE ... JOIN (SELECT ... UNION ALL ...)`` on MariaDB/MySQL, of only the columns
    that changed (sending every column of every row cost more than the database's work); on an older
    SQLite, an upsert of every column. Each update must match all its rows (they were read and locked);
    one that does not raises ``IntegrityError`` (``apply.py`` then folds again, fewer changes at a time).
    """

    def __init__(self, db):
        self.db = db
        ops = db.ops
        self.table = ops.quote_name(EnterpriseAcademy._meta.db_table)
        fields = list(EnterpriseAcademy._meta.concrete_fields)
        self.fields = fields
        self.by_name = {field.name: field for field in fields}
        self.adapt = [field if field.get_internal_type() in ("UUIDField", "DateTimeField", "JSONField") else None
                      for field in fields]
        self.columns = [ops.quote_name(field.column) for field in fields]
        self.written = [ops.quote_name(EnterpriseAcademy._meta.get_field(name).column) for name in WRITTEN]
        self.update_from = db.vendor == "postgresql" or (
            db.vendor == "sqlite" and db.Database.sqlite_version_info >= (3, 33))

    def _values(self, rows, fields, adapt):
        """The statement parameters of ``rows`` for ``fields``, each adapted for the database."""
        params, seen, db = [], {}, self.db
        for row in rows:
            for field, adapter in zip(fields, adapt):
                value = getattr(row, field.attname)
                if adapter is not None and value is not None:
                    if isinstance(value, list):  # (JSON: not hashable)
                        value = adapter.get_db_prep_save(value, db)
                    else:  # many rows share a value (the batch's ``modified``): adapted once
                        memo = (adapter.attname, value)
                        if memo not in seen:
                            seen[memo] = adapter.get_db_prep_save(value, db)
                        value = seen[memo]
                params.append(value)
        return params

    def _chunks(self, rows, width):
        most = self.db.features.max_query_params or 60_000
        step = max(1, min(1000, most // width))
        for start in range(0, len(rows), step):
            yield rows[start:start + step]

    def write(self, new, existing):
        """``new``: rows to insert; ``existing``: ``(row, names of the columns to set)`` of rows read."""
        with self.db.cursor() as cursor:
            if new:  # the new rows, without ids (the database numbers them)
                fields, adapt = self.fields[1:], self.adapt[1:]
                row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
                for rows in self._chunks(new, len(fields)):
                    cursor.execute(f"INSERT INTO {self.table} ({', '.join(self.columns[1:])}) VALUES "
                                   + ", ".join([row_sql] * len(rows)), self._values(rows, fields, adapt))
            if not existing:
                return
            if not self.update_from and self.db.vendor != "mysql":
                self._upsert_every_column(cursor, [row for row, _ in existing])
                return
            shapes = {}
            for row, columns in existing:
                shapes.setdefault(frozenset(columns), []).append(row)
            ordered = sorted(shapes.items(), key=lambda shape: -len(shape[1]))
            groups = [(sorted(columns), rows) for columns, rows in ordered[:SHAPES]]
            rest = [row for _, rows in ordered[SHAPES:] for row in rows]
            if rest:
                groups.append((WRITTEN, rest))
            for columns, rows in groups:
                self._update(cursor, columns, rows)

    def _update(self, cursor, names, rows):
        """Update the columns ``names`` of ``rows``, in as few statements as the parameter limit allows."""
        fields = [self.fields[0], *(self.by_name[name] for name in names)]
        adapt = [self.adapt[self.fields.index(field)] for field in fields]
        quote = self.db.ops.quote_name
        columns = [quote(field.column) for field in fields]
        for chunk in self._chunks(rows, len(fields)):
            params = self._values(chunk, fields, adapt)
            if self.update_from:  # PostgreSQL, SQLite: a VALUES list joined by id
                # (SQLite names a VALUES column ``columnN`` and takes no column list; a statement that starts
                # with WITH has no rowcount in Python's sqlite3: hence the positional names)
                names = [f"column{n}" for n in range(1, len(fields) + 1)]
                row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
                sets = ", ".join(f"{column} = v.{name}{self._cast(field)}"
                                 for column, name, field in zip(columns[1:], names[1:], fields[1:]))
                alias = f"v ({', '.join(names)})" if self.db.vendor == "postgresql" else "v"
                sql = (f"UPDATE {self.table} SET {sets} FROM (VALUES {', '.join([row_sql] * len(chunk))}) AS {alias} "
                       f"WHERE {self.table}.{columns[0]} = v.{names[0]}")
            else:  # MariaDB/MySQL: a derived table joined by id
                first = "SELECT " + ", ".join(f"%s AS {column}" for column in columns)
                more = " UNION ALL SELECT " + ", ".join(["%s"] * len(columns))
                sets = ", ".join(f"t.{column} = v.{column}" for column in columns[1:])
                sql = (f"UPDATE {self.table} AS t JOIN ({first}{more * (len(chunk) - 1)}) AS v "
                       f"ON t.{columns[0]} = v.{columns[0]} SET {sets}")
            cursor.execute(sql, params)
            if cursor.rowcount != len(chunk):
                raise IntegrityError(f"an update matched {cursor.rowcount} of {len(chunk)} rows read and locked")

    def _cast(self, field):
        """PostgreSQL types a VALUES column from its literals: text (and NULL) must be cast to the column's type."""
        if self.db.vendor != "postgresql" or field.get_internal_type() in ("CharField", "TextField", "SlugField"):
            return ""
        return "::" + field.db_type(self.db)

    def _upsert_every_column(self, cursor, rows):
        """Every column of the changed rows, by id (SQLite before 3.33 has no ``UPDATE ... FROM``)."""
        row_sql = "(" + ", ".join(["%s"] * len(self.fields)) + ")"
        tail = (f" ON CONFLICT ({self.columns[0]}) DO UPDATE SET "
                + ", ".join(f"{c} = EXCLUDED.{c}" for c in self.written))
        for chunk in self._chunks(rows, len(self.fields)):
            cursor.execute(f"INSERT INTO {self.table} ({', '.join(self.columns)}) VALUES "
                           + ", ".join([row_sql] * len(chunk)) + tail, self._values(chunk, self.fields, self.adapt))
