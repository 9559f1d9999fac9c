"""The executor: a paper broker filling orders exactly once, with the order log and P&L in Redis."""
