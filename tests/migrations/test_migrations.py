"""The migration files describe the models exactly."""

from __future__ import annotations

from tortoise.context import TortoiseContext
from tortoise.migrations.autodetector import MigrationAutodetector

from settle.core.db import APP_LABEL, MIGRATIONS_CONFIG


async def test_models_have_no_changes_without_a_migration() -> None:
    # given the models and the committed migrations
    async with TortoiseContext() as ctx:
        await ctx.init(config=MIGRATIONS_CONFIG)
        assert ctx.apps is not None
        # when the autodetector compares them, as `tortoise makemigrations` does
        detector = MigrationAutodetector(ctx.apps, MIGRATIONS_CONFIG["apps"])
        writers = await detector.changes()
    # then there is nothing left to write
    pending = [f"{writer.app_label}.{writer.name}" for writer in writers]
    assert pending == [], f"models changed without a migration ({APP_LABEL}): {pending}"


async def test_no_table_description_holds_a_semicolon() -> None:
    # given the models, whose docstrings become their tables' descriptions
    async with TortoiseContext() as ctx:
        await ctx.init(config=MIGRATIONS_CONFIG)
        assert ctx.apps is not None
        descriptions = {
            name: model._meta.table_description for name, model in ctx.apps[APP_LABEL].items()
        }
    # then none holds a semicolon: on SQLite a migration runs as a script split at each
    # one, and the rest of the description is run as a statement ("near ...: syntax error")
    assert {name: text for name, text in descriptions.items() if ";" in (text or "")} == {}
