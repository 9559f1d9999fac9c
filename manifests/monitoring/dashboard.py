#!/usr/bin/env python3
"""The tradebot Grafana dashboard, generated as code.

    python manifests/monitoring/dashboard.py          # writes the dashboard JSON (and the chart's copy)
    python manifests/monitoring/dashboard.py --check  # exits 1 when either file differs from the output

Standard library only. Every metric comes from the catalogue in services/README.md (`## Metrics`);
tests/monitoring/test_dashboard.py checks the output against it. Every query must return data in a
healthy system: the services start their known label combinations at 0, and a selector that matches
only on trouble (HTTP 5xx) falls back to 0 with `or`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JSON = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = (
    Path("manifests/monitoring/grafana-dashboard.json"),
    Path("charts/tradebot/files/grafana-dashboard.json"),
)

UID = "tradebot-overview"
TITLE = "tradebot"
SCHEMA_VERSION = 39
GRID_WIDTH = 24
DATASOURCE: JSON = {"type": "prometheus", "uid": "${datasource}"}

RATE = "[$__rate_interval]"
STRATEGY = 'strategy=~"$strategy"'
# Scrape jobs of the chart's ServiceMonitor/PodMonitor are named after the release's services.
JOBS = 'job=~".*tradebot.*"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = "__auto"


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # timeseries | stat | state-timeline
    queries: Sequence[Query]
    unit: str
    width: int
    description: str = ""
    height: int = 8
    min_value: float | None = None
    max_value: float | None = None
    decimals: int | None = None
    thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),)
    mappings: Sequence[tuple[str, str, str]] = ()  # (value, text, colour)


@dataclass(frozen=True)
class Row:
    title: str
    lines: Sequence[Sequence[Panel]]


def _rate(selector: str, by: str = "") -> str:
    grouping = f"sum by ({by}) " if by else "sum"
    return f"{grouping}(rate({selector}{RATE}))"


def _quantile(q: float, bucket_selector: str, by: str = "") -> str:
    labels = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({bucket_selector}{RATE})))"


def _s(metric: str) -> str:
    """A selector on a strategy-labelled metric, filtered by the `strategy` variable."""
    return f"{metric}{{{STRATEGY}}}"


HTTP_ALL = "tradebot_http_requests_total"
HTTP_5XX = 'tradebot_http_requests_total{status=~"5.."}'

ROWS: tuple[Row, ...] = (
    Row(
        "Pipeline health",
        (
            (
                Panel(
                    "Targets up",
                    "stat",
                    [Query(f"sum by (job) (up{{{JOBS}}})", "{{job}}")],
                    "none",
                    8,
                    "Scrape targets answering, by job (0: Prometheus cannot scrape it).",
                    height=4,
                    thresholds=((None, "red"), (1, "green")),
                ),
                Panel(
                    "Feed connected",
                    "stat",
                    [Query("min(tradebot_feed_connected)", "connected")],
                    "none",
                    4,
                    "1 while the feed holds its WebSocket connection to the source.",
                    height=4,
                    thresholds=((None, "red"), (1, "green")),
                    mappings=(("0", "Disconnected", "red"), ("1", "Connected", "green")),
                ),
                Panel(
                    "Seconds since last tick",
                    "stat",
                    [Query("max(tradebot_feed_seconds_since_last_tick)", "since last tick")],
                    "s",
                    4,
                    "Time since the feed last received a valid tick.",
                    height=4,
                    decimals=1,
                    thresholds=((None, "green"), (10, "yellow"), (60, "red")),
                ),
                Panel(
                    "Feed reconnects (1h)",
                    "stat",
                    [Query("sum(increase(tradebot_feed_reconnects_total[1h]))", "reconnects")],
                    "short",
                    4,
                    "Reconnections to the source over the last hour.",
                    height=4,
                    decimals=0,
                    thresholds=((None, "green"), (1, "yellow"), (5, "red")),
                ),
                Panel(
                    "Duplicate / missed ticks (1h)",
                    "stat",
                    [
                        Query("sum(increase(tradebot_feed_duplicate_ticks_total[1h]))", "duplicate"),
                        Query("sum(increase(tradebot_feed_gap_ticks_total[1h]))", "missed"),
                    ],
                    "short",
                    4,
                    "Ticks dropped as already seen, and ticks missed between reconnects, over the last hour.",
                    height=4,
                    decimals=0,
                    thresholds=((None, "green"), (1, "yellow")),
                ),
            ),
            (
                Panel(
                    "Feed messages / s",
                    "timeseries",
                    [
                        Query(_rate("tradebot_feed_messages_received_total"), "received"),
                        Query(_rate("tradebot_feed_ticks_published_total"), "published"),
                        Query(_rate("tradebot_feed_messages_rejected_total"), "rejected"),
                    ],
                    "short",
                    12,
                    "WebSocket messages received from the source, valid ticks published, messages rejected.",
                    min_value=0,
                ),
                Panel(
                    "Feed rejections / s by reason",
                    "timeseries",
                    [Query(_rate("tradebot_feed_messages_rejected_total", "reason"), "{{reason}}")],
                    "short",
                    12,
                    "Messages sent to `ticks.dlq`, by reason.",
                    min_value=0,
                ),
            ),
            (
                Panel(
                    "HTTP requests / s by job and status",
                    "timeseries",
                    [
                        Query(
                            _rate("tradebot_http_requests_total", "job, status"),
                            "{{job}} {{status}}",
                        )
                    ],
                    "short",
                    12,
                    "Requests answered by the services (probes and scrapes included).",
                    min_value=0,
                ),
                Panel(
                    "HTTP 5xx ratio by job",
                    "timeseries",
                    [
                        Query(
                            f"{_rate(HTTP_5XX, 'job')} / {_rate(HTTP_ALL, 'job')} or {_rate(HTTP_ALL, 'job')} * 0",
                            "{{job}}",
                        )
                    ],
                    "percentunit",
                    12,
                    "Share of requests answered with a 5xx status (0 for jobs without any).",
                    min_value=0,
                    thresholds=((None, "green"), (0.01, "red")),
                ),
            ),
        ),
    ),
    Row(
        "Throughput",
        (
            (
                Panel(
                    "Ticks published / s by symbol",
                    "timeseries",
                    [Query(_rate("tradebot_feed_ticks_published_total", "symbol"), "{{symbol}}")],
                    "short",
                    12,
                    "Valid ticks the feed published to `ticks`.",
                    min_value=0,
                ),
                Panel(
                    "Strategy ticks processed / s",
                    "timeseries",
                    [Query(_rate(_s("tradebot_strategy_ticks_total"), "strategy"), "{{strategy}}")],
                    "short",
                    12,
                    "Ticks each strategy processed.",
                    min_value=0,
                ),
            ),
            (
                Panel(
                    "Orders / s by strategy and side",
                    "timeseries",
                    [
                        Query(
                            _rate(_s("tradebot_strategy_orders_total"), "strategy, side"),
                            "{{strategy}} {{side}}",
                        )
                    ],
                    "short",
                    12,
                    "Orders the strategies emitted.",
                    min_value=0,
                ),
                Panel(
                    "Fills vs rejections / s",
                    "timeseries",
                    [
                        Query(
                            _rate(_s("tradebot_executor_orders_received_total"), "strategy"),
                            "{{strategy}} received",
                        ),
                        Query(
                            _rate(_s("tradebot_executor_orders_filled_total"), "strategy"),
                            "{{strategy}} filled",
                        ),
                        Query(
                            _rate(_s("tradebot_executor_orders_rejected_total"), "strategy"),
                            "{{strategy}} rejected",
                        ),
                    ],
                    "short",
                    12,
                    "Orders the executor read, filled and refused.",
                    min_value=0,
                ),
            ),
        ),
    ),
    Row(
        "Latency",
        (
            (
                Panel(
                    "Tick-to-fill latency",
                    "timeseries",
                    [
                        Query(_quantile(q, "tradebot_executor_tick_to_fill_seconds_bucket"), f"p{label}")
                        for q, label in ((0.5, "50"), (0.95, "95"), (0.99, "99"))
                    ],
                    "s",
                    8,
                    "From the causing tick's timestamp to its order's fill (replayed ticks are not counted).",
                    min_value=0,
                ),
                Panel(
                    "Strategy batch p99",
                    "timeseries",
                    [
                        Query(
                            _quantile(0.99, _s("tradebot_strategy_batch_seconds_bucket"), "strategy"),
                            "{{strategy}}",
                        )
                    ],
                    "s",
                    8,
                    "Time to process one poll batch of ticks and commit its transaction.",
                    min_value=0,
                ),
                Panel(
                    "HTTP request p99 by job and route",
                    "timeseries",
                    [
                        Query(
                            _quantile(0.99, "tradebot_http_request_duration_seconds_bucket", "job, route"),
                            "{{job}} {{route}}",
                        )
                    ],
                    "s",
                    8,
                    "Time to answer an HTTP request.",
                    min_value=0,
                ),
            ),
        ),
    ),
    Row(
        "Lag",
        (
            (
                Panel(
                    "Consumer lag by group and topic",
                    "timeseries",
                    [Query("sum by (group, topic) (tradebot_consumer_lag)", "{{group}} {{topic}}")],
                    "short",
                    16,
                    "Records of the assigned partitions not yet consumed.",
                    min_value=0,
                ),
                Panel(
                    "Max partition lag",
                    "stat",
                    [Query("max(tradebot_consumer_lag)", "max lag")],
                    "short",
                    8,
                    "The largest lag of any consumed partition.",
                    decimals=0,
                    thresholds=((None, "green"), (1000, "yellow"), (10000, "red")),
                ),
            ),
        ),
    ),
    Row(
        "Trading",
        (
            (
                Panel(
                    "Realised and unrealised P&L",
                    "timeseries",
                    [
                        Query(
                            f"sum by (strategy) ({_s('tradebot_executor_realized_pnl')})",
                            "{{strategy}} realised",
                        ),
                        Query(
                            f"sum by (strategy) ({_s('tradebot_executor_unrealized_pnl')})",
                            "{{strategy}} unrealised",
                        ),
                    ],
                    "currencyUSD",
                    12,
                    "Realised P&L net of commissions; unrealised P&L of open positions at the last prices.",
                ),
                Panel(
                    "Equity",
                    "timeseries",
                    [
                        Query(f"sum by (strategy) ({_s('tradebot_executor_equity')})", "{{strategy}}"),
                        Query(
                            f"sum by (strategy) ({_s('tradebot_strategy_equity')})",
                            "{{strategy}} (strategy's view)",
                        ),
                    ],
                    "currencyUSD",
                    12,
                    "Initial cash plus realised and unrealised P&L (executor), and the strategy's own mark.",
                ),
            ),
            (
                Panel(
                    "Gross exposure",
                    "timeseries",
                    [
                        Query(
                            f"sum by (strategy) ({_s('tradebot_executor_gross_exposure')})",
                            "{{strategy}}",
                        )
                    ],
                    "currencyUSD",
                    8,
                    "Sum of the absolute notional of open positions at the last prices.",
                    min_value=0,
                ),
                Panel(
                    "Drawdown",
                    "timeseries",
                    [
                        Query(
                            f"max by (strategy) ({_s('tradebot_executor_drawdown_ratio')})",
                            "{{strategy}}",
                        )
                    ],
                    "percentunit",
                    8,
                    "Fall of equity from its peak.",
                    min_value=0,
                    max_value=1,
                    thresholds=((None, "green"), (0.05, "yellow"), (0.1, "red")),
                ),
                Panel(
                    "Positions by strategy and symbol",
                    "timeseries",
                    [
                        Query(
                            f"sum by (strategy, symbol) ({_s('tradebot_strategy_position')})",
                            "{{strategy}} {{symbol}}",
                        )
                    ],
                    "short",
                    8,
                    "Quantity held (negative when short).",
                ),
            ),
            (
                Panel(
                    "Strategy halted",
                    "state-timeline",
                    [
                        Query(
                            f"max by (strategy) ({_s('tradebot_executor_strategy_halted')})",
                            "{{strategy}}",
                        )
                    ],
                    "none",
                    12,
                    "Halted: the executor refuses the strategy's entries.",
                    thresholds=((None, "green"), (1, "red")),
                    mappings=(("0", "Trading", "green"), ("1", "Halted", "red")),
                ),
                Panel(
                    "Order rejections / s by reason",
                    "timeseries",
                    [
                        Query(
                            _rate(_s("tradebot_executor_orders_rejected_total"), "strategy, reason"),
                            "{{strategy}} {{reason}}",
                        )
                    ],
                    "short",
                    12,
                    "Orders the executor refused, by reason.",
                    min_value=0,
                ),
            ),
        ),
    ),
    Row(
        "Operator health",
        (
            (
                Panel(
                    "Reconciles / s by result",
                    "timeseries",
                    [Query(_rate("tradebot_operator_reconciles_total", "result"), "{{result}}")],
                    "short",
                    8,
                    "Reconciliations of TradingStrategy resources.",
                    min_value=0,
                ),
                Panel(
                    "Reconcile errors / s by kind",
                    "timeseries",
                    [Query(_rate("tradebot_operator_errors_total", "kind"), "{{kind}}")],
                    "short",
                    8,
                    "Reconciliation errors: temporary (retried) or permanent (not).",
                    min_value=0,
                ),
                Panel(
                    "Managed strategies",
                    "stat",
                    [Query("max(tradebot_operator_managed_strategies)", "strategies")],
                    "none",
                    8,
                    "TradingStrategy resources the operator manages.",
                    decimals=0,
                ),
            ),
            (
                Panel(
                    "Backtests / s by result",
                    "timeseries",
                    [Query(_rate("tradebot_operator_backtests_total", "result"), "{{result}}")],
                    "short",
                    12,
                    "Backtest Jobs started, succeeded and failed.",
                    min_value=0,
                ),
                Panel(
                    "Kubernetes API writes / s",
                    "timeseries",
                    [Query(_rate("tradebot_operator_api_writes_total", "verb, kind"), "{{verb}} {{kind}}")],
                    "short",
                    12,
                    "Writes the operator made to the Kubernetes API, by verb and object kind.",
                    min_value=0,
                ),
            ),
        ),
    ),
)


def _target(query: Query, ref_id: str) -> JSON:
    return {
        "datasource": DATASOURCE,
        "refId": ref_id,
        "expr": query.expr,
        "legendFormat": query.legend,
        "range": True,
    }


def _field_config(panel: Panel) -> JSON:
    defaults: JSON = {"unit": panel.unit}
    if panel.min_value is not None:
        defaults["min"] = panel.min_value
    if panel.max_value is not None:
        defaults["max"] = panel.max_value
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    defaults["color"] = {"mode": "thresholds" if panel.kind != "timeseries" else "palette-classic"}
    defaults["thresholds"] = {
        "mode": "absolute",
        "steps": [{"color": colour, "value": value} for value, colour in panel.thresholds],
    }
    if panel.mappings:
        defaults["mappings"] = [
            {
                "type": "value",
                "options": {
                    value: {"text": text, "color": colour, "index": index}
                    for index, (value, text, colour) in enumerate(panel.mappings)
                },
            }
        ]
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "none", "group": "A"},
        }
    return {"defaults": defaults, "overrides": []}


def _options(panel: Panel) -> JSON:
    if panel.kind == "stat":
        return {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        }
    if panel.kind == "state-timeline":
        return {
            "showValue": "auto",
            "mergeValues": True,
            "rowHeight": 0.9,
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "single", "sort": "none"},
        }
    return {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> JSON:
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": _field_config(panel),
        "options": _options(panel),
        "targets": [_target(query, chr(ord("A") + i)) for i, query in enumerate(panel.queries)],
    }


def _panels(rows: Sequence[Row]) -> list[JSON]:
    """Rows and their panels, laid out top to bottom: each line of panels fills at most 24 columns."""
    panels: list[JSON] = []
    panel_id = 0
    y = 0
    for row in rows:
        panel_id += 1
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        for line in row.lines:
            if sum(panel.width for panel in line) > GRID_WIDTH:
                raise ValueError(f"row {row.title!r}: a line of panels is wider than {GRID_WIDTH} columns")
            x = 0
            for panel in line:
                panel_id += 1
                panels.append(_panel(panel, panel_id, x, y))
                x += panel.width
            y += max(panel.height for panel in line)
    return panels


def _templating() -> JSON:
    strategies = "label_values(tradebot_strategy_ticks_total, strategy)"
    return {
        "list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "refresh": 1,
                "regex": "",
                "options": [],
            },
            {
                "name": "strategy",
                "label": "Strategy",
                "type": "query",
                "datasource": DATASOURCE,
                "query": {"query": strategies, "refId": "StandardVariableQuery"},
                "definition": strategies,
                "current": {},
                "hide": 0,
                "refresh": 2,
                "regex": "",
                "sort": 1,
                "multi": True,
                "includeAll": True,
                "allValue": ".*",
                "options": [],
            },
        ]
    }


def build() -> JSON:
    """The dashboard, as Grafana's JSON model."""
    return {
        "uid": UID,
        "title": TITLE,
        "description": "tradebot live pipeline: feed, strategies, executor, latency, Kafka lag, P&L, operator.",
        "tags": ["tradebot", "trading", "kafka"],
        "timezone": "utc",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "templating": _templating(),
        "annotations": {"list": []},
        "links": [],
        "panels": _panels(ROWS),
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a file differs from the output")
    parser.add_argument(
        "--root", type=Path, default=REPO_ROOT, help="the repository root (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    text = render()
    stale = False
    for relative in OUTPUTS:
        path: Path = args.root / relative
        if args.check:
            if not path.is_file() or path.read_text() != text:
                print(f"{path} is out of date: run python manifests/monitoring/dashboard.py", file=sys.stderr)
                stale = True
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
