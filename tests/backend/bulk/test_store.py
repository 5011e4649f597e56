"""backend.bulk.store: job records in Redis that a store cannot read."""

from __future__ import annotations

import json

from backend.bulk.records import JobStatus
from backend.bulk.store import REDIS_JOBS_SET, REDIS_RECORD_PREFIX, JobStore
from tests.backend.redis_helpers import redis_or_skip


def test_a_record_with_an_unknown_status_is_skipped_like_an_unreadable_file(
    tmp_path,
):
    connection = redis_or_skip()
    good = {"id": "files-0a", "kind": "files", "status": "done", "updated_at": 2.0}
    bad = {"id": "files-0b", "kind": "files", "status": "paused", "updated_at": 1.0}
    for record in (good, bad):
        connection.set(REDIS_RECORD_PREFIX + record["id"], json.dumps(record))
        connection.sadd(REDIS_JOBS_SET, record["id"])
    store = JobStore(tmp_path, connection)
    listed = store.list_records()
    assert [(r.id, r.status) for r in listed] == [("files-0a", JobStatus.DONE)]
