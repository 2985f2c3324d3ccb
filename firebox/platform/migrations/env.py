"""Alembic environment: runs on the connection that `Database.upgrade()` passes in."""

from alembic import context

from firebox.platform.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise ValueError("run migrations through firebox.platform.db.Database.upgrade()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
