"""The read model's storage: schema, migrations, engines, settings, the projection's rules and writer,
the query reader, the position watch, and the one dialect module that owns every SQLite/PostgreSQL
difference.

Imports only ``domain`` and ``kernel``; the forwarder writes through it and the read API reads through it.
"""
