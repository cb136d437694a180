"""What every stage worker needs before its first article, loaded once for all of them.

The stage workers are forked from a server process that imports this module first
(`tasks/batch.py`): the stage modules (Prefect, trafilatura, lxml: ~1.7 s of imports),
the name lists, langdetect's profiles and lingua's Latin-script models (~1.3 s) load
there once, and every worker forked from it shares them instead of loading its own.

Forking is only safe from a process with no other thread (a forked child gets none of
them, and a lock one of them held stays locked), so nothing here may start one: numpy's
OpenBLAS and pyarrow's jemalloc would start theirs at import unless told not to (the
workers do no linear algebra), and lingua loads its models on the calling thread when
asked a question, not on its thread pool. tests/tasks/test_workers.py checks it.

The third-party loggers are quieted here as in the command line (`tasks/logs.py`):
`NEWSFLOW_VERBOSE`, which `newsflow --verbose` sets, reaches the workers through the
environment.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("JE_ARROW_MALLOC_CONF", "background_thread:false")

from newsflow.tasks.logs import quiet_library_loggers
from newsflow.tasks.settings import Settings
from newsflow.tasks.stages import clean, enrich, extract, language  # noqa: F401  (loaded to be shared)

quiet_library_loggers(Settings().verbose)

extract.warm_up()
language.warm_up()
