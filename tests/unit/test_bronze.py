from __future__ import annotations

from datetime import datetime

from chispa import assert_df_equality
from hypothesis import strategies as st
from pyspark.sql import functions as F

from ecomstream.schemas import BRONZE_SCHEMA, QUARANTINE_SCHEMA
from ecomstream.transforms.bronze import to_bronze
from ecomstream.transforms.silver import validate
from tests.profiles import drawn
from tests.unit.order_strategies import KAFKA_TIME, Record, clean_order, dumps, kafka_frame


def test_bronze_keeps_every_record_exactly_with_its_coordinates(spark):
    records = [
        Record(0, 0, b'{"order_id": "a", "price": 2.50, "quantity": "3"}', key=b"a"),
        Record(0, 1, b"not json at all"),
        Record(1, 7, '{"city": "S\u00e3o Paulo"}'.encode()),
        Record(1, 8, None),
        Record(0, 2, b""),
    ]
    bronze = to_bronze(kafka_frame(spark, records))
    assert [(f.name, f.dataType) for f in bronze.schema] == [
        (f.name, f.dataType) for f in BRONZE_SCHEMA
    ]
    actual = bronze.select(
        "raw_value",
        "raw_bytes",
        "kafka_key",
        "kafka_topic",
        "kafka_partition",
        "kafka_offset",
        "kafka_timestamp",
        "event.order_id",
        "event.price",
        "event.quantity",
        "event.city",
    )
    expected = spark.createDataFrame(
        [
            (
                '{"order_id": "a", "price": 2.50, "quantity": "3"}',
                None,
                "a",
                "orders",
                0,
                0,
                KAFKA_TIME.replace(tzinfo=None),
                "a",
                "2.5",
                "3",
                None,
            ),
            (
                "not json at all",
                None,
                None,
                "orders",
                0,
                1,
                KAFKA_TIME.replace(tzinfo=None),
                None,
                None,
                None,
                None,
            ),
            (
                '{"city": "S\u00e3o Paulo"}',
                None,
                None,
                "orders",
                1,
                7,
                KAFKA_TIME.replace(tzinfo=None),
                None,
                None,
                None,
                "S\u00e3o Paulo",
            ),
            (None, None, None, "orders", 1, 8, KAFKA_TIME.replace(tzinfo=None), *[None] * 4),
            ("", None, None, "orders", 0, 2, KAFKA_TIME.replace(tzinfo=None), *[None] * 4),
        ],
        actual.schema,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_bronze_stamps_ingestion_time_now(spark):
    before = datetime.now()
    row = to_bronze(kafka_frame(spark, [Record(0, 0, b"{}")])).select("ingested_at").first()
    after = datetime.now()
    assert row is not None
    assert before.replace(microsecond=0) <= row.ingested_at <= after


def test_bronze_drops_and_adds_nothing(spark):
    records = [Record(p, o, b"x") for p in range(3) for o in range(50)]
    bronze = to_bronze(kafka_frame(spark, records))
    coordinates = bronze.groupBy("kafka_partition", "kafka_offset").agg(F.count("*").alias("n"))
    assert coordinates.count() == 150
    assert coordinates.where("n != 1").count() == 0


# --- UTF-8: raw_value is valid UTF-8, raw_bytes keeps what was not (contract §2) ---------------

# Each case: payload -> raw_value. One U+FFFD per "maximal subpart" (Unicode §3.9, the W3C/WHATWG
# practice): the longest prefix of a well-formed sequence, else a single byte. So a truncated
# sequence is one U+FFFD, while a byte that can never start or continue one (C0, C1, F5..FF) and
# each byte of an overlong, a surrogate or a code point past U+10FFFF is a U+FFFD of its own.
R = "\ufffd"
INVALID_CASES: list[tuple[bytes, str]] = [
    (b"\x80", R),  # lone continuation byte
    (b"a\xbfb", f"a{R}b"),
    (b"\x80\x80", R * 2),
    (b"\xc3", R),  # truncated 2-byte
    (b"\xe2\x82", R),  # truncated 3-byte (of U+20AC)
    (b"\xf0\x9f\x98", R),  # truncated 4-byte (of U+1F600)
    (b"\xf0\x9f\x98a", f"{R}a"),
    (b"\xe2\x82\xe2\x82\xac", f"{R}\u20ac"),  # truncated, then a whole euro sign
    (b"\xc3\x28", f"{R}("),
    (b"\xc0\x80", R * 2),  # overlong NUL
    (b"\xc1\xbf", R * 2),  # overlong
    (b"\xe0\x80\x80", R * 3),  # overlong 3-byte
    (b"\xf0\x80\x80\x80", R * 4),  # overlong 4-byte
    (b"\xed\xa0\x80", R * 3),  # surrogate U+D800
    (b"\xed\xbf\xbf", R * 3),  # surrogate U+DFFF
    (b"\xed\xa0", R * 2),  # truncated surrogate: still one per byte
    (b"\xf4\x90\x80\x80", R * 4),  # U+110000, past U+10FFFF
    (b"\xf4\x90", R * 2),
    (b"\xf5\x80\x80\x80", R * 4),
    (b"\xfe\xff", R * 2),
    (b'{"order_id": "\x00\xff"}', '{"order_id": "\x00' + R + '"}'),
]
VALID_CASES: list[bytes] = [
    b"\x00",  # NUL is valid UTF-8
    "\u20ac \U0001f600 \uffff \U0010ffff".encode(),
    b"\xef\xbf\xbd",  # U+FFFD itself, sent as such
]


def _bronze_utf8(spark, values, keys=None):  # type: ignore[no-untyped-def]
    """(raw_value bytes, raw_bytes, kafka_key bytes, event is NULL) per record, in order.

    raw_value and kafka_key are read as their bytes: collect() would decode them in the JVM,
    which would hide invalid UTF-8 (and decodes it differently, docs/rules.md)."""
    keys = keys or [None] * len(values)
    records = [Record(0, i, v, key=k) for i, (v, k) in enumerate(zip(values, keys, strict=True))]
    rows = (
        to_bronze(kafka_frame(spark, records))
        .select(
            "kafka_offset",
            F.col("raw_value").cast("binary").alias("raw_value"),
            "raw_bytes",
            F.col("kafka_key").cast("binary").alias("kafka_key"),
            F.col("event").isNull().alias("no_event"),
        )
        .collect()
    )
    out = [None] * len(values)
    for r in rows:
        out[r.kafka_offset] = (
            None if r.raw_value is None else bytes(r.raw_value),
            None if r.raw_bytes is None else bytes(r.raw_bytes),
            None if r.kafka_key is None else bytes(r.kafka_key),
            r.no_event,
        )
    return out


def _expected(value: bytes | None, key: bytes | None = None):  # type: ignore[no-untyped-def]
    """What bronze holds for (value, key): Python's decode(errors="replace") as text (as bytes),
    the value itself as raw_bytes exactly when it is not valid UTF-8."""

    def text(b: bytes | None) -> bytes | None:
        return None if b is None else b.decode("utf-8", errors="replace").encode("utf-8")

    invalid = False
    if value is not None:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            invalid = True
    return text(value), (value if invalid else None), text(key)


def test_invalid_utf8_is_replaced_per_maximal_subpart_and_kept_in_raw_bytes(spark):
    values = [v for v, _ in INVALID_CASES] + VALID_CASES + [None]
    got = _bronze_utf8(spark, values, keys=values)
    want_text = [t for _, t in INVALID_CASES] + [v.decode() for v in VALID_CASES] + [None]
    assert [None if g[0] is None else g[0].decode("utf-8") for g in got] == want_text
    assert [g[1] for g in got] == [v for v, _ in INVALID_CASES] + [None] * (len(VALID_CASES) + 1)
    assert [g[2] for g in got] == [g[0] for g in got]  # the key is repaired the same way
    # Python's decoder agrees case for case: the rule the property tests below rely on.
    assert want_text[: len(INVALID_CASES)] == [
        v.decode("utf-8", errors="replace") for v, _ in INVALID_CASES
    ]
    # an invalid payload is never parsed, even when the rest of it is a JSON object
    assert all(g[3] for g in got[: len(INVALID_CASES)])


def test_every_byte_string_up_to_two_bytes_reads_as_python_decodes_it(spark):
    values = [bytes([a]) for a in range(256)] + [
        bytes([a, b]) for a in range(256) for b in range(256)
    ]
    got = _bronze_utf8(spark, values)
    mismatches = [(v, g) for v, g in zip(values, got, strict=True) if g[:2] != _expected(v)[:2]]
    assert mismatches == []


# Pieces of a payload: arbitrary bytes, valid text (NUL included), and the invalid sequences above.
_pieces = st.one_of(
    st.binary(max_size=6),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=4).map(str.encode),
    st.sampled_from([v for v, _ in INVALID_CASES] + [b"\x00", b"\xed", b"\xf4", b"\xe0"]),
)
_payloads = st.one_of(
    st.none(),
    st.binary(max_size=24),
    st.lists(_pieces, max_size=8).map(b"".join),
    # a JSON object with the bytes inside a field: invalid UTF-8 there still means malformed
    st.lists(_pieces, max_size=4).map(
        lambda ps: dumps(clean_order(order_id="x")).encode().replace(b"A Book", b"".join(ps))
    ),
)


