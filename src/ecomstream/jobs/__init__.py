"""The streaming jobs: the only code that reads streams and writes tables.

``bronze`` (Kafka -> bronze/orders, append), ``silver`` (bronze -> silver/orders + quarantine,
foreachBatch with an insert-only MERGE by order_id), ``gold`` (silver -> the gold tables,
foreachBatch recomputing exactly the windows a batch touched); ``pipeline`` wires them and runs
them once (``--once``) or continuously. Design notes: docs/pipeline.md.
"""
