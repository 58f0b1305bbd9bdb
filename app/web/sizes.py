"""The catalog's sizes, learnt from the Hub in the background: at start-up, then every
CATALOG_REFRESH_SECONDS (sooner after a Hub that did not answer), so the dashboard and
`modelpull models` show what each model weighs before anything is downloaded."""

from __future__ import annotations

import logging
import threading

from flask import Flask

from app import hubcache
from app.web.state import WebState, state_of

log = logging.getLogger(__name__)

# After a pass the Hub did not fully answer, ask again this soon (or at the interval).
RETRY_SECONDS = 300


class CatalogRefresher:
    """One daemon thread per web process; a stop ends its wait at once."""

    def __init__(self, state: WebState) -> None:
        self.state = state
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="web-catalog-sizes", daemon=True)

    def _run(self) -> None:
        interval = self.state.settings.catalog_refresh_seconds
        catalog = self.state.catalog
        while not self.stop.is_set():
            answered = 0
            try:
                answered = hubcache.refresh_catalog(
                    self.state.sessions, self.state.hub, catalog, stop=self.stop
                )
            except Exception:
                log.exception("learning the catalog's sizes failed")
            whole = answered == len(hubcache.catalog_keys(catalog))
            if self.stop.wait(interval if whole else min(interval, RETRY_SECONDS)):
                return


def init_app(app: Flask) -> None:
    """Start the refresher unless CATALOG_REFRESH_SECONDS is 0."""
    state = state_of(app)
    if state.settings.catalog_refresh_seconds <= 0:
        return
    refresher = CatalogRefresher(state)
    app.extensions["modelpull-sizes"] = refresher
    refresher.thread.start()
