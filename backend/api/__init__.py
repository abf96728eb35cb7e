"""The REST API under /api/v1 (JSON, bearer tokens, problem+json errors, OpenAPI at /api/v1/openapi.json).

One parent blueprint holds the endpoint blueprints, so authentication (backend.api.auth) guards them all.
Web pages (the dashboard) belong in their own blueprints outside this one, with their own login.
"""

from __future__ import annotations

from flask import Blueprint

from backend.api import docs, exports, imports, me, trends, workouts
from backend.api.auth import require_token

API_PREFIX = "/api/v1"

api = Blueprint("api", __name__, url_prefix=API_PREFIX)
api.before_request(require_token)
api.register_blueprint(workouts.bp)
api.register_blueprint(trends.bp)
api.register_blueprint(imports.bp)
api.register_blueprint(exports.bp)
api.register_blueprint(me.bp)
api.register_blueprint(docs.bp)
