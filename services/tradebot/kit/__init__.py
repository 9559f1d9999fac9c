"""The service kit: settings, JSON logging, the health/metrics app and graceful shutdown for every service.
Import each part from its module (`tradebot.kit.settings`, `.logging`, `.app`, `.health`, `.lifecycle`).

A background service (feed, strategy, executor)::

    from pydantic import SecretStr
    from tradebot.kit.app import create_service_app
    from tradebot.kit.health import tcp_check
    from tradebot.kit.lifecycle import ShutdownEvent, run_service
    from tradebot.kit.settings import ServiceSettings, load_settings_or_exit

    class FeedSettings(ServiceSettings):
        service_name: str = "feed"
        kafka_bootstrap: str = "127.0.0.1:9092"          # TRADEBOT_KAFKA_BOOTSTRAP
        exchange_api_key: SecretStr | None = None         # secrets are SecretStr: masked in logs

    def run() -> int:
        settings = load_settings_or_exit(FeedSettings)    # bad env: one line on stderr, exit 2
        app = create_service_app(settings, readiness_checks={"kafka": tcp_check("127.0.0.1", 9092)})

        async def main(shutdown: ShutdownEvent) -> None:
            async with open_clients(settings) as clients:  # close them cleanly on the way out
                while not shutdown.is_set():
                    await do_one_unit_of_work(clients)     # finishes even after SIGTERM; must not
                                                           # block forever: poll with a timeout

        return run_service(main, settings, app=app)

An HTTP service (api) adds its routers and passes `main=None`: `app.include_router(orders.router)`,
`run_service(None, settings, app=app)`. Route modules stay thin and take what they need through
`Annotated` dependencies: `SettingsDep`, `ReadinessDep`, `RegistryDep`, or their own, e.g.
`ApiSettingsDep = Annotated[ApiSettings, Depends(app_settings)]` for the subclass's fields.

What you get:

- `ServiceSettings`: frozen pydantic-settings base, env prefix `TRADEBOT_`, unknown init keys rejected;
  `service_name`, `log_level`, `log_json`, `http_host`, `http_port`, `shutdown_grace_seconds`.
  `load_settings(cls, **overrides)` raises `SettingsError("TRADEBOT_HTTP_PORT: Input should be ... (got
  '70000')")`; `settings.safe_dump()` is every value with secrets masked; a field named like a secret
  (password, token, api_key...) that is a plain `str` is a TypeError at class definition.
- `configure_logging(settings)`: one JSON object per line on stdout (`ts` ISO-8601 UTC, `level`,
  `logger`, `message`, `service`, every `extra=` field, `exception`); uvicorn's loggers included,
  successful probe/scrape requests left out of the access log. Log with `logging.getLogger(__name__)`.
- `create_service_app(settings, readiness_checks=..., registry=..., lifespan=...)`: FastAPI with
  `/livez` (200 while the loop runs), `/readyz` (200 `{"status": "ready", "checks": {...}}` when every
  check passes; else 503 with `"status": "not_ready"` and the `failing` names, or `"shutting_down"`;
  checks run concurrently, each with a timeout; a check that raises or times out fails)
  and `/metrics` (process/platform/GC collectors, `tradebot_build_info{service,version}`,
  `tradebot_http_requests_total{route,method,status}`,
  `tradebot_http_request_duration_seconds{route,method}`). Define the service's own metrics on a
  `CollectorRegistry()` and pass it as `registry`. `readiness_of(app).add_check(name, check)` adds a
  check later (e.g. once a consumer exists).
- `run_service(main, settings, app=None) -> int`: configures logging, serves the app with uvicorn in
  the same loop beside `main(shutdown)`. First SIGTERM/SIGINT: readiness 503 at once, `shutdown` set,
  main finishes its unit of work within `shutdown_grace_seconds` (else it is cancelled, exit 1), the
  HTTP server stops last, exit 0. A second signal exits at once (128+signal). `main` returning ends the
  service too (exit 0; 1 if it raised). `serve_service` is the same as a coroutine (for tests).
- `ShutdownEvent`: `is_set()`, `await wait()`, `await sleep(seconds)` (an interruptible pause, True
  on shutdown), `set(reason)` to stop from inside.
"""
