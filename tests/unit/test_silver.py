from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ecomstream.contract import CONTRACT_REASON_CODES
from ecomstream.schemas import KAFKA_SOURCE_SCHEMA, QUARANTINE_SCHEMA, REASON_CODES, SILVER_SCHEMA
from ecomstream.transforms.bronze import to_bronze
from ecomstream.transforms.silver import first_per_order, validate
from tests.profiles import drawn
from tests.unit import contract_model as model
from tests.unit.order_strategies import (
    Raw,
    clean_order,
    dumps,
    hostile_streams,
    kafka_frame,
    on_topics,
    payloads_to_records,
    streams,
)


def _split(spark, payloads):
    bronze = to_bronze(kafka_frame(spark, payloads_to_records(payloads)))
    return validate(bronze)


def _with(**changes):
    event = clean_order(order_id="o-1")
    for name, value in changes.items():
        if value is _ABSENT:
            del event[name]
        else:
            event[name] = value
    return dumps(event)


_ABSENT = object()

# payload -> reasons (empty: valid). Every contract rule, the edge cases the brief names, and
# the decisions docs/rules.md records (2.0 is an integer, no offset means UTC, HALF_UP).
CASES: list[tuple[str | None, list[str]]] = [
    (_with(), []),
    (None, ["malformed_json"]),
    ("", ["malformed_json"]),
    ("   ", ["malformed_json"]),
    ("not json", ["malformed_json"]),
    ("[1, 2]", ["malformed_json"]),
    ('[{"order_id": "x"}]', ["malformed_json"]),
    ("42", ["malformed_json"]),
    ('"a string"', ["malformed_json"]),
    ("true", ["malformed_json"]),
    ("null", ["malformed_json"]),
    (_with() + " trailing", ["malformed_json"]),
    (_with() + _with(), ["malformed_json"]),
    (_with()[:-1], ["malformed_json"]),
    ("{'order_id': 'x'}", ["malformed_json"]),
    ('{"price": NaN}', ["malformed_json"]),
    ('{"price": 01}', ["malformed_json"]),
    (_with()[:-1] + ', "quantity": "x"}', ["invalid_quantity"]),  # duplicate name: last wins
    (_with(quantity="x")[:-1] + ', "quantity": 3}', []),
    (_with(price=Raw("1234567890.1249999999999999999")), []),
    (_with(price=Raw("1234567890.1250000000000000001")), []),
    (_with(price=Raw("-1e400")), ["invalid_price", "non_positive_price"]),
    (_with(price="-Infinity"), ["invalid_price"]),
    (
        "{}",
        [
            "missing_order_id",
            "invalid_timestamp",
            "null_price",
            "null_quantity",
            "unknown_category",
        ],
    ),
    (_with(order_id=_ABSENT), ["missing_order_id"]),
    (_with(order_id=None), ["missing_order_id"]),
    (_with(order_id=""), ["missing_order_id"]),
    (_with(order_id=" \t\n"), ["missing_order_id"]),
    (_with(order_timestamp=_ABSENT), ["invalid_timestamp"]),
    (_with(order_timestamp=None), ["invalid_timestamp"]),
    (_with(order_timestamp="yesterday"), ["invalid_timestamp"]),
    (_with(order_timestamp="2026"), ["invalid_timestamp"]),
    (_with(order_timestamp="2026-11-25"), ["invalid_timestamp"]),
    (_with(order_timestamp="2026-02-30T10:00:00Z"), ["invalid_timestamp"]),
    (_with(order_timestamp="2026-11-25T24:00:00Z"), ["invalid_timestamp"]),
    (_with(order_timestamp="2026-11-25T10:00:00+01:00"), []),
    (_with(order_timestamp="2026-11-25T10:00:00"), []),
    (_with(price=_ABSENT), ["null_price"]),
    (_with(price=None), ["null_price"]),
    (_with(price="abc"), ["invalid_price"]),
    (_with(price=Raw("true")), ["invalid_price"]),
    (_with(price={"amount": 1}), ["invalid_price"]),
    (_with(price=[1]), ["invalid_price"]),
    (_with(price="Infinity"), ["invalid_price"]),
    (_with(price=Raw("1e400")), ["invalid_price"]),
    (_with(price=Raw("10000000000")), ["invalid_price"]),
    (_with(price=Raw("-10000000000")), ["invalid_price", "non_positive_price"]),
    (_with(price=Raw("0")), ["non_positive_price"]),
    (_with(price="-3.5"), ["non_positive_price"]),
    (_with(price=Raw("0.004")), ["non_positive_price"]),
    (_with(price=Raw("0.005")), []),
    (_with(price=Raw("9999999999.99")), []),
    (_with(quantity=_ABSENT), ["null_quantity"]),
    (_with(quantity=None), ["null_quantity"]),
    (_with(quantity=Raw("2.5")), ["invalid_quantity"]),
    (_with(quantity="2.5"), ["invalid_quantity"]),
    (_with(quantity="abc"), ["invalid_quantity"]),
    (_with(quantity=Raw("true")), ["invalid_quantity"]),
    (_with(quantity={}), ["invalid_quantity"]),
    (_with(quantity=Raw("2147483648")), ["invalid_quantity"]),
    (_with(quantity=Raw("-2.5")), ["invalid_quantity", "non_positive_quantity"]),
    (_with(quantity="2.0000000000000000000000000000001"), ["invalid_quantity"]),
    (_with(quantity=Raw("2.0")), []),
    (_with(quantity=Raw("1e2")), []),
    (_with(quantity=" 7 "), []),
    (_with(quantity=Raw("0")), ["non_positive_quantity"]),
    (_with(quantity="-1"), ["non_positive_quantity"]),
    (_with(category="books"), ["unknown_category"]),
    (_with(category=_ABSENT), ["unknown_category"]),
    (_with(price=Raw("9999999999.99"), quantity=Raw("1000")), ["total_out_of_range"]),
    (
        dumps(
            {
                "order_id": "",
                "order_timestamp": "x",
                "price": "y",
                "quantity": Raw("-1"),
                "category": "Nope",
            }
        ),
        [
            "missing_order_id",
            "invalid_timestamp",
            "invalid_price",
            "non_positive_quantity",
            "unknown_category",
        ],
    ),
    (
        dumps({"price": None, "quantity": "q"}),
        [
            "missing_order_id",
            "invalid_timestamp",
            "null_price",
            "invalid_quantity",
            "unknown_category",
        ],
    ),
]


