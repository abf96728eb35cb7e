"""The dashboard: HTML pages served by the backend, behind a login (docs/dashboard.md).

    /login, /logout          backend.web.auth      (Flask-Login, CSRF-protected forms)
    /workouts, /workouts/ID  backend.web.workouts  (list with filters; one workout's stages and pulse)
    /trends                  backend.web.trends    (Fig. 4 box plots, RR vs pulse, weekly fitness)
    /tokens                  backend.web.devices   (device tokens: create once-shown, revoke)
    /imports                 backend.web.imports   (each import's report: counted, stored, skipped and why)

One parent blueprint holds them all, so its checks guard every page (default-deny, as the API does):
first the CSRF token of any POST, then the login. Charts are drawn server-side as SVG (backend.web.charts);
pages load no scripts and no third-party files at all.
"""

from __future__ import annotations

from flask import Blueprint, Flask, redirect, render_template, url_for
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from backend.web import auth, devices, imports, trends, workouts
from backend.web.format import register_filters
from backend.web.security import configure_sessions, csrf

web = Blueprint("web", __name__)


@web.before_request
def _guard() -> Response | None:
    csrf.protect()  # every POST of every page needs the session's token (raises CSRFError)
    return auth.require_login()


web.register_blueprint(auth.bp)
web.register_blueprint(workouts.bp)
web.register_blueprint(trends.bp)
web.register_blueprint(devices.bp)
web.register_blueprint(imports.bp)


@web.get("/")
def home() -> Response:
    return redirect(url_for("web.workouts.index"))


@web.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError) -> tuple[str, int]:
    message = (
        "This form was not accepted: it did not carry this session's security token. That happens when "
        "the page was open from before you logged in again, or the form did not come from this site. "
        "Reload the page and try again."
    )
    return render_template("web/error.html", title="Form not accepted", message=message), 400


@web.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[str, int, dict[str, str]] | HTTPException:
    if exc.code is None or exc.code < 400:
        return exc
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    page = render_template("web/error.html", title=exc.name, message=exc.description)
    return page, exc.code, headers


def init_web(app: Flask) -> None:
    """Sessions, login and the pages; called by the app factory."""
    configure_sessions(app)
    auth.init_login(app)
    register_filters(app)
    app.register_blueprint(web)
