"""The kit's domain-error answers (`DomainErrors`): a route's `with ERRORS:` turns the domain's refusals into
problem+json with the status, headers, detail and members each service gave them by hand before; anything
else passes through. Then each service's own table, error by error, as its routes answered before."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fleet_ota.domain.firmware import CatalogError
from fleet_ota.domain.release import ReleaseError
from fleet_ota.entrypoints.http import DOMAIN_ERRORS as OTA
from fleet_ota.service_layer.handlers import Conflict as OtaConflict
from fleet_ota.service_layer.handlers import NotFound as OtaNotFound
from fleet_pairing import views as pairing_views
from fleet_pairing.domain.session import SessionAlreadyEnded, SessionState, TokenRefused
from fleet_pairing.entrypoints.http import DOMAIN_ERRORS as PAIRING
from fleet_pairing.service_layer.handlers import SessionNotFound, WriteContention
from fleet_shared.service import Answer, DomainErrors, ProblemError
from fleet_shared.service.problems import install_problem_handlers
from fleet_status.entrypoints.http import DOMAIN_ERRORS as STATUS
from fleet_status.views import InvalidCursor
from fleet_unbinding.domain.authorization import AuthorizationError
from fleet_unbinding.domain.batch import BatchError
from fleet_unbinding.domain.quota import QuotaError
from fleet_unbinding.entrypoints.http import DOMAIN_ERRORS as UNBINDING
from fleet_unbinding.ports import TuyaRefused, TuyaUnreachable
from fleet_unbinding.service_layer.handlers import Conflict as UnbindingConflict
from fleet_unbinding.service_layer.handlers import NotFound as UnbindingNotFound

pytestmark = pytest.mark.unit


class Missing(LookupError):
    pass


class Refused(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"refused: {reason}")
        self.reason = reason


ERRORS = DomainErrors(
    Answer(Missing, 404),
    Answer(Refused, 409, extensions=lambda e: {"reason": e.reason}),
    Answer(ValueError, 422, detail=lambda e: f"body: {e}"),
    Answer(TimeoutError, 503, headers={"Retry-After": "1"}),
)


def answer(errors: DomainErrors, error: Exception) -> ProblemError:
    with pytest.raises(ProblemError) as raised, errors:
        raise error
    assert raised.value.__cause__ is error  # the log line of a 4xx/5xx still shows what the domain said
    return raised.value


def served(error: Exception) -> TestClient:
    app = FastAPI()
    install_problem_handlers(app)  # as build_app does

    @app.get("/thing")
    async def thing() -> dict[str, str]:
        with ERRORS:
            raise error
        return {}  # pragma: no cover - the block always raises

    return TestClient(app, raise_server_exceptions=False)


def test_a_listed_error_is_a_problem_with_its_status_and_the_errors_message() -> None:
    response = served(Missing("no thing t-1")).get("/thing")
    problem = {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "no thing t-1"}
    assert (response.status_code, response.headers["content-type"]) == (404, "application/problem+json")
    assert response.json() == problem


def test_members_taken_from_the_error_stand_beside_the_detail() -> None:
    body = served(Refused("expired")).get("/thing").json()
    assert body == {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "refused: expired",
        "reason": "expired",
    }


def test_fixed_headers_and_a_detail_of_its_own() -> None:
    busy = served(TimeoutError("kept changing")).get("/thing")
    assert (busy.status_code, busy.headers["retry-after"], busy.json()["detail"]) == (
        503,
        "1",
        "kept changing",
    )
    assert served(ValueError("no rows")).get("/thing").json()["detail"] == "body: no rows"


def test_the_first_answer_listing_the_errors_type_wins() -> None:
    # Refused is a ValueError too: listed first, it keeps its own answer
    assert answer(ERRORS, Refused("used_up")).status_code == 409
    assert answer(ERRORS, ValueError("x")).status_code == 422


def test_any_other_error_passes_through_untouched() -> None:
    bug = KeyError("a bug")
    with pytest.raises(KeyError) as raised, ERRORS:
        raise bug
    assert raised.value is bug
    assert served(RuntimeError("a bug")).get("/thing").status_code == 500


def test_nothing_raised_nothing_answered() -> None:
    with ERRORS:
        done = True
    assert done


def test_the_table_is_reusable_and_nests() -> None:
    for _ in range(2):
        with ERRORS, ERRORS:
            pass
        assert answer(ERRORS, Missing("again")).status_code == 404


def expect(error: ProblemError, status: int, detail: str, **extensions: Any) -> None:
    headers: Mapping[str, str] | None = extensions.pop("headers", None)
    assert (error.status_code, error.detail, error.headers, error.extensions) == (
        status,
        detail,
        headers,
        extensions,
    )


# --- each service's table, as its routes answered before ---------------------------------------------------


def test_ota_answers_as_before() -> None:
    expect(answer(OTA, OtaNotFound("no release r-1")), 404, "no release r-1")
    expect(answer(OTA, CatalogError("other content")), 409, "other content")
    expect(answer(OTA, ReleaseError("region halted")), 409, "region halted")
    expect(answer(OTA, OtaConflict("kept changing")), 503, "kept changing", headers={"Retry-After": "1"})


def test_status_answers_a_bad_cursor_with_400() -> None:
    expect(answer(STATUS, InvalidCursor()), 400, "invalid cursor")


def test_pairing_answers_as_before() -> None:
    expect(answer(PAIRING, SessionNotFound("ps_1")), 404, "no pairing session for ps_1")
    expect(answer(PAIRING, pairing_views.InvalidCursor()), 400, "cursor: not a cursor this API returned")
    ended = SessionAlreadyEnded(SessionState.CANCELLED)
    expect(answer(PAIRING, ended), 409, str(ended), state="cancelled")
    refused = TokenRefused("expired", "the token expired")
    expect(answer(PAIRING, refused), 409, str(refused), reason="expired")
    expect(answer(PAIRING, WriteContention("kept changing")), 503, "kept changing")


def test_unbinding_answers_as_before() -> None:
    expect(answer(UNBINDING, UnbindingNotFound("no batch b-1")), 404, "no batch b-1")
    for refusal in (BatchError("b"), AuthorizationError("a"), QuotaError("q")):
        expect(answer(UNBINDING, refusal), 409, str(refusal))
    expect(answer(UNBINDING, TuyaRefused("1106")), 502, "Tuya: Tuya error 1106")
    expect(answer(UNBINDING, TuyaUnreachable("timeout")), 502, "Tuya: timeout")
    # a write losing races was a 500 and stays one (the resume loop retries)
    with pytest.raises(UnbindingConflict), UNBINDING:
        raise UnbindingConflict("batch b-1 kept changing")
