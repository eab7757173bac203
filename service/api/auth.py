"""API-key authentication and the audit log.

A key is accepted from ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``
(DICOMweb clients send the latter); the web page also takes it once as
``?api_key=KEY`` and keeps it in an HttpOnly cookie.  Keys are compared in
constant time.  Every authenticated request is written to the ``audit`` table
(principal, client address, method, path, status) after its response.
"""

from __future__ import annotations

import hmac
import logging

from fastapi import HTTPException, Request, Response, status

from service.db.models import AuditEntry, utcnow
from service.db.session import Database

log = logging.getLogger(__name__)

COOKIE = "cmb_api_key"


def _match(keys: dict[str, str], presented: str) -> str | None:
    found = None
    for key, name in keys.items():
        if hmac.compare_digest(key.encode(), presented.encode()):
            found = name
    return found


def presented_key(request: Request, *, allow_cookie: bool = False) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    authz = request.headers.get("authorization", "")
    if authz.lower().startswith("bearer "):
        return authz[7:].strip()
    if allow_cookie:
        if "api_key" in request.query_params:
            # A browser link with the key: keep it in a cookie for the page's images.
            request.state.set_cookie = request.query_params["api_key"]
            return request.query_params["api_key"]
        return request.cookies.get(COOKIE)
    return None


def authenticate(request: Request, *, allow_cookie: bool = False) -> str:
    """The principal (key name) of the request, or 401."""
    keys: dict[str, str] = request.app.state.api_keys
    key = presented_key(request, allow_cookie=allow_cookie)
    name = _match(keys, key) if key else None
    if name is None:
        log.warning(
            "request refused: %s",
            "wrong API key" if key else "no API key",
            extra={
                "path": request.url.path,
                "client": request.client.host if request.client else None,
            },
        )
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a valid API key is required (X-API-Key or Authorization: Bearer)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.principal = name
    return name


def require_key(request: Request) -> str:
    return authenticate(request)


def require_key_or_cookie(request: Request) -> str:
    return authenticate(request, allow_cookie=True)


def set_cookie_if_asked(request: Request, response: Response) -> None:
    key = getattr(request.state, "set_cookie", None)
    if key and getattr(request.state, "principal", None):
        response.set_cookie(COOKIE, key, httponly=True, samesite="strict")


def audit(db: Database, request: Request, status_code: int) -> None:
    principal = getattr(request.state, "principal", None)
    if principal is None:
        return
    with db.session() as s:
        s.add(
            AuditEntry(
                at=utcnow(),
                principal=principal[:64],
                client=(request.client.host if request.client else None),
                method=request.method,
                path=request.url.path[:2000],
                status=status_code,
            )
        )
