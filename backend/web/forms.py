"""The dashboard's forms (WTForms): what each field accepts and the message when it does not.

POST forms are `FlaskForm`s and carry the session's CSRF token; the filter form is read from the query
string (a GET, bookmarkable, no token) and uses the API's own names: `from`, `to`, `activity`.
"""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from werkzeug.datastructures import MultiDict
from wtforms import DateField, Form, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from backend.domain import Activity
from backend.schemas import WorkoutFilter

ACTIVITY_LABELS = {
    "running": "Running",
    "biking": "Biking",
    "hiit": "HIIT",
    "calisthenics": "Calisthenics",
    "fast_walking": "Fast walking",
    "incline_walking": "Incline walking",
    "other": "Other",
}


class LoginForm(FlaskForm):
    username = StringField(
        "Username", validators=[DataRequired(), Length(max=80)], render_kw={"autocomplete": "username"}
    )
    password = PasswordField(
        "Password", validators=[DataRequired()], render_kw={"autocomplete": "current-password"}
    )


class TokenForm(FlaskForm):
    label = StringField(
        "Device name",
        validators=[DataRequired(message="Name the device, e.g. “Alice’s iPhone”."), Length(max=100)],
        description="The token is shown once; paste it into the app on that device.",
        render_kw={"autocomplete": "off", "placeholder": "Alice’s iPhone"},
    )


class FilterForm(Form):
    """Date range (the workout's local days, inclusive) and activity, as in the API's query string."""

    from_ = DateField("From", name="from", validators=[Optional()])
    to = DateField("To", validators=[Optional()])
    activity = SelectField(
        "Activity",
        choices=[
            SelectChoice("", "All activities"),
            *(SelectChoice(a.value, ACTIVITY_LABELS[a.value]) for a in Activity),
        ],
        validators=[Optional()],
    )

    def __init__(self, args: MultiDict[str, str], **kwargs: Any) -> None:
        # Only the filter's own keys: a `cursor` in the same query string is the list's business.
        super().__init__(
            MultiDict({k: v for k, v in args.items() if k in ("from", "to", "activity")}), **kwargs
        )

    def validate_to(self, field: DateField) -> None:
        if field.data and self.from_.data and field.data < self.from_.data:
            raise ValidationError("“To” is before “From”.")

    def to_filter(self) -> WorkoutFilter:
        """The validated values as the API's filter (call after `validate()`)."""
        return WorkoutFilter.model_validate(
            {"from": self.from_.data, "to": self.to.data, "activity": self.activity.data or None}
        )

    @property
    def active(self) -> bool:
        return bool(self.from_.data or self.to.data or self.activity.data)

    def query(self) -> dict[str, str]:
        """The filter as query parameters, for links that keep it (pagination, other pages)."""
        out = {}
        if self.from_.data:
            out["from"] = self.from_.data.isoformat()
        if self.to.data:
            out["to"] = self.to.data.isoformat()
        if self.activity.data:
            out["activity"] = self.activity.data
        return out
