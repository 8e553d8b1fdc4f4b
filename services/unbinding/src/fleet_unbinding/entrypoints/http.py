"""HTTP API of the unbinding service: batches (JSON or CSV), approval and cancel, results as CSV, the
authorization admin API, quotas, and the result records. Routes parse, call a handler or a view, answer.

The caller's account (the Tuya developer, partner or space-member account that unbinds) is its credential's
name: an API key's name, or a JWT's subject. Permissions come from the security kit (`unbinding:read`,
`unbinding:execute`, `unbinding:admin`); which devices an account may unbind comes from the product
authorizations managed here.
"""

from __future__ import annotations

import base64
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from fleet_contracts._base import DeviceId, ProductId, Reason
from fleet_contracts.unbinding import MAX_DEVICES_PER_BATCH, RequestUnbindBatch, UnbindMode
from fleet_shared import qr
from fleet_shared.security import CurrentPrincipal, Forbidden, Permission, Principal, check
from fleet_shared.service import Answer, DomainErrors
from fleet_unbinding import csvio, views
from fleet_unbinding.bootstrap import Unbinding
from fleet_unbinding.domain import authorization as authz
from fleet_unbinding.domain.batch import Batch, BatchError
from fleet_unbinding.domain.quota import QuotaError, QuotaScope
from fleet_unbinding.ports import TuyaRefused, TuyaUnreachable
from fleet_unbinding.service_layer import handlers

READ, EXECUTE, ADMIN = Permission.UNBINDING_READ, Permission.UNBINDING_EXECUTE, Permission.UNBINDING_ADMIN
BatchIdPath = Annotated[str, Path(min_length=1, max_length=64)]
ProductPath = Annotated[str, Path(min_length=1, max_length=64)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=128,
        description="The same key from the same account names the same batch (a retry is answered with it).",
    ),
]
# a rule the domain refuses is a 409; Tuya refusing (or not answering) a call made for the request, a 502
DOMAIN_ERRORS = DomainErrors(
    Answer(handlers.NotFound, status.HTTP_404_NOT_FOUND),
    Answer((BatchError, authz.AuthorizationError, QuotaError), status.HTTP_409_CONFLICT),
    Answer((TuyaRefused, TuyaUnreachable), status.HTTP_502_BAD_GATEWAY, detail=lambda e: f"Tuya: {e}"),
)
# record filters (module level: FastAPI resolves postponed annotations from the module)
Filter = Annotated[str | None, Query(min_length=1, max_length=64)]
Day = Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}-\d{2}$")]


@dataclass
class RecordFilters:
    """Records of one device, operator, product or UTC day (each indexed), narrowed by the others."""

    device_id: Filter = None
    operator_id: Filter = None
    product_id: Filter = None
    day: Day = None


QR_UNSUPPORTED = "a QR batch needs the operator's app account (uid) and the Wi-Fi (ssid, password)"


def account_of(principal: Principal) -> str:
    """The Tuya-side account a credential acts as."""
    return principal.display_name if principal.kind == "api_key" else principal.subject


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BatchBody(_Body):
    mode: UnbindMode = UnbindMode.LIST
    device_ids: list[DeviceId] = Field(default_factory=list, max_length=MAX_DEVICES_PER_BATCH)
    product_id: ProductId | None = None
    reason: Reason | None = None
    reset: bool = False
    gateway_id: DeviceId | None = Field(
        None, description="Wired mode: the gateway the LAN scan went through."
    )
    # QR mode: the operator's app account and home the pairing token is issued for, and the Wi-Fi the
    # devices join; the password goes into the QR payload answered once and is never stored
    uid: str | None = Field(None, min_length=1, max_length=64)
    home_id: str | None = Field(None, min_length=1, max_length=64)
    ssid: str | None = Field(None, min_length=1, max_length=32)
    password: SecretStr | None = Field(None, max_length=64)
    validity_s: float | None = Field(None, gt=0, le=1800)

    @field_validator("device_ids")
    @classmethod
    def _unique(cls, ids: list[str]) -> list[str]:
        twice = sorted(i for i, n in Counter(ids).items() if n > 1)
        if twice:
            raise ValueError(f"device ids must be unique; repeated: {', '.join(twice[:10])}")
        return ids

    @model_validator(mode="after")
    def _fits_mode(self) -> Self:
        if self.mode is UnbindMode.QR:
            if self.device_ids:
                raise ValueError("device_ids: a QR batch admits the devices that scan it")
            if not (self.uid and self.ssid and self.password is not None):
                raise ValueError(QR_UNSUPPORTED)
        elif not self.device_ids:
            raise ValueError(f"device_ids: {self.mode} mode needs at least one device id")
        if self.mode is UnbindMode.WIRED and self.gateway_id is None:
            raise ValueError(
                "gateway_id: wired mode needs the gateway the LAN scan found the devices through"
            )
        return self

    def command(self, operator_id: str, batch_id: str) -> RequestUnbindBatch:
        return RequestUnbindBatch(
            batch_id=batch_id,
            operator_id=operator_id,
            mode=self.mode,
            product_id=self.product_id,
            device_ids=self.device_ids,
            reason=self.reason,
            reset=self.reset or self.mode is UnbindMode.QR,
            gateway_id=self.gateway_id,
        )


