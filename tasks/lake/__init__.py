"""The lake: `articles`, `rejects` and `ledger` as Delta Lake tables under one output root.

The flows use only what this module exports: open a lake, load its ledger (what is done),
write a batch, maintain, migrate a lake of the pre-Delta format. The stages never import
it, and nothing else imports `deltalake`.
"""

from newsflow.tasks.lake.lake import ARTICLES, LEDGER, REJECTS, TABLES, Lake, WriteReport
from newsflow.tasks.lake.ledger import Ledger, current_versions
from newsflow.tasks.lake.maintain import MaintenanceReport, maintain
from newsflow.tasks.lake.migrate import MigrationReport, NotMigratable, migrate_legacy

__all__ = [
    "ARTICLES",
    "LEDGER",
    "REJECTS",
    "TABLES",
    "Lake",
    "Ledger",
    "MaintenanceReport",
    "MigrationReport",
    "NotMigratable",
    "WriteReport",
    "current_versions",
    "maintain",
    "migrate_legacy",
]
