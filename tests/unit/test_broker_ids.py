"""The embedded broker's cluster id, made in Python rather than by a JVM of Kafka's own tool.
Every integration test that formats a new broker dir checks Kafka accepts it."""

from __future__ import annotations

import base64
import re
import uuid

from ecomstream.broker import random_cluster_id


def test_a_cluster_id_is_what_kafkas_random_uuid_prints() -> None:
    ids = [random_cluster_id() for _ in range(2_000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        # 16 bytes in URL-safe base64 without padding; never a leading "-" (Kafka's rule: a
        # command-line argument must not look like an option)
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", text), text
        assert not text.startswith("-")
        raw = base64.urlsafe_b64decode(text + "==")
        assert len(raw) == 16 and uuid.UUID(bytes=raw).version == 4
