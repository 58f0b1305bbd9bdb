"""modelpull: the web tier's composition root lives here (`create_app`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from app.dispatch import Dispatcher
    from app.settings import Settings

MAX_BODY_BYTES = 64 * 1024


def create_app(settings: Settings | None = None, *, dispatcher: Dispatcher | None = None) -> Flask:
    """Build the Flask app; settings come from the environment unless given."""
    # Imported here, not at the top: every core module and every worker imports the `app`
    # package, and none of them may load Flask or the web tier with it.
    from flask import Flask

    from app.catalog import load_catalog
    from app.db import make_engine, make_session_factory
    from app.dispatch import Dispatcher
    from app.hubmeta import HubMeta
    from app.scrub import register_secrets
    from app.settings import load_settings
    from app.web import api, auth, errors, health, hubapi, openapi, pages, sizes, ws
    from app.web.relay import Relay
    from app.web.state import WebState, close_db

    settings = settings or load_settings()
    # Before anything can fail: every error and event the web tier sends on is scrubbed.
    register_secrets(settings.hf_token, settings.api_token)
    app = Flask(__name__, template_folder="web/templates", static_folder="web/static")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["modelpull"] = WebState(
        settings=settings,
        sessions=make_session_factory(make_engine(settings.database_url)),
        dispatcher=dispatcher or Dispatcher(settings),
        catalog=load_catalog(settings.models_catalog),  # a bad catalog stops the start
        relay=Relay(settings.redis_url),
        hub=HubMeta(settings.hf_endpoint, settings.hf_token),
    )
    app.teardown_appcontext(close_db)
    errors.init_app(app)
    auth.init_app(app)
    health.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(hubapi.bp)
    app.register_blueprint(openapi.bp)
    pages.init_app(app)
    ws.init_app(app)
    sizes.init_app(app)
    return app
