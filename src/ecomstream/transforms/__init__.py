"""Pure DataFrame -> DataFrame transforms, one module per medallion layer.

Nothing here reads or writes: the streaming jobs do the I/O and call these on each micro-batch,
and the tests call them on ``spark.createDataFrame`` frames.
"""

from ecomstream.transforms.bronze import to_bronze
from ecomstream.transforms.gold import category_sales, location_sales, parse_window
from ecomstream.transforms.silver import first_per_order, validate

__all__ = [
    "category_sales",
    "first_per_order",
    "location_sales",
    "parse_window",
    "to_bronze",
    "validate",
]
