"""``ecomstream reprocess`` in-process: bronze written by the stream's batch, then rebuilt under
another window, another catalogue or both, and compared with the plain-Python contract model
(tests/unit/contract_model.py) row for row; a reprocess dying at each of its points in turn and
finished by the next run; the dry run writing nothing.

The in-process "death" raises out of the crash hook (:func:`ecomstream.jobs.batch.crash_point`)
where the real hook ends the process: what committed before it stays, nothing after it runs.
tests/integration/test_reprocess.py kills real processes.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ecomstream.adapters.local import LocalEnvironment
from ecomstream.catalogue import DEFAULT_CATEGORIES
from ecomstream.errors import EcomstreamError
from ecomstream.jobs import batch as batch_module
from ecomstream.jobs import pipeline, staging
from ecomstream.jobs.batch import CRASH_HOOK_ENV, MedallionBatch
from ecomstream.jobs.reprocess import Rebuild, ReprocessSettings, read_binding
from ecomstream.jobs.reprocess_report import dry_run
from ecomstream.jobs.settings import PipelineSettings
from tests.integration.test_pipeline_checks import assert_exact, metrics_rows, order, record
from tests.unit.order_strategies import Record, kafka_frame

TOPIC = "orders"
WITH_CARS = (*DEFAULT_CATEGORIES, "Cars")


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(CRASH_HOOK_ENV, raising=False)
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if previous is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = previous
    time.tzset()


def payloads(seed: int, n: int) -> list[tuple[bytes | None, bytes]]:
    """Orders over ten minutes: unknown categories ("Cars"), rejected ones, re-sends (some of a
    "Cars" order, which a catalogue with Cars makes duplicates), malformed JSON."""
    rng = random.Random(seed)
    out: list[tuple[bytes | None, bytes]] = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.12 and out:
            out.append(rng.choice(out))
        elif roll < 0.25:
            out.append(record(order(f"o-{i}", rng.uniform(0, 10), category="Cars")))
        elif roll < 0.3:
            out.append(record(order(f"o-{i}", rng.uniform(0, 10), price="abc")))
        elif roll < 0.33:
            out.append(record("{broken"))
        else:
            category = rng.choice(["Books", "Toys"])
            quantity = rng.randint(1, 4)
            out.append(
                record(order(f"o-{i}", rng.uniform(0, 10), category=category, quantity=quantity))
            )
    return out


def environment(spark: Any, data_dir: Path) -> LocalEnvironment:
    env = LocalEnvironment(bootstrap_servers="x:1", topic=TOPIC, data_dir=data_dir)
    env._spark = spark
    env.kafka_end_offsets = lambda: None  # type: ignore[method-assign]  # no broker here
    return env


def streamed(
    spark: Any, data_dir: Path, sent: list[tuple[bytes | None, bytes]], partitions: int = 2
) -> LocalEnvironment:
    """A data dir as the pipeline leaves it after three batches of ``sent`` (default settings),
    its records spread round-robin over ``partitions``."""
    env = environment(spark, data_dir)
    settings = PipelineSettings(topic=TOPIC, data_dir=data_dir, bootstrap_servers="x:1")
    data_dir.mkdir(parents=True)
    env.bind(TOPIC, settings.window, settings.categories)
    pipeline.ensure_tables(spark, env, settings)
    offsets = [0] * partitions
    records = []
    for i, (key, value) in enumerate(sent):
        p = i % partitions
        records.append(Record(p, offsets[p], value, key, TOPIC))
        offsets[p] += 1
    batch = MedallionBatch(env, settings, writer="w")
    try:
        third = len(records) // 3 + 1
        for b, start in enumerate(range(0, len(records), third)):
            batch.process(kafka_frame(spark, records[start : start + third]), b)
    finally:
        batch.close()
    return env


def reprocess(env: LocalEnvironment, **options: Any) -> int:
    settings = ReprocessSettings(data_dir=env.data_dir, chunk_rows=40, **options)
    return Rebuild(env, settings, read_binding(env)).run()


@pytest.mark.parametrize(
    "options",
    [
        {"window": "5 minutes"},
        {"categories": WITH_CARS},
        {"window": "30 seconds", "categories": ("Books", "Cars")},
    ],
    ids=["window", "catalogue", "both"],
)
def test_rebuilt_tables_are_the_models(spark: Any, tmp_path: Path, options: dict[str, Any]):
    sent = payloads(1, 150)
    # two partitions, three batches: where a later batch brings a lower (partition, offset) of
    # an order id, the stream kept the first consumed; the rebuild is what a new pipeline
    # reading every record in one batch writes, the model's lowest (partition, offset)
    env = streamed(spark, tmp_path / "d", sent)

    assert reprocess(env, **options) == 0
    window = options.get("window", "1 minute")
    categories = options.get("categories", DEFAULT_CATEGORIES)
    counts = assert_exact(env.data_dir, sent, window=window, categories=categories)

    # the binding records the new settings; the staging area is gone
    binding = json.loads((env.data_dir / "_ecomstream.json").read_text())
    assert (binding["window"], binding["categories"]) == (window, list(categories))
    assert not (env.data_dir / staging.FOLDER).exists()
    # every rebuilt table is marked as holding bronze's newest batch of bronze's writer
    for key in ("silver/orders", "silver/quarantine", "gold/category_sales"):
        assert env_mark(env, key) == ("w", 2)
    # status adds the metrics rows up: they agree with the new tables, and show the reprocess
    rows = metrics_rows(env.data_dir)
    silver = [r for r in rows if r.query == "silver"]
    assert sum(r.silver_rows for r in silver) == counts["silver"]
    assert sum(r.quarantine_rows for r in silver) == counts["quarantine"]
    assert sum(r.duplicates_dropped for r in silver) == counts["duplicates"]
    assert sum(r.input_rows for r in rows if r.query == "bronze") == len(sent)
    (done,) = [r for r in rows if r.query == "reprocess"]
    assert (done.input_rows, done.silver_rows) == (len(sent), counts["silver"])
    from ecomstream.demo.status import render_text
    from ecomstream.status_cli import current

    status, _ = current(env.data_dir)
    assert status.silver_total == counts["silver"]
    assert f"{len(sent)} bronze rows read" in render_text(status)


def env_mark(env: LocalEnvironment, key: str) -> tuple[str, int] | None:
    from ecomstream.jobs.checkpoint_state import table_state

    mark = table_state(env, key, env.spark).mark
    return None if mark is None else (mark.writer, mark.batch)


class Died(BaseException):
    """What the in-process crash hook raises (the real one ends the process)."""


POINTS = (
    "silver/orders:1",  # staging: chunk 1's silver committed, its gold not necessarily
    "staged",  # every chunk staged, no table switched
    "switch/silver/orders",  # the switch half done: quarantine and silver new, gold old
    "moved/gold/category_sales",  # its staged files moved into the table, not yet committed
    "switch/metrics/pipeline_batches",  # every table switched, the binding not yet written
    "binding",  # the binding written, the staging area still there
)


def test_death_at_every_point_then_rerun_is_exact(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    sent = payloads(2, 150)
    env = streamed(spark, tmp_path / "d", sent)
    hook_at = {"point": ""}

    def crash_point(point: str, batch_id: int) -> None:
        name, _, batch = hook_at["point"].partition(":")
        if point == name and (not batch or int(batch) == batch_id):
            raise Died(point)

    monkeypatch.setattr(batch_module, "crash_point", crash_point)
    window, categories = "5 minutes", WITH_CARS
    for point in POINTS:
        hook_at["point"] = point
        with pytest.raises(Died):
            reprocess(env, window=window, categories=categories)
        # until the reprocess finishes, the pipeline refuses to start, with one line
        with pytest.raises(EcomstreamError, match="has not finished"):
            staging.refuse_unfinished(env)
        if point in ("silver/orders:1", "staged"):  # nothing switched: the old tables whole
            assert_exact(env.data_dir, sent)
    hook_at["point"] = ""
    assert reprocess(env, window=window, categories=categories) == 0
    assert_exact(env.data_dir, sent, window=window, categories=categories)
    staging.refuse_unfinished(env)
    # one reprocess row, however many runs it took
    assert len([r for r in metrics_rows(env.data_dir) if r.query == "reprocess"]) == 1


def test_another_reprocess_while_one_is_switching_is_refused(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    sent = payloads(3, 60)
    env = streamed(spark, tmp_path / "d", sent, partitions=1)

    def crash_point(point: str, batch_id: int) -> None:
        if point == "switch/silver/orders":
            raise Died(point)

    monkeypatch.setattr(batch_module, "crash_point", crash_point)
    with pytest.raises(Died):
        reprocess(env, window="5 minutes")
    monkeypatch.undo()
    with pytest.raises(EcomstreamError, match="was switching tables"):
        reprocess(env, window="10 minutes")
    assert reprocess(env, window="5 minutes") == 0
    assert reprocess(env, window="10 minutes") == 0  # and then the other one
    assert_exact(env.data_dir, sent, window="10 minutes")


def test_dry_run_prints_the_change_and_writes_nothing(
    spark: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    sent = payloads(4, 80)
    env = streamed(spark, tmp_path / "d", sent, partitions=1)
    before = listing(env.data_dir)
    settings = ReprocessSettings(data_dir=env.data_dir, window="5 minutes", dry_run=True)
    assert dry_run(env, settings, read_binding(env)) == 0
    assert listing(env.data_dir) == before
    out = capsys.readouterr().out
    assert "window 1 minute -> 5 minutes" in out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    silver_now, silver_after = (int(v) for v in lines["silver/orders"])
    assert silver_now == silver_after  # the window moves gold only
    cat_now, cat_after = (int(v) for v in lines["gold/category_sales"])
    assert cat_after < cat_now  # five-minute windows: fewer rows
    # every one-minute window differs from its five-minute window
    assert int(lines["gold/category_sales:"][0]) == cat_now // 1 or "windows would change" in out


def listing(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


def test_bad_settings_are_one_line(tmp_path: Path):
    with pytest.raises(EcomstreamError, match="invalid --window"):
        ReprocessSettings(data_dir=tmp_path, window="1 month")
    from ecomstream.jobs.reprocess import run

    with pytest.raises(EcomstreamError, match="does not exist"):
        run(ReprocessSettings(data_dir=tmp_path / "nowhere"))
    with pytest.raises(EcomstreamError, match="holds no bronze/orders"):
        run(ReprocessSettings(data_dir=tmp_path))


def test_chunks_follow_partition_then_offset_and_share_a_chunk_across_partitions():
    from ecomstream.jobs.rebuild import pack

    # offsets 0-9 of partition 0, 5-7 of partition 1, four a chunk
    assert pack([(0, 0, 9), (1, 5, 7)], 4) == [
        [[0, 0, 4]], [[0, 4, 8]], [[0, 8, 10], [1, 5, 7]], [[1, 7, 8]],
    ]  # fmt: skip
    assert pack([(0, 0, 2), (1, 0, 2)], 100) == [[[0, 0, 3], [1, 0, 3]]]
    assert pack([], 10) == []


def test_an_empty_bronze_only_changes_the_binding(spark: Any, tmp_path: Path):
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    env = environment(spark, data_dir)
    settings = PipelineSettings(topic=TOPIC, data_dir=data_dir, bootstrap_servers="x:1")
    env.bind(TOPIC, settings.window, settings.categories)
    pipeline.ensure_tables(spark, env, settings)
    before = listing(data_dir / "silver")
    assert reprocess(env, window="5 minutes", categories=WITH_CARS) == 0
    binding = json.loads((data_dir / "_ecomstream.json").read_text())
    assert (binding["window"], binding["categories"]) == ("5 minutes", list(WITH_CARS))
    assert listing(data_dir / "silver") == before
    # and the pipeline's own check now takes the new settings, refuses the old ones
    env.bind(TOPIC, "5 minutes", WITH_CARS)
    with pytest.raises(EcomstreamError, match="catalogue"):
        env.bind(TOPIC, "5 minutes", DEFAULT_CATEGORIES)
    with pytest.raises(EcomstreamError, match="gold windows of '5 minutes'"):
        env.bind(TOPIC, "1 minute", WITH_CARS)
