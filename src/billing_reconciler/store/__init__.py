"""The local store: SQLAlchemy tables, Alembic migrations, repositories; the only SQL writer."""
