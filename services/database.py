"""Every component's migrations, in the order they apply."""

from shared.migrations import Migration, MigrationSource, apply_migrations
from shared.settings import Settings

MIGRATION_SOURCES = [
    MigrationSource("messaging", "shared.schema"),
    MigrationSource("matcher", "services.matcher.migrations"),
    MigrationSource("notifier", "services.notifier.migrations"),
    MigrationSource("ingest", "services.ingest.migrations"),
    MigrationSource("console", "services.console.migrations"),
]


async def migrate(settings: Settings) -> list[Migration]:
    return await apply_migrations(settings.database_url, MIGRATION_SOURCES)
