"""ecomstream: a real-time e-commerce order pipeline (Kafka -> Spark -> Delta)."""

__version__ = "0.1.0"
