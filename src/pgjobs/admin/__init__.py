"""A mountable admin page for a job system.

Install it with `pip install 'pgjobs-queue[admin]'`, then mount the app
that `create_admin_app` returns in any ASGI application::

    from pgjobs.admin import create_admin_app

    admin = create_admin_app(jobs, authorize=is_staff)
    app.mount("/admin/jobs", admin)
"""

from __future__ import annotations

try:
    import itsdangerous  # noqa: F401
    import jinja2  # noqa: F401
    import python_multipart  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:
    raise ImportError(
        f"pgjobs.admin needs the admin extra, which is not installed ({exc}); "
        "install it with: pip install 'pgjobs-queue[admin]'"
    ) from exc

from pgjobs.admin._app import create_admin_app
from pgjobs.admin._security import Authorize

__all__ = ["Authorize", "create_admin_app"]
