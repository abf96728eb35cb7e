"""Devices and their API tokens: list, create (the token is shown once, on the answer to the POST), revoke.

The new token is rendered straight into the response to the POST (marked `no-store`) rather than kept
for a redirect: the session is a signed, not encrypted, cookie, so it must never carry a token.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from backend.db import get_session, transactional
from backend.models import ApiToken, User
from backend.tokens import issue_token, revoke_tokens
from backend.web.auth import current_web_user
from backend.web.forms import TokenForm

bp = Blueprint("devices", __name__)


def _tokens(user_id: int) -> list[ApiToken]:
    """Live tokens first, newest first within each group."""
    return list(
        get_session().scalars(
            select(ApiToken)
            .where(ApiToken.user_id == user_id)
            .order_by(ApiToken.revoked_at.is_not(None), ApiToken.id.desc())
        )
    )


def _page(form: TokenForm, new_token: str | None = None, new_label: str | None = None) -> str:
    return render_template(
        "web/tokens.html",
        form=form,
        tokens=_tokens(current_web_user().user_id),
        new_token=new_token,
        new_label=new_label,
        active="tokens",
    )


@bp.get("/tokens")
def index() -> str:
    return _page(TokenForm(formdata=None))


@bp.post("/tokens")
@transactional
def create() -> tuple[str, int]:
    form = TokenForm()
    if not form.validate():
        return _page(form), 400
    session = get_session()
    user = session.get(User, current_web_user().user_id)
    if user is None:  # deleted while logged in
        abort(403)
    label = (form.label.data or "").strip()
    _, plaintext = issue_token(session, user, label)
    return _page(TokenForm(formdata=None), new_token=plaintext, new_label=label), 200


@bp.post("/tokens/<int:token_id>/revoke")
@transactional
def revoke(token_id: int) -> Response:
    session = get_session()
    user = session.get(User, current_web_user().user_id)
    token = session.get(ApiToken, token_id)
    if user is None or token is None or token.user_id != user.id:
        abort(404, description="There is no such token among yours.")
    if revoke_tokens(session, user, token_id=token_id) == 0:
        flash(f"The token for {token.label or 'an unnamed device'} was already revoked.", "info")
    else:
        flash(
            f"Revoked the token for {token.label or 'an unnamed device'}. That device can no longer upload."
        )
    return redirect(url_for("web.devices.index"), code=303)