def test_reasons_follow_the_contract_in_contract_order(spark):
    valid, quarantined = _split(spark, [payload for payload, _ in CASES])
    got: dict[int, list[str]] = {r.kafka_offset: list(r.reasons) for r in quarantined.collect()}
    for r in valid.select("kafka_offset").collect():
        assert r.kafka_offset not in got, f"offset {r.kafka_offset} is both valid and quarantined"
        got[r.kafka_offset] = []
    mismatches = [
        (payload, expected, got.get(offset))
        for offset, (payload, expected) in enumerate(CASES)
        if got.get(offset) != expected
    ]
    assert mismatches == []


def test_the_model_agrees_with_the_examples():
    # The plain-Python model is the oracle of the property tests: hold it to the same examples.
    got = [
        (payload, model.check(payload.encode() if isinstance(payload, str) else payload)[0])
        for payload, _ in CASES
    ]
    assert got == [(payload, expected) for payload, expected in CASES]


def test_a_valid_order_becomes_a_typed_silver_row(spark):
    payload = dumps(
        clean_order(order_id="o-9", price="19.995", quantity="3")
        | {"order_timestamp": "2026-11-25T23:30:15.1234567-02:00", "extra": {"ignored": True}}
    )
    valid, quarantined = _split(spark, [payload])
    assert quarantined.count() == 0
    assert [(f.name, f.dataType) for f in valid.schema] == [
        (f.name, f.dataType) for f in SILVER_SCHEMA
    ]
    actual = valid.drop("kafka_timestamp", "ingested_at")
    expected = spark.createDataFrame(
        [
            (
                "o-9",
                datetime(2026, 11, 26, 1, 30, 15, 123456),
                "C-1",
                "P-1",
                "A Book",
                "Books",
                Decimal("20.00"),
                3,
                "USD",
                "paypal",
                "Austin",
                "TX",
                "US",
                Decimal("60.00"),
                date(2026, 11, 26),
                1,
                "under_25",
                "orders",
                0,
                0,
            )
        ],
        actual.schema,
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_quarantine_keeps_the_payload_and_coordinates(spark):
    _, quarantined = _split(spark, ["garbage", _with(price="x")])
    assert [f.name for f in quarantined.schema] == QUARANTINE_SCHEMA.fieldNames()
    rows = sorted(quarantined.collect(), key=lambda r: r.kafka_offset)
    assert [
        (r.raw_value, r.raw_bytes, r.kafka_partition, r.kafka_offset, r.order_id) for r in rows
    ] == [
        ("garbage", None, 0, 0, None),
        (_with(price="x"), None, 0, 1, "o-1"),
    ]
    assert all(r.quarantined_at is not None for r in rows)


def test_invalid_utf8_is_malformed(spark):
    payload = b'{"order_id": "\xc3\x28"}'
    valid, quarantined = _split(spark, [payload])
    assert valid.count() == 0
    rows = quarantined.select(
        "reasons", F.col("raw_value").cast("binary").alias("raw_value"), "raw_bytes"
    ).collect()
    assert [(list(r.reasons), bytes(r.raw_value), bytes(r.raw_bytes)) for r in rows] == [
        (["malformed_json"], '{"order_id": "\ufffd("}'.encode(), payload)
    ]


def test_reason_codes_are_the_contracts():
    assert REASON_CODES == CONTRACT_REASON_CODES == model.REASONS


def test_from_json_yields_valid_utf8_only(spark):
    """JSON escapes can spell a lone surrogate, which has no UTF-8: Spark's from_json (Jackson,
    then Java's encoder) turns it into "?", and a nested value's text keeps it as an escape. So
    silver's and quarantine's text fields are valid UTF-8 without any repair in silver."""
    lone = Raw('"a\\ud800b\\udc00"')
    payloads = [
        _with(order_id="s-1", product_name=lone, customer_id={"n": Raw('"\\udfff"')}),
        _with(order_id=Raw('"\\ud83d"'), price="x", product_name=Raw('"\\ud83d\\ude00"')),
    ]
    valid, quarantined = _split(spark, payloads)
    text_columns = [f.name for f in SILVER_SCHEMA if f.dataType == T.StringType()]
    row = valid.select(
        "product_name", "customer_id", *(F.is_valid_utf8(c).alias(f"ok_{c}") for c in text_columns)
    ).collect()
    assert len(row) == 1
    assert (row[0].product_name, row[0].customer_id) == ("a?b?", '{"n":"\\uDFFF"}')
    assert all(row[0][f"ok_{c}"] is not False for c in text_columns)
    assert [r.order_id for r in quarantined.collect()] == ["?"]
    # the model has no text for a nested value, so it reads the lone surrogates on their own
    assert model.check(_with(product_name=lone).encode())[1]["product_name"] == "a?b?"
    assert model.check(payloads[1].encode())[0] == ["invalid_price"]


def test_a_frame_without_raw_bytes_is_split_as_bronze_does(spark):
    """A bare (raw_value + coordinates) frame, or bronze written before raw_bytes existed, may
    hold raw_value that is not UTF-8: quarantine still gets it repaired, and its bytes."""
    payloads = [b"\xed\xa0\x80{}", _with(order_id="ok").encode()]
    kafka = kafka_frame(spark, payloads_to_records(payloads))
    bare = kafka.select(
        F.col("value").cast("string").alias("raw_value"),
        F.col("topic").alias("kafka_topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.current_timestamp().alias("ingested_at"),
    )
    valid, quarantined = validate(bare)
    assert [r.order_id for r in valid.collect()] == ["ok"]
    rows = quarantined.select(
        "reasons", F.col("raw_value").cast("binary").alias("raw_value"), "raw_bytes"
    ).collect()
    assert [(list(r.reasons), bytes(r.raw_value), bytes(r.raw_bytes)) for r in rows] == [
        (["malformed_json"], "\ufffd\ufffd\ufffd{}".encode(), payloads[0])
    ]
    assert [f.name for f in quarantined.schema] == QUARANTINE_SCHEMA.fieldNames()
    assert KAFKA_SOURCE_SCHEMA["value"].dataType == QUARANTINE_SCHEMA["raw_bytes"].dataType


def test_order_date_does_not_depend_on_the_session_time_zone(spark):
    payload = _with(order_timestamp="2026-11-25T23:30:00Z")
    previous = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "Asia/Tokyo")
    try:
        row = _split(spark, [payload])[0].select("order_date", "order_hour").first()
    finally:
        spark.conf.set("spark.sql.session.timeZone", previous)
    assert row is not None
    assert (row.order_date, row.order_hour) == (date(2026, 11, 25), 23)


@pytest.mark.parametrize("partitions", [1, 3])
def test_first_per_order_keeps_the_lowest_coordinates(spark, partitions):
    payloads = [
        _with(order_id=oid, price=price)
        for oid, price in [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"), ("b", "5"), ("a", "6")]
    ]
    records = payloads_to_records(payloads, partitions)
    valid, _ = validate(to_bronze(kafka_frame(spark, records)))
    kept = {
        r.order_id: (r.kafka_partition, r.kafka_offset, r.price)
        for r in first_per_order(valid).collect()
    }
    expected = {}
    for record, payload in sorted(
        zip(records, payloads, strict=True), key=lambda rp: (rp[0].partition, rp[0].offset)
    ):
        order_id = payload.split('"order_id": "')[1].split('"')[0]
        price = Decimal(payload.split('"price": "')[1].split('"')[0]).quantize(Decimal("0.01"))
        expected.setdefault(order_id, (record.partition, record.offset, price))
    assert kept == expected


# --- properties against the plain-Python model ---------------------------------------------

SILVER_COMPARED = [
    "order_id", "customer_id", "product_id", "product_name", "category", "price", "quantity",
    "currency", "payment_method", "city", "state", "country", "total_amount", "order_date",
    "order_hour", "price_band",
]  # fmt: skip


def _spark_outcomes(spark, streams_):
    """Per stream (the records of one topic each): (quarantine, valid rows, silver,
    quarantine's (raw_value, raw_bytes)), keyed by (partition, offset). One Spark job for them
    all: each Spark action costs 1.5-2 s of planning and code generation, the rows nothing.
    Streams are independent: ``first_per_order`` sees ids qualified by topic, so the same id in
    two streams is two orders (what it would be with one frame per stream)."""
    records = [r for stream in streams_ for r in stream]
    topics = [stream[0].topic for stream in streams_]
    assert len(set(topics)) == len(topics), "one topic per stream"
    bronze = to_bronze(kafka_frame(spark, records))
    valid, quarantined = validate(bronze)
    coordinates = ["kafka_topic", "kafka_partition", "kafka_offset"]
    fields = F.struct(*SILVER_COMPARED, F.unix_micros("order_timestamp").alias("ts_micros"))
    per_stream = valid.withColumn("order_id", F.concat_ws("/", "kafka_topic", "order_id"))
    kept = first_per_order(per_stream).select(*coordinates, F.lit(True).alias("kept"))
    valid_part = valid.join(kept, coordinates, "left").select(
        *coordinates,
        F.lit(None).cast("array<string>").alias("reasons"),
        F.lit(None).cast("binary").alias("raw_value"),
        F.lit(None).cast("binary").alias("raw_bytes"),
        fields.alias("row"),
        F.coalesce("kept", F.lit(False)).alias("kept"),
    )
    quarantine_part = quarantined.select(
        *coordinates,
        "reasons",
        F.col("raw_value").cast("binary").alias("raw_value"),  # its bytes: collect() would repair
        "raw_bytes",
        F.lit(None).cast(valid.select(fields).schema[0].dataType).alias("row"),
        F.lit(False).alias("kept"),
    )
    outcomes = {topic: ({}, {}, {}, {}) for topic in topics}
    for r in quarantine_part.unionByName(valid_part).collect():
        quarantine, valid_rows, silver, raw = outcomes[r.kafka_topic]
        key = (r.kafka_partition, r.kafka_offset)
        if r.reasons is not None:
            assert key not in quarantine, f"{key} quarantined twice"
            quarantine[key] = list(r.reasons)
            raw[key] = (
                None if r.raw_value is None else bytes(r.raw_value).decode("utf-8"),
                None if r.raw_bytes is None else bytes(r.raw_bytes),
            )
            continue
        assert key not in valid_rows, f"{key} valid twice"
        valid_rows[key] = {"kafka_partition": key[0], "kafka_offset": key[1], **r.row.asDict()}
        if r.kept:
            assert r.row.order_id not in silver, f"order {r.row.order_id} kept twice"
            silver[r.row.order_id] = key
    return [outcomes[topic] for topic in topics]


def _spark_outcome(spark, records):
    return _spark_outcomes(spark, [records])[0]


def _model_row(row):
    return {
        "kafka_partition": row["kafka_partition"],
        "kafka_offset": row["kafka_offset"],
        **{name: row[name] for name in SILVER_COMPARED},
        "ts_micros": model.epoch_micros(row["order_timestamp"]),
    }


def test_silver_and_quarantine_match_the_contract_model(spark):
    """Hypothesis draws the streams (tests/profiles.py: 100 under ci), one Spark job checks
    them all; each stream record for record: reasons, raw columns, typed and derived columns of
    valid rows, and which record per order id silver keeps."""
    streams_ = on_topics(drawn(streams(max_orders=120)))
    failed = []
    for records, outcome in zip(streams_, _spark_outcomes(spark, streams_), strict=True):
        try:
            _assert_matches_the_model(records, *outcome)
        except AssertionError as error:
            failed.append((len(records), records, error))
    if failed:
        _, records, error = min(failed, key=lambda f: f[0])
        raise AssertionError(
            f"{len(failed)} of {len(streams_)} streams differ from the contract model; the "
            f"smallest: {records!r}"
        ) from error


def _assert_matches_the_model(records, quarantine, valid_rows, silver, raw):
    expected = model.run([(r.partition, r.offset, r.value) for r in records])
    assert quarantine == expected.quarantine
    assert raw == {key: expected.raw[key] for key in expected.quarantine}
    assert valid_rows == {k: _model_row(v) for k, v in expected.valid.items()}
    assert silver == {
        oid: (row["kafka_partition"], row["kafka_offset"]) for oid, row in expected.silver.items()
    }
    # Every bronze row lands in exactly one of silver, quarantine, duplicates.
    everything = {(r.partition, r.offset) for r in records}
    in_silver = set(silver.values())
    duplicates = set(valid_rows) - in_silver
    assert in_silver.isdisjoint(quarantine)
    assert len(in_silver) + len(quarantine) + len(duplicates) == len(records)
    assert in_silver | set(quarantine) | duplicates == everything
    assert duplicates == expected.duplicates


def test_hostile_payloads_match_the_contract_model(spark):
    """Issue 11 case 5: big values, deep nesting and long numbers either side of Jackson's
    limits, 10,000 fields, long names, invalid UTF-8, NUL bytes, tombstones, empty values, drawn
    by Hypothesis among clean orders; each stream record for record against the model, in one
    Spark job. Catches the from_json limits (transforms/bronze.py) or the JVM's write limit
    (spark.lift_json_write_depth) missing: a valid JSON object past them reads as malformed."""
    streams_ = on_topics(drawn(hostile_streams()))
    failed = []
    for records, outcome in zip(streams_, _spark_outcomes(spark, streams_), strict=True):
        try:
            _assert_matches_the_model(records, *outcome)
        except AssertionError as error:
            failed.append((sum(len(r.value or b"") for r in records), records, error))
    if failed:
        _, records, error = min(failed, key=lambda f: f[0])
        shown = [(r.partition, r.offset, (r.value or b"")[:300]) for r in records]
        raise AssertionError(
            f"{len(failed)} of {len(streams_)} hostile streams differ from the contract model; "
            f"the smallest (payloads cut at 300 bytes): {shown!r}"
        ) from error


def test_the_producers_faults_land_where_the_contract_says(spark):
    """Cross-check with ``ecomstream produce``'s generator: each injected fault kind is
    quarantined with exactly that reason, clean and late orders enter silver, duplicates are
    dropped; and the plain-Python model agrees record for record."""
    generator_module = pytest.importorskip("ecomstream.producer.generator")
    generator = generator_module.OrderGenerator(
        7, fault_rate=0.5, start_time=datetime(2026, 11, 25, 10, 0), rate=100
    )
    produced = generator.batch(600)
    payloads = [value for _, value, _ in produced]
    quarantine, valid_rows, silver, _ = _spark_outcome(spark, payloads_to_records(payloads))
    expected = model.run([(0, offset, value) for offset, value in enumerate(payloads)])
    assert quarantine == expected.quarantine
    assert set(silver.values()) == {
        (r["kafka_partition"], r["kafka_offset"]) for r in expected.silver.values()
    }
    kinds_seen = set()
    for offset, (_, _, kind) in enumerate(produced):
        kinds_seen.add(kind)
        where = (0, offset)
        if kind in (None, "late"):
            assert where in set(silver.values()), (kind, payloads[offset])
        elif kind == "duplicate":
            assert where in valid_rows and where not in set(silver.values())
        else:
            assert quarantine.get(where) == [kind], (kind, payloads[offset])
    assert kinds_seen >= {None, *generator_module.FAULT_KINDS}


def test_long_number_tokens_are_read_exactly_not_through_a_double(spark):
    # As doubles both prices below are 1234567890.125 and would round to .13.
    payloads = [
        _with(order_id="low", price=Raw("1234567890.1249999999999999999"), quantity=Raw("1")),
        _with(order_id="high", price=Raw("1234567890.1250000000000000001"), quantity=Raw("1")),
        _with(order_id="int", price=Raw("0.10"), quantity=Raw("7.00000000000000000000")),
        # a lone surrogate escape elsewhere (and an escaped backslash before "udc00"): the
        # payload is still re-read exactly, though try_parse_json refuses lone surrogates
        _with(
            order_id="lone",
            product_name=Raw('"\\ud800 \\\\udc00"'),
            price=Raw("1234567890.1249999999999999999"),
            quantity=Raw("1"),
        ),
    ]
    valid, quarantined = _split(spark, payloads)
    assert quarantined.count() == 0
    got = {r.order_id: (r.price, r.quantity) for r in valid.collect()}
    assert got == {
        "low": (Decimal("1234567890.12"), 1),
        "high": (Decimal("1234567890.13"), 1),
        "int": (Decimal("0.10"), 7),
        "lone": (Decimal("1234567890.12"), 1),
    }
