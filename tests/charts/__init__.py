"""Tests of the Helm chart charts/tradebot, the monitoring rules and the Grafana dashboard."""
