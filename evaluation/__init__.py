"""How good the lake's content is, measured on the shared development corpus.

One module per question (extraction, language, entities, metadata, duplicates), each a
pure function of the corpus returning figures; `report` runs them all for
`newsflow evaluate` and the evaluation gate in the test suite.
"""
