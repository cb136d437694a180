"""newsflow's work, apart from its wiring (`flows/`): the processing stages (`stages/`),
the lake (`lake/`), and what both share: the article record and Arrow schemas
(`schema.py`), the settings (`settings.py`), the input side's S3 client (`s3.py`) and
library log levels (`logs.py`)."""