_pairs = st.lists(st.tuples(_payloads, st.one_of(st.none(), _payloads)), min_size=1, max_size=40)


def test_raw_value_is_pythons_replacement_and_raw_bytes_the_invalid_payload(spark):
    """Hypothesis draws lists of (value, key) (tests/profiles.py: 100 under ci), read in one
    Spark job, each list checked record for record; a failure names the smallest failing list."""
    examples_ = drawn(_pairs)
    pairs = [pair for example in examples_ for pair in example]
    got = iter(_bronze_utf8(spark, [v for v, _ in pairs], [k for _, k in pairs]))
    failed = []
    for example in examples_:
        for value, key in example:
            raw_value, raw_bytes, kafka_key, no_event = next(got)
            if (raw_value, raw_bytes, kafka_key) != _expected(value, key) or (
                raw_bytes is not None and not no_event
            ):
                failed.append((len(example), example, value, key))
                break
    if failed:
        _, example, value, key = min(failed, key=lambda f: f[0])
        got_one = _bronze_utf8(spark, [value], [key])[0]
        raise AssertionError(
            f"{len(failed)} of {len(examples_)} examples differ; the smallest {example!r} at "
            f"({value!r}, {key!r}): got {got_one!r}, expected {_expected(value, key)!r}"
        )