class DryRunBody(_Body):
    device_ids: list[DeviceId] = Field(min_length=1, max_length=MAX_DEVICES_PER_BATCH)


class RegisterBody(_Body):
    owner: str = Field(min_length=1, max_length=64)
    original_owner: str | None = Field(
        None, min_length=1, max_length=64, description="OEM: the original PID owner."
    )

    def record(self, s: authz.ProductAuthorization, **by: Any) -> authz.AuthorizationRecord:
        by.pop("platform_admin")  # registering is for administrators only (the route's permission)
        return authz.register(s, owner=self.owner, original_owner=self.original_owner, **by)


class GrantBody(_Body):
    account: str = Field(min_length=1, max_length=64)
    kind: authz.GrantKind
    role: authz.SpaceRole | None = None
    permissions: list[str] = Field(default_factory=list, max_length=32)
    reason: Reason | None = None

    def record(self, s: authz.ProductAuthorization, **by: Any) -> authz.AuthorizationRecord:
        return authz.grant(
            s,
            account=self.account,
            kind=self.kind,
            role=self.role,
            permissions=self.permissions,
            reason=self.reason,
            **by,
        )


class RevokeBody(_Body):
    account: str = Field(min_length=1, max_length=64)
    kind: authz.GrantKind
    reason: Reason | None = None

    def record(self, s: authz.ProductAuthorization, **by: Any) -> authz.AuthorizationRecord:
        return authz.revoke(s, account=self.account, kind=self.kind, reason=self.reason, **by)


class TransferBody(_Body):
    new_owner: str = Field(min_length=1, max_length=64)

    def record(self, s: authz.ProductAuthorization, **by: Any) -> authz.AuthorizationRecord:
        return authz.transfer(s, new_owner=self.new_owner, **by)


AuthorizationChange = RegisterBody | GrantBody | RevokeBody | TransferBody


class LimitBody(_Body):
    limit: int = Field(ge=0, le=1_000_000)
    reason: Reason = Field(description="Why (the ticket): kept in the limit's history.")


def _batch_view(batch: Batch) -> dict[str, Any]:
    return {
        "batch_id": batch.batch_id,
        "operator_id": batch.operator_id,
        "mode": batch.mode.value,
        "status": batch.status.value,
        "product_id": batch.product_id,
        "devices": len(batch.device_ids),
        "created_at": batch.created_at,
        "finished_at": batch.finished_at,
        "cancel_requested": batch.cancel_requested,
        "approved_by": batch.approved_by,
    }


