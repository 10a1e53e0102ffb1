"""The contract's names (../shared/CONTRACT.md §1 and §3), once, without Spark.

The producer, the Spark schemas and the dashboard all speak these names; keeping them here
means a field or a reason code cannot drift between the side that sends and the side that reads.
"""

from __future__ import annotations

# §1: every field of a well-formed order event, in the contract's order.
EVENT_FIELDS: tuple[str, ...] = (
    "order_id",
    "order_timestamp",
    "customer_id",
    "product_id",
    "product_name",
    "category",
    "price",
    "quantity",
    "currency",
    "payment_method",
    "city",
    "state",
    "country",
)

# §3: the reason codes, in contract order.
CONTRACT_REASON_CODES: tuple[str, ...] = (
    "malformed_json",
    "missing_order_id",
    "invalid_timestamp",
    "null_price",
    "invalid_price",
    "non_positive_price",
    "null_quantity",
    "invalid_quantity",
    "non_positive_quantity",
    "unknown_category",
    "total_out_of_range",
)
