"""`tradebot notifier`: fills and control events posted to webhooks, Slack, Discord and Telegram."""