def test_bronze_and_quarantine_rows_of_invalid_utf8_load_in_pyarrow(spark, tmp_path):
    """Written to Delta by Spark, read back by delta-rs into pyarrow: every row loads (a string
    column holding invalid UTF-8 would fail the whole read), payloads intact in raw_bytes."""
    from deltalake import DeltaTable

    payloads = [
        b'{"order_id": "\xc3\x28"}',
        b"\xed\xa0\x80",
        dumps(clean_order(order_id="latin-1")).encode().replace(b"A Book", b"Cr\xe8me"),
        b"\xff",
        b"not json",  # valid UTF-8, quarantined: raw_bytes NULL
        dumps(clean_order(order_id="ok")).encode(),  # valid, not quarantined
    ]
    records = [Record(0, i, v, key=b"k\xff") for i, v in enumerate(payloads)]
    bronze = to_bronze(kafka_frame(spark, records))
    _, quarantined = validate(bronze)
    bronze.write.format("delta").save(str(tmp_path / "bronze"))
    quarantined.write.format("delta").save(str(tmp_path / "quarantine"))

    invalid = payloads[:4]
    for name, schema, expected in (
        ("bronze", BRONZE_SCHEMA, payloads),
        ("quarantine", QUARANTINE_SCHEMA, payloads[:5]),
    ):
        table = DeltaTable(str(tmp_path / name)).to_pyarrow_table()
        table.validate(full=True)  # among others: every string is valid UTF-8
        assert table.column_names == schema.fieldNames()
        rows = sorted(table.to_pylist(), key=lambda r: r["kafka_offset"])
        assert [r["kafka_offset"] for r in rows] == list(range(len(expected))), name
        assert [(r["raw_value"], r["raw_bytes"]) for r in rows] == [
            (p.decode("utf-8", errors="replace"), p if p in invalid else None) for p in expected
        ], name
        assert all("\ufffd" in r["raw_value"] for r in rows[:4])
        if name == "bronze":
            assert {r["kafka_key"] for r in rows} == {"k\ufffd"}
