"""The HTTP API: orders, fills, positions, P&L and strategies from the store; halt and resume."""
