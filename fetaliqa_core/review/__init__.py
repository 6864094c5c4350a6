"""Trainers' review: verdicts on flagged frames in SQLite (``store``) and reports (``report``)."""

from fetaliqa_core.review.store import (  # noqa: F401
    ACOUSLIC_CODE,
    AUTO,
    LABEL_FROM_CODE,
    LABELS,
    QUEUE_KINDS,
    SCHEMA_VERSION,
    ModelRun,
    ReviewPosition,
    ReviewStore,
    SweepRecord,
    Verdict,
    default_db_path,
)
