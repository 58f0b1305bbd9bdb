"""What the app factory builds once per process, and the request's DB session."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy.orm import Session, sessionmaker

from app.catalog import Catalog
from app.dispatch import Dispatcher
from app.hubmeta import HubMeta
from app.settings import Settings
from app.web.relay import Relay


@dataclass
class WebState:
    """The web process's collaborators."""

    settings: Settings
    sessions: sessionmaker[Session]
    dispatcher: Dispatcher
    catalog: Catalog
    relay: Relay
    hub: HubMeta


def state_of(app: Flask) -> WebState:
    """The app's WebState."""
    state: WebState = app.extensions["modelpull"]
    return state


def settings_of(app: Flask) -> Settings:
    """The app's settings."""
    return state_of(app).settings


def db() -> Session:
    """The request's session (one per request, closed at teardown; the view commits)."""
    if "db" not in g:
        g.db = state_of(current_app).sessions()
    session: Session = g.db
    return session


def close_db(_exc: Any = None) -> None:
    """Teardown: roll back anything uncommitted and close the request's session."""
    session = g.pop("db", None)
    if session is not None:
        session.close()
