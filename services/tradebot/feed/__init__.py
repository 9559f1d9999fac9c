"""The market-data feed: WebSocket client of a price source, validating ticks onto Kafka."""
