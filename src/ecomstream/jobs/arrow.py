"""Small frames built on the driver (gold windows, metrics rows) as Arrow, for delta-rs.

A gold update is a few hundred rows the driver already holds; handing them to Spark to write
costs a DataFrame, a job, and (for an overwrite) the rebuild of the table's snapshot, about a
second here, where delta-rs (``deltalake``, already the dashboard's reader) commits the same
rows in milliseconds. The columns map one to one to the Spark schemas in :mod:`ecomstream.schemas`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from pyspark.sql import types as T


def arrow_type(spark_type: T.DataType) -> pa.DataType:
    if isinstance(spark_type, T.StringType):
        return pa.string()
    if isinstance(spark_type, T.LongType):
        return pa.int64()
    if isinstance(spark_type, T.IntegerType):
        return pa.int32()
    if isinstance(spark_type, T.BooleanType):
        return pa.bool_()
    if isinstance(spark_type, T.TimestampType):
        return pa.timestamp("us", tz="UTC")
    if isinstance(spark_type, T.DateType):
        return pa.date32()
    if isinstance(spark_type, T.DecimalType):
        return pa.decimal128(spark_type.precision, spark_type.scale)
    if isinstance(spark_type, T.MapType):
        return pa.map_(arrow_type(spark_type.keyType), arrow_type(spark_type.valueType))
    raise TypeError(f"no Arrow type for {spark_type.simpleString()}")


def arrow_schema(schema: T.StructType) -> pa.Schema:
    return pa.schema([pa.field(f.name, arrow_type(f.dataType), True) for f in schema.fields])


def to_arrow(rows: Sequence[Sequence[Any]], schema: T.StructType) -> pa.Table:
    """Rows in ``schema``'s column order (naive datetimes are UTC) -> an Arrow table."""
    names = schema.fieldNames()
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [[] for _ in names]
    target = arrow_schema(schema)
    arrays = [
        pa.array(list(values), type=field.type)
        for values, field in zip(columns, target, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=target)
