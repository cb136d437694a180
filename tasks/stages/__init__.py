"""The processing stages, one module each, in the order an article meets them.

    fetch     S3 object -> Article records (or rejects): decoding, formats, limits
    clean     page or scraped text -> article body (trafilatura, readability, rules)
    language  body -> ISO 639-1 code (langdetect, lingua inside confusable groups)
    extract   title, author, dates, URL, entities (entities.py: the per-language models)
    enrich    counts, keyphrases (stopwords.py), content hash, near-duplicate bands

Each stage is a plain function of one `Article` (`clean_article`, `detect_language`…)
that tests call without Prefect, and a thin `@task` over a batch (`clean_batch`…) that
`batch.run_stage` fans out over the worker processes of `workers.py`. Nothing here
imports the lake (`tasks/lake/`); the flows join the two. This module imports nothing,
so importing one stage does not load the others' models.
"""
