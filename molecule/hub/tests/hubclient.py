"""A JupyterHub client that the tests run inside the container with the hub environment's Python.

It does what a user's browser does, over HTTPS that trusts only the role's self-signed certificate: GET the
login form, POST it with the _xsrf token, then (with the session's cookie and the XSRF header) ask the hub's
REST API for a token, start the user's server, wait until it is ready, and talk to the server with the
token: its REST API and a kernel over a websocket (tornado, which the hub environment has). Prints one JSON
object. Usage: python hubclient.py ACTION [ARGS...]

  flow USER CODE     log in, start the server, run CODE in a new kernel (its stdout, the kernel's name)
  get USER PATH      with USER's token GET PATH: {"status": code, ...}; USER "-": no token, redirects followed
  load N TIMEOUT     load1..loadN log in and start at once, each waiting up to TIMEOUT s for a ready server:
                     {"ready": {user: seconds}, "failures": {user: why}, "statuses": [...]}
  start USER         log in and start a fresh server for USER
  stop USER          stop USER's server
  servers USER       the servers the hub's API shows USER (an admin sees everyone's)
"""

import asyncio
import json
import ssl
import sys
import threading
import time
import uuid

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

BASE = "https://127.0.0.1:8888/"
CA = "/etc/jupyter/tls/jupyter.crt"
PASSWORD = "hub-test-password"
STATUSES: list[int] = []  # every HTTP status any request got (the load test looks for 5xx)
LOCK = threading.Lock()


def request(session: requests.Session, method: str, path: str, **kw) -> requests.Response:
    answer = session.request(method, BASE + path, verify=CA, timeout=60, **kw)
    with LOCK:
        STATUSES.extend(r.status_code for r in [*answer.history, answer])
    return answer


def login(user: str) -> requests.Session:
    session = requests.Session()
    request(session, "GET", "hub/login")
    xsrf = session.cookies.get("_xsrf", path="/hub/")
    answer = request(
        session,
        "POST",
        "hub/login",
        data={"username": user, "password": PASSWORD, "_xsrf": xsrf},
        allow_redirects=False,
    )
    if answer.status_code != 302:
        raise SystemExit(json.dumps({"error": f"login of {user}: HTTP {answer.status_code}"}))
    # Logging in binds a new _xsrf cookie to the session; the API wants that one in X-XSRFToken.
    session.headers["X-XSRFToken"] = session.cookies.get("_xsrf", path="/hub/")
    return session


def token(session: requests.Session, user: str) -> str:
    answer = request(session, "POST", f"hub/api/users/{user}/tokens", json={"note": "hub tests"})
    answer.raise_for_status()
    return answer.json()["token"]


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"token {tok}"}


def stop(tok: str, user: str, timeout: float = 120) -> int:
    """Stop USER's server if it runs and wait until the hub shows none; the DELETE's status."""
    answer = request(requests.Session(), "DELETE", f"hub/api/users/{user}/server", headers=auth(tok))
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        model = request(requests.Session(), "GET", f"hub/api/users/{user}", headers=auth(tok)).json()
        if "" not in model.get("servers", {}):
            return answer.status_code
        time.sleep(1)
    raise SystemExit(json.dumps({"error": f"{user}'s server still there {timeout} s after DELETE"}))


def start(tok: str, user: str, timeout: float = 300) -> float:
    """Start a fresh server for USER; the seconds until the hub reports it ready.

    A server left from an earlier test is stopped first: it may have been idle for most of the culler's
    timeout (60 s here) and be culled while the test uses it.
    """
    stop(tok, user)
    began = time.monotonic()
    answer = request(requests.Session(), "POST", f"hub/api/users/{user}/server", headers=auth(tok))
    if answer.status_code not in (201, 202):
        raise SystemExit(json.dumps({"error": f"start {user}: HTTP {answer.status_code} {answer.text}"}))
    while time.monotonic() - began < timeout:
        model = request(requests.Session(), "GET", f"hub/api/users/{user}", headers=auth(tok)).json()
        server = model.get("servers", {}).get("")
        if server and server.get("ready"):
            return time.monotonic() - began
        if not server and time.monotonic() - began > 10:  # the hub gave up (its start timeout) or it failed
            raise SystemExit(json.dumps({"error": f"{user}'s server failed to start: {model}"}))
        time.sleep(1)
    raise SystemExit(json.dumps({"error": f"{user}'s server not ready after {timeout} s"}))


async def execute(tok: str, user: str, code: str) -> dict:
    session = requests.Session()
    kernel = request(session, "POST", f"user/{user}/api/kernels", headers=auth(tok), json={}).json()
    url = BASE.replace("https", "wss") + f"user/{user}/api/kernels/{kernel['id']}/channels"
    context = ssl.create_default_context(cafile=CA)
    socket = await websocket_connect(HTTPRequest(url, headers=auth(tok), ssl_options=context))
    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id,
        "msg_type": "execute_request",
        "username": user,
        "session": msg_id,
        "version": "5.3",
    }
    content = {
        "code": code,
        "silent": False,
        "store_history": False,
        "user_expressions": {},
        "allow_stdin": False,
    }
    message = {"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": "shell"}
    await socket.write_message(json.dumps(message))
    stdout, errors = "", []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        raw = await asyncio.wait_for(socket.read_message(), timeout=120)
        reply = json.loads(raw)
        if reply.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = reply["header"]["msg_type"]
        if kind == "stream":
            stdout += reply["content"]["text"]
        elif kind == "error":
            errors.append(reply["content"]["evalue"])
        elif kind == "status" and reply["content"]["execution_state"] == "idle":
            break
    socket.close()
    request(session, "DELETE", f"user/{user}/api/kernels/{kernel['id']}", headers=auth(tok))
    return {"stdout": stdout, "errors": errors, "kernel": kernel["name"]}


def main(action: str, *args: str) -> dict:
    if action == "flow":
        user, code = args
        tok = token(login(user), user)
        seconds = start(tok, user)
        return {"token": tok, "ready_s": seconds, **asyncio.run(execute(tok, user, code))}
    if action == "get":
        user, path = args
        headers = {} if user == "-" else auth(token(login(user), user))
        # A stranger's redirects are followed to where they end (the login page, or a refusal).
        answer = request(requests.Session(), "GET", path, headers=headers, allow_redirects=user == "-")
        return {
            "status": answer.status_code,
            "url": answer.url,
            "location": answer.headers.get("Location", ""),
        }
    if action == "servers":
        (user,) = args
        tok = token(login(user), user)
        users = request(requests.Session(), "GET", "hub/api/users", headers=auth(tok)).json()
        return {u["name"]: sorted(u.get("servers", {})) for u in users}
    if action == "stop":
        (user,) = args
        tok = token(login(user), user)
        return {"status": stop(tok, user)}
    if action == "start":
        (user,) = args
        tok = token(login(user), user)
        return {"ready_s": start(tok, user)}
    if action == "load":
        count, timeout = int(args[0]), float(args[1])
        ready: dict[str, float] = {}
        failures: dict[str, str] = {}

        def one(user: str) -> None:
            try:
                began = time.monotonic()
                tok = token(login(user), user)
                start(tok, user, timeout)
                ready[user] = time.monotonic() - began
            except (SystemExit, Exception) as exc:
                failures[user] = str(exc)

        threads = [threading.Thread(target=one, args=(f"load{i}",)) for i in range(1, count + 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {"ready": ready, "failures": failures, "statuses": sorted(set(STATUSES))}
    raise SystemExit(f"unknown action {action}")


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
