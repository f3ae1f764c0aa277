"""The parts database: one durable record per inspected part (tables, migrations, writer, spool, queries)."""
