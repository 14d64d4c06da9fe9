"""`genq api`: the API under gunicorn (api/gunicorn_conf.py has the settings and the worker model), or
werkzeug's threaded server (`--server werkzeug`; what `genq up` runs for one machine)."""
from __future__ import annotations

import dataclasses
from typing import Any

from gunicorn.app.base import BaseApplication

from genq.settings import Settings


class _Gunicorn(BaseApplication):
    def __init__(self, settings: Settings, options: dict[str, Any]):
        self._settings = settings
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for name, value in self._options.items():
            self.cfg.set(name, value)

    def load(self) -> Any:  # in each worker, after the fork: its own pools, connections and threads
        from api import create_app
        from api.gunicorn_conf import stream_cap
        from genq.model_limits import prompt_encoder

        app = create_app(dataclasses.replace(self._settings, events_max_streams=stream_cap(self._settings)))
        for model in app.extensions["genq"].catalog.all():  # before the first request, not during it
            prompt_encoder(model.spec.source)
        return app


def serve_gunicorn(settings: Settings, host: str, port: int) -> int:
    from api.gunicorn_conf import HOOKS, json_errors, options

    def announce(server: Any) -> None:
        for listener in server.LISTENERS:
            bound_host, bound_port = listener.sock.getsockname()[:2]
            print(f"genq api listening on http://{host}:{bound_port} (gunicorn, {settings.api_workers} workers x "
                  f"{settings.api_threads} threads)", flush=True)

    json_errors()
    if announce not in HOOKS["when_ready"]:
        HOOKS["when_ready"].append(announce)
    _Gunicorn(settings, options(settings, host, port)).run()
    return 0


def serve_werkzeug(settings: Settings, host: str, port: int) -> int:
    from api import create_app
    from api.http_server import make_api_server

    server = make_api_server(host, port, create_app(settings))
    print(f"genq api listening on http://{host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
