"""The order producer: seeded realistic orders with exact fault injection, over the Kafka protocol.

``catalog`` builds Faker-backed pools once, ``generator`` turns them into records (pure),
``sender`` delivers them (kafka-python or confluent-kafka), ``progress`` reports, ``cli`` wires it.
"""
