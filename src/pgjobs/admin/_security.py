"""Authorization, CSRF tokens and flash messages of the admin page.

The CSRF defence is a signed token bound to a session cookie: each browser
gets a random session id in an HttpOnly cookie, and every form carries that
id signed with the app's secret key and a timestamp. A POST passes only when
the token's signature is valid, it is younger than the maximum age, and it
names the id in the request's own cookie. Another site can make a browser
send the cookie, but it cannot read the page to learn the token.
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeAlias

import itsdangerous
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

Authorize: TypeAlias = Callable[[Request], bool | Awaitable[bool]]
"""A callable that receives the request and returns True to allow it."""

FlashLevel = Literal["success", "error"]

SESSION_COOKIE = "pgjobs_admin_session"
FLASH_COOKIE = "pgjobs_admin_flash"
CSRF_FIELD = "csrf_token"
FLASH_MAX_AGE = 300


class AuthorizeMiddleware:
    """ASGI middleware that returns 403 unless `authorize(request)` is true."""

    def __init__(self, app: ASGIApp, authorize: Authorize) -> None:
        self.app = app
        self.authorize = authorize

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        allowed = self.authorize(Request(scope, receive))
        if inspect.isawaitable(allowed):
            allowed = await allowed
        if allowed is not True:
            response = PlainTextResponse(
                "403 Forbidden: the admin page did not authorize this request",
                status_code=403,
            )
            await response(scope, receive, send)
            return

        await self.app(scope, receive, send)


def allow_all(request: Request) -> bool:
    """Allow every request; used only with `insecure_allow_all=True`."""
    return True


class CsrfProtection:
    """Issues and checks CSRF tokens and signs flash messages."""

    def __init__(self, secret_key: str, *, max_age: int) -> None:
        self.max_age = max_age
        self._tokens = itsdangerous.URLSafeTimedSerializer(
            secret_key, salt="pgjobs.admin.csrf"
        )
        self._flashes = itsdangerous.URLSafeTimedSerializer(
            secret_key, salt="pgjobs.admin.flash"
        )

    def session_id(self, request: Request) -> str | None:
        """Return the session id from the request's cookie, if it has one."""
        value = request.cookies.get(SESSION_COOKIE)
        if value is None or not 16 <= len(value) <= 128:
            return None
        return value

    def ensure_session(self, request: Request) -> str:
        """Return the request's session id, making a new one if it has none.

        The new id is kept in `request.state` until `set_cookies` writes it.
        """
        existing = self.session_id(request)
        if existing is not None:
            return existing
        created: str | None = getattr(request.state, "new_session_id", None)
        if created is None:
            created = secrets.token_urlsafe(32)
            request.state.new_session_id = created
        return created

    def token(self, request: Request) -> str:
        """Return a CSRF token for the request's session."""
        return str(self._tokens.dumps(self.ensure_session(request)))

    def is_valid(self, request: Request, token: str | None) -> bool:
        """Check that `token` is signed, unexpired and bound to this session."""
        session = self.session_id(request)
        if session is None or not token:
            return False
        try:
            signed_session = self._tokens.loads(token, max_age=self.max_age)
        except itsdangerous.BadData:
            return False
        return isinstance(signed_session, str) and secrets.compare_digest(
            signed_session, session
        )

    def set_flash(
        self, request: Request, response: Response, level: FlashLevel, text: str
    ) -> None:
        """Attach a message that the next page shown to this browser displays."""
        value = self._flashes.dumps({"level": level, "text": text})
        response.set_cookie(
            FLASH_COOKIE,
            str(value),
            max_age=FLASH_MAX_AGE,
            path=cookie_path(request),
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )

    def pop_flash(self, request: Request) -> dict[str, Any] | None:
        """Return the pending flash message, if its signature is valid.

        The caller must clear the cookie with `set_cookies(..., clear_flash=True)`.
        """
        value = request.cookies.get(FLASH_COOKIE)
        if not value:
            return None
        try:
            flash = self._flashes.loads(value, max_age=FLASH_MAX_AGE)
        except itsdangerous.BadData:
            return None
        if not isinstance(flash, dict) or flash.get("level") not in (
            "success",
            "error",
        ):
            return None
        return {"level": flash["level"], "text": str(flash.get("text", ""))}

    def set_cookies(
        self, request: Request, response: Response, *, clear_flash: bool
    ) -> None:
        """Write a new session cookie and clear a shown flash message."""
        created = getattr(request.state, "new_session_id", None)
        secure = request.url.scheme == "https"
        if created is not None:
            response.set_cookie(
                SESSION_COOKIE,
                created,
                path=cookie_path(request),
                httponly=True,
                samesite="lax",
                secure=secure,
            )
        if clear_flash and FLASH_COOKIE in request.cookies:
            response.delete_cookie(
                FLASH_COOKIE,
                path=cookie_path(request),
                httponly=True,
                samesite="lax",
                secure=secure,
            )


def cookie_path(request: Request) -> str:
    """Return the mount path of the admin app, so its cookies stay inside it."""
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return root + "/"
