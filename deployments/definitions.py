"""Every newsflow deployment, defined once and used by both `newsflow serve` and
`newsflow deploy` (so there is no prefect.yaml to drift from the code).

- `ingest-articles/sweep`: every 15 minutes (NEWSFLOW_SWEEP_CRON), everything new under
  the input prefix. Catches whatever no event announced.
- `ingest-articles/on-upload`: no schedule; a trigger on `newsflow.objects.created`
  events for the input bucket starts a run for just the event's keys, seconds after the
  upload.
- `backfill-articles/backfill`: manual; reprocesses a source, a date range or a prefix.
- `maintain-lake/daily`: every night (NEWSFLOW_MAINTAIN_CRON), compacts small files,
  checkpoints and vacuums the lake's Delta tables.

Overlap: runs of any deployment may write the same lake at once. Each batch is one Delta
commit per table that replaces its objects' rows, so two runs that claim the same object
leave one copy, and no run waits for another's whole duration. On top of that, the sweep,
the backfill and the maintenance run one at a time and queue the rest (ENQUEUE), so slow
sweeps cannot pile up.
Adding a deployment is one more entry in `build_deployments`.
"""

from __future__ import annotations

from typing import Any

from newsflow.deployments.events import OBJECTS_CREATED, bucket_resource_id
from newsflow.flows.backfill import backfill_articles
from newsflow.flows.ingest import ingest_articles
from newsflow.flows.maintain import maintain_lake
from newsflow.tasks.s3 import S3Location
from newsflow.tasks.settings import DeploymentSettings
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron
from prefect.types.entrypoint import EntrypointType

ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def upload_trigger(bucket: str) -> DeploymentEventTrigger:
    """Run for just the keys an objects-created event names, one run per event."""
    return DeploymentEventTrigger(
        name=f"objects created in {bucket}",
        expect={OBJECTS_CREATED},
        match={"prefect.resource.id": bucket_resource_id(bucket)},
        parameters={"keys": "{{ event.payload.object_keys }}"},
    )


def build_deployments(settings: DeploymentSettings) -> list[RunnerDeployment]:
    location = S3Location.parse(settings.input_uri)
    paths: dict[str, Any] = {"input_uri": str(location), "output_uri": settings.output_uri}
    common: dict[str, Any] = {
        "entrypoint_type": EntrypointType.MODULE_PATH,  # importable wherever newsflow is installed
        "tags": ["newsflow"],
    }
    return [
        ingest_articles.to_deployment(
            name="sweep",
            description="Everything new under the input prefix, on a schedule.",
            schedules=[Cron(settings.sweep_cron, timezone=settings.timezone, slug="sweep")],
            parameters=paths,
            concurrency_limit=ONE_AT_A_TIME,
            **common,
        ),
        ingest_articles.to_deployment(
            name="on-upload",
            description="Just the objects an upload event names, seconds after the upload.",
            triggers=[upload_trigger(location.bucket)],
            parameters=paths,
            **common,
        ),
        backfill_articles.to_deployment(
            name="backfill",
            description="Reprocess a source, date range or prefix, replacing its rows.",
            parameters=paths,
            concurrency_limit=ONE_AT_A_TIME,
            **common,
        ),
        maintain_lake.to_deployment(
            name="daily",
            description="Compact small files, checkpoint and vacuum the Delta tables.",
            schedules=[Cron(settings.maintain_cron, timezone=settings.timezone, slug="daily")],
            parameters={"output_uri": settings.output_uri},
            concurrency_limit=ONE_AT_A_TIME,
            **common,
        ),
    ]
