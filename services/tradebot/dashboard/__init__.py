"""The Streamlit dashboard: live view of the pipeline over the HTTP API, and an interactive backtester.

It reads the live pipeline only through the tradebot HTTP API (`client.ApiClient`), never Kafka or
Redis; the backtest page runs `tradebot.backtest` in-process.
"""
