"""An idle-timeout warning that does not keep the session alive (FastAPI).

The page polls ``GET /session/status`` every 30 seconds. That route reads the session
*passively* (``Depends(passive_session)``: ``store.load(token, touch=False)``), so the poll
itself never slides the idle timeout: a tab left open still gets logged out on time. When
fewer than two minutes are left the page says so and offers "stay signed in", an ordinary
request (``POST /session/extend``) that does slide it.

Run it::

    python examples/idle_warning.py                 # http://127.0.0.1:8000/  (idle: 5 min)
    python examples/idle_warning.py --check URL     # the promise, checked in a few seconds

``STICKLESS_URL`` names the Redis / Valkey (without it an embedded Valkey is started, which
needs ``pip install 'stickless[embedded]'``); ``PORT`` the port (default 8000).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse

from stickless import Session, SessionConfig
from stickless.asgi import SessionMiddleware
from stickless.fastapi import passive_session, session

Passive = Annotated[Session, Depends(passive_session)]
"""The session, read without sliding its idle timeout."""
Active = Annotated[Session, Depends(session)]
"""The session, read as any request reads it (the idle timeout slides)."""

POLL_SECONDS = 30
WARN_SECONDS = 120

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>idle warning</title>
<p id="who"></p>
<p id="warning" hidden>You will be signed out in <b id="left"></b> s.
  <button id="stay">Stay signed in</button></p>
<script>
const POLL = %(poll)d * 1000, WARN = %(warn)d;
async function poll() {
  const r = await fetch("/session/status");          // passive: does not keep us signed in
  const s = await r.json();
  if (!s.signed_in) { document.getElementById("who").textContent = "Signed out."; return; }
  document.getElementById("who").textContent = "Signed in as " + s.user;
  document.getElementById("left").textContent = Math.round(s.seconds_left);
  document.getElementById("warning").hidden = s.seconds_left > WARN;
  setTimeout(poll, Math.min(POLL, Math.max(1000, (s.seconds_left - 1) * 1000)));
}
document.getElementById("stay").onclick = async () => {
  await fetch("/session/extend", {method: "POST"});   // an ordinary request: slides it
  poll();
};
poll();
</script>
"""


def create_app(url: str, *, idle_timeout: float = 300) -> FastAPI:
    """The app; sessions in the store at ``url``, signed out after ``idle_timeout`` s idle."""
    app = FastAPI(title="stickless idle warning")
    config = SessionConfig(idle_timeout=idle_timeout, touch_interval=0)
    app.add_middleware(SessionMiddleware, url=url, config=config, lazy=True)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE % {"poll": POLL_SECONDS, "warn": WARN_SECONDS}

    @app.post("/login/{user}")
    async def login(user: str, s: Active) -> dict[str, str]:
        s.login(user)
        return {"signed_in": user}

    @app.get("/session/status")
    async def status(s: Passive) -> dict[str, object]:
        if s.user_id is None:
            return {"signed_in": False}
        return {"signed_in": True, "user": s.user_id, "seconds_left": s.seconds_left}

    @app.post("/session/extend")
    async def extend(s: Active) -> dict[str, object]:
        if s.user_id is None:
            raise HTTPException(401, "signed out")
        return {"seconds_left": s.seconds_left}  # the load refreshed the idle timeout

    return app


def check(url: str) -> bool:
    """Polls do not keep a session alive; an ordinary request does. Prints PASS / FAIL."""
    from fastapi.testclient import TestClient

    with TestClient(create_app(url, idle_timeout=2.0)) as client:
        client.post("/login/ann")
        polled = []
        for _ in range(6):  # a poll every 0.5 s for 3 s: past the 2 s idle timeout
            polled.append(client.get("/session/status").json())
            time.sleep(0.5)
        ok_polls = polled[0]["signed_in"] and not polled[-1]["signed_in"]
        left = [p["seconds_left"] for p in polled if p["signed_in"]]
        ok_polls = ok_polls and left == sorted(left, reverse=True)  # counting down
        print(("PASS" if ok_polls else "FAIL") + ": polling does not keep the session alive")

        client.post("/login/bob")
        for _ in range(5):  # the same pace, but with "stay signed in" clicks
            client.post("/session/extend")
            time.sleep(0.5)
        ok_extend = client.get("/session/status").json()["signed_in"] is True
        print(("PASS" if ok_extend else "FAIL") + ": stay signed in keeps it alive")
    return bool(ok_polls and ok_extend)


def main() -> int:
    args = sys.argv[1:]
    with contextlib.ExitStack() as stack:
        url = args[1] if len(args) > 1 and args[0] == "--check" else os.environ.get("STICKLESS_URL")
        if not url:
            from stickless.embedded import start_standalone

            url = stack.enter_context(start_standalone()).url
            print(f"STICKLESS_URL not set: started an embedded Valkey at {url}")
        if args[:1] == ["--check"]:
            return 0 if check(url) else 1
        import uvicorn

        uvicorn.run(create_app(url), host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
