"""The strategy service: one `LiveStrategy` over the `ticks` topic, exactly once."""
