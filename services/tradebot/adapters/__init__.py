"""Adapters: the message bus (Kafka, or in memory) and the state store (Redis, or in memory).

Services depend on the protocols in `bus` and `store`; `tradebot up --embedded` swaps in the memory
implementations, and one contract test suite runs against both.
"""
