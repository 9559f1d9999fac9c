"""The market simulator: a WebSocket server streaming JSON ticks (random walks or a CSV replay)."""
