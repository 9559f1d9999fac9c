"""The strategy service: one `CrossoverStrategy` over the `ticks` topic, exactly once."""
