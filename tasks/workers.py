"""What every stage worker needs before its first article, loaded once for all of them.

The stage workers are forked from a server process that imports this module first
(`tasks/batch.py`): the stage modules (Prefect, trafilatura, lxml: ~2 s of imports), the
name lists, langdetect's profiles and lingua's models (~3 s) load there once, and every
worker forked from it shares them instead of loading its own. Forking after this is
safe because none of it starts a thread: lingua loads its models lazily, on the calling
thread, not on its thread pool (checked by tests/tasks/test_workers.py).
"""

from tasks import clean, enrich, extract, language  # noqa: F401  (imported to be shared)

extract.warm_up()
language.warm_up()
