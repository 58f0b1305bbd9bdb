"""The dashboard's pages: server-rendered shells that small JavaScript modules fill in."""

from __future__ import annotations

from flask import Blueprint, Flask, redirect, render_template, session, url_for
from flask.typing import ResponseReturnValue

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> ResponseReturnValue:
    """The models page is home."""
    return redirect(url_for("pages.models"))


@bp.get("/models")
def models() -> ResponseReturnValue:
    """The catalog with live downloads."""
    return render_template("models.html", csrf=session.get("csrf", ""), page="models")


@bp.get("/jobs")
def jobs() -> ResponseReturnValue:
    """The history of jobs."""
    return render_template("jobs.html", csrf=session.get("csrf", ""), page="jobs")


def init_app(app: Flask) -> None:
    """Register the pages."""
    app.register_blueprint(bp)
