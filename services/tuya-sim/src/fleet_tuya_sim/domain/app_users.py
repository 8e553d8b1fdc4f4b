"""App-user login: `POST /v1.0/iot-01/associated-users/actions/authorized-login` (tuya-iot-py-sdk `connect`).

In Tuya's cloud a smart-home project is linked to an app (its *schema*, e.g. `smartlife`); the accounts
of that app log in with username, MD5 of the password, country code and schema, and get a token acting as
that user (`uid`). The simulated app's accounts are the fleet's home owners: the username is the owner's
uid (listed by `GET /sim/fleet`), the password is one per simulated project (a setting). Any failure is
what the real cloud answers for a wrong password, an unknown account or an app not linked to the project:
1106 "permission deny".
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Set
from dataclasses import dataclass, field

from fleet_tuya_sim.domain import errors
from fleet_tuya_sim.domain.errors import CloudRefusal

PARAM_EMPTY = 1100


@dataclass(frozen=True)
class LinkedApp:
    schema: str
    password: str = field(repr=False)  # of every simulated account; never logged

    def login(self, owners: Set[str], body: object) -> str:
        """The uid the login acts as; CloudRefusal otherwise (nothing changes)."""
        if not isinstance(body, dict):
            raise CloudRefusal(errors.PARAM_ILLEGAL, "param illegal: body")
        username, password_md5 = str(body.get("username") or ""), str(body.get("password") or "")
        if not username or not password_md5 or not body.get("country_code") or not body.get("schema"):
            raise CloudRefusal(
                PARAM_EMPTY, "param is empty: username, password, country_code and schema are required"
            )
        expected = hashlib.md5(self.password.encode(), usedforsecurity=False).hexdigest()
        password_ok = hmac.compare_digest(expected, password_md5.lower())
        if not password_ok or body["schema"] != self.schema or username not in owners:
            raise CloudRefusal(errors.PERMISSION_DENY, "permission deny")
        return username