def _csv(text: str, name: str) -> Response:
    return Response(
        text, media_type="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


def api_router(svc: Unbinding) -> APIRouter:
    p = svc.ports
    security = svc.clients.api_security
    router = APIRouter(prefix="/v1", tags=["unbinding"])

    async def progress(batch_id: str) -> dict[str, Any]:
        found = await views.batch_progress(svc.batches, svc.unbinds, batch_id)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no batch {batch_id}")
        return found.as_dict()

    async def submit(
        body: BatchBody, principal: Principal, idempotency_key: str | None
    ) -> tuple[dict[str, Any], bool]:
        operator = account_of(principal)
        if body.product_id is not None:
            check(principal, EXECUTE, body.product_id)
        elif principal.product_filter() is not None:
            # the devices' products are known only once looked up: a credential scoped to some products
            # names the batch's product, and devices of any other product are refused `unauthorized`
            raise Forbidden("a credential scoped to products must name the batch's product_id")
        command = body.command(operator, batch_id=f"b-{uuid.uuid4().hex}")
        payload: SecretStr | None = None
        with DOMAIN_ERRORS:
            if body.mode is UnbindMode.QR:
                assert body.uid is not None
                assert body.ssid is not None
                assert body.password is not None
                validity = body.validity_s or svc.settings.unbinding_qr_validity_s
                batch, payload = await handlers.open_qr_batch(
                    p,
                    svc.tokens,
                    command,
                    uid=body.uid,
                    home_id=body.home_id,
                    ssid=body.ssid,
                    password=body.password,
                    validity=timedelta(seconds=validity),
                    time_zone_id=svc.settings.unbinding_qr_time_zone_id,
                    idempotency_key=idempotency_key,
                )
                created = payload is not None
            else:
                batch, created = await handlers.request_batch(p, command, idempotency_key=idempotency_key)
        svc.run_soon(batch.batch_id)
        answer = await progress(batch.batch_id)
        if payload is not None:
            # shown once: the QR content carries the Wi-Fi password and is never stored; the images likewise
            images = qr.render(payload)
            answer["qr_payload"] = payload.get_secret_value()
            answer["qr"] = {
                "payload": answer["qr_payload"],
                "svg": images.svg,
                "png_base64": base64.b64encode(images.png).decode("ascii"),
            }
        return answer, created

    @router.post(
        "/batches",
        status_code=status.HTTP_201_CREATED,
        dependencies=[Depends(security.require(EXECUTE))],
        summary="Unbind a list of devices, open a QR session, or submit a wired LAN scan",
    )
    async def create_batch(
        body: BatchBody,
        principal: CurrentPrincipal,
        response: Response,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        answer, created = await submit(body, principal, idempotency_key)
        if not created:
            response.status_code = status.HTTP_200_OK
        return answer

    @router.post(
        "/batches/csv",
        status_code=status.HTTP_201_CREATED,
        dependencies=[Depends(security.require(EXECUTE))],
        summary="Unbind the devices of an uploaded CSV (a `device_id` column, or one id per row)",
        openapi_extra={"requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}}},
    )
    async def create_batch_csv(
        request: Request,
        principal: CurrentPrincipal,
        response: Response,
        idempotency_key: IdempotencyKey = None,
        mode: Literal["list", "wired"] = "list",
        product_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        reason: Annotated[str | None, Query(min_length=1, max_length=1024)] = None,
        reset: bool = False,
        gateway_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    ) -> dict[str, Any]:
        try:
            ids = csvio.parse_device_ids(await request.body())
        except csvio.CsvError as e:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"body: {e}") from e
        try:
            body = BatchBody(
                mode=UnbindMode(mode),
                device_ids=ids,
                product_id=product_id,
                reason=reason,
                reset=reset,
                gateway_id=gateway_id,
            )
        except ValueError as e:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"body: {e}") from e
        answer, created = await submit(body, principal, idempotency_key)
        if not created:
            response.status_code = status.HTTP_200_OK
        return answer

    @router.post("/batches/dry-run", dependencies=[Depends(security.require(EXECUTE))])
    async def dry_run(body: DryRunBody, principal: CurrentPrincipal) -> list[dict[str, Any]]:
        """What a list batch would do now, device by device; nothing is written, no quota is taken."""
        predictions = await handlers.dry_run(p, account_of(principal), body.device_ids)
        return [
            {
                "device_id": x.device_id,
                "product_id": x.product_id,
                "would_unbind": x.would_unbind,
                "cause": None if x.cause is None else x.cause.value,
            }
            for x in predictions
        ]

    @router.get("/batches", dependencies=[Depends(security.require(READ))])
    async def list_batches(
        operator_id: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> list[dict[str, Any]]:
        """Batches newest first (of one operator account when named)."""
        return [_batch_view(b) for b in await views.batch_list(svc.batches, operator_id, limit)]

    @router.get("/batches/{batch_id}", dependencies=[Depends(security.require(READ))])
    async def get_batch(batch_id: BatchIdPath) -> dict[str, Any]:
        """Progress: devices done per state, refusals per cause."""
        return await progress(batch_id)

    @router.get("/batches/{batch_id}/results", dependencies=[Depends(security.require(READ))])
    async def batch_results(batch_id: BatchIdPath) -> list[dict[str, Any]]:
        await progress(batch_id)
        return await views.batch_results(svc.unbinds, batch_id)

    @router.get("/batches/{batch_id}/results.csv", dependencies=[Depends(security.require(READ))])
    async def batch_results_csv(batch_id: BatchIdPath) -> Response:
        await progress(batch_id)
        return _csv(csvio.records_csv(await views.batch_results(svc.unbinds, batch_id)), f"{batch_id}.csv")

    @router.post("/batches/{batch_id}/approve", dependencies=[Depends(security.require(ADMIN))])
    async def approve(batch_id: BatchIdPath, principal: CurrentPrincipal) -> dict[str, Any]:
        """A second administrator (not the batch's operator) lets a large batch run."""
        with DOMAIN_ERRORS:
            await handlers.approve_batch(p, batch_id, account_of(principal))
        svc.run_soon(batch_id)
        return await progress(batch_id)

    @router.post("/batches/{batch_id}/cancel", dependencies=[Depends(security.require(EXECUTE))])
    async def cancel(batch_id: BatchIdPath, principal: CurrentPrincipal) -> dict[str, Any]:
        """Devices not yet done are refused `cancelled`; calls in flight finish."""
        batch = await svc.batches.get(batch_id)
        if batch is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no batch {batch_id}")
        if batch.operator_id != account_of(principal):
            check(principal, ADMIN)  # someone else's batch: administrators only
        with DOMAIN_ERRORS:
            await handlers.cancel_batch(p, batch_id, account_of(principal))
        return await progress(batch_id)

    # --- authorizations -----------------------------------------------------------------------------

    async def manage(product_id: str, principal: Principal, change: AuthorizationChange) -> dict[str, Any]:
        """Append the record the change makes from the product's current state, as the caller."""
        by = {"actor": account_of(principal), "at": p.clock(), "platform_admin": principal.can(ADMIN)}
        with DOMAIN_ERRORS:
            record = await handlers.manage_authorization(p, product_id, lambda s: change.record(s, **by))
        return views.authorization_record(record)

    @router.get("/products/{product_id}/authorizations", dependencies=[Depends(security.require(READ))])
    async def authorizations(product_id: ProductPath) -> dict[str, Any]:
        """Who may unbind the product's devices now, and every record that made it so."""
        records = await svc.authorizations.records(product_id)
        state = authz.fold(product_id, records)
        return {
            "product_id": product_id,
            "owner": state.owner,
            "original_owner": state.original_owner,
            "grants": [
                {
                    "account": g.account,
                    "kind": g.kind.value,
                    "role": None if g.role is None else g.role.value,
                    "permissions": sorted(g.permissions),
                    "may_unbind": g.carries_unbind_permission(),
                }
                for g in state.grants.values()
            ],
            "records": [views.authorization_record(r) for r in records],
        }

    @router.post(
        "/products/{product_id}/authorizations/register",
        status_code=status.HTTP_201_CREATED,
        dependencies=[Depends(security.require(ADMIN))],
    )
    async def register(
        product_id: ProductPath, body: RegisterBody, principal: CurrentPrincipal
    ) -> dict[str, Any]:
        """Register a product with its owner account (and, for OEM products, its original PID owner)."""
        return await manage(product_id, principal, body)

    @router.post(
        "/products/{product_id}/authorizations/grants",
        status_code=status.HTTP_201_CREATED,
        dependencies=[Depends(security.require(EXECUTE, product_from="product_id"))],
    )
    async def grant(product_id: ProductPath, body: GrantBody, principal: CurrentPrincipal) -> dict[str, Any]:
        """The owner authorizes a partner, a space member's role, or (re-)grants the OEM original owner."""
        return await manage(product_id, principal, body)

    @router.post(
        "/products/{product_id}/authorizations/revocations",
        status_code=status.HTTP_201_CREATED,
        dependencies=[Depends(security.require(EXECUTE, product_from="product_id"))],
    )
    async def revoke(
        product_id: ProductPath, body: RevokeBody, principal: CurrentPrincipal
    ) -> dict[str, Any]:
        return await manage(product_id, principal, body)

    @router.post(
        "/products/{product_id}/authorizations/transfer",
        status_code=status.HTTP_201_CREATED,
        dependencies=[Depends(security.require(EXECUTE, product_from="product_id"))],
    )
    async def transfer(
        product_id: ProductPath, body: TransferBody, principal: CurrentPrincipal
    ) -> dict[str, Any]:
        """The PID moves to another account; the previous owner becomes the OEM original owner."""
        return await manage(product_id, principal, body)

    # --- quotas -------------------------------------------------------------------------------------

    @router.get("/quotas/{scope}/{subject}", dependencies=[Depends(security.require(READ))])
    async def quota_usage(scope: QuotaScope, subject: Annotated[str, Path(max_length=64)]) -> dict[str, Any]:
        """Today's counter: its limit, the units devices used, the units reserved in open blocks that no
        device took yet (`held`, free again by `held_until` at the latest), what remains, when it resets."""
        u = await handlers.usage(p, scope, subject)
        return {
            "scope": u.scope.value,
            "subject": u.subject,
            "day": u.day,
            "limit": u.limit,
            "used": u.used,
            "held": u.held,
            "held_until": u.held_until,
            "remaining": u.remaining,
            "resets_at": u.resets_at,
        }

    @router.put("/quotas/{scope}/{subject}", dependencies=[Depends(security.require(ADMIN))])
    async def set_quota(
        scope: QuotaScope,
        subject: Annotated[str, Path(max_length=64)],
        body: LimitBody,
        principal: CurrentPrincipal,
    ) -> dict[str, Any]:
        """Raise or lower one account's or product's daily limit, with the reason (kept in its history)."""
        with DOMAIN_ERRORS:
            o = await handlers.set_limit(
                p, scope, subject, limit=body.limit, reason=body.reason, actor=account_of(principal)
            )
        return {
            "scope": o.scope.value,
            "subject": o.subject,
            "seq": o.seq,
            "limit": o.limit,
            "reason": o.reason,
        }

    @router.get("/quotas/{scope}/{subject}/history", dependencies=[Depends(security.require(READ))])
    async def quota_history(
        scope: QuotaScope, subject: Annotated[str, Path(max_length=64)]
    ) -> list[dict[str, Any]]:
        return [
            {"seq": o.seq, "limit": o.limit, "reason": o.reason, "actor": o.actor, "at": o.at}
            for o in await svc.limits.history(scope, subject)
        ]

    # --- records ------------------------------------------------------------------------------------

    async def records(
        filters: RecordFilters, before: tuple[datetime, str] | None, limit: int
    ) -> list[dict[str, Any]]:
        chosen = {k: v for k, v in asdict(filters).items() if v is not None}
        if not chosen:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_ENTITY,
                "query: name a device_id, operator_id, product_id or day",
            )
        return await views.records_page(svc.unbinds, chosen, before=before, limit=limit)

    @router.get("/records", dependencies=[Depends(security.require(READ))])
    async def list_records(
        filters: Annotated[RecordFilters, Depends()],
        before_at: datetime | None = None,
        before_id: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Result records newest first; page on with `before_at`/`before_id` of the last one."""
        before = (before_at, before_id) if before_at is not None and before_id is not None else None
        return await records(filters, before, limit)

    @router.get("/records.csv", dependencies=[Depends(security.require(READ))])
    async def export_records(
        filters: Annotated[RecordFilters, Depends()],
        limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    ) -> Response:
        return _csv(csvio.records_csv(await records(filters, None, limit)), "unbind-records.csv")

    return router
