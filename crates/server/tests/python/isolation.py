"""Two accounts, each with its own token, through the official Replicate Python client.

Run by crates/server/tests/credits.rs with AUGUR_URL, AUGUR_ADMIN_TOKEN, AUGUR_TOKEN_A and
AUGUR_TOKEN_B set. B must not see A's prediction in any way (get, cancel, stream, webhook
log, lists, /v1/events); the admin sees both.
"""

import json
import os
import threading
import time
import urllib.error
import urllib.request

import replicate
from replicate.exceptions import ReplicateError

URL = os.environ["AUGUR_URL"]
ADMIN = os.environ["AUGUR_ADMIN_TOKEN"]
TOKEN_A = os.environ["AUGUR_TOKEN_A"]
TOKEN_B = os.environ["AUGUR_TOKEN_B"]


def client(token):
    return replicate.Client(api_token=token, base_url=URL)


def status_of(token, method, path):
    request = urllib.request.Request(
        URL + path, method=method, headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def collect_events(token, into, stop):
    """Reads /v1/events as `token` until `stop` is set, keeping every prediction id seen."""
    request = urllib.request.Request(
        URL + "/v1/events", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        for raw in response:
            line = raw.decode().strip()
            if line.startswith("data:") and line != "data:":
                try:
                    into.add(json.loads(line[5:])["id"])
                except (ValueError, KeyError):
                    pass
            if stop.is_set():
                return


a, b, admin = client(TOKEN_A), client(TOKEN_B), client(ADMIN)

seen_by_b, stop = set(), threading.Event()
listener = threading.Thread(target=collect_events, args=(TOKEN_B, seen_by_b, stop), daemon=True)
listener.start()
time.sleep(0.5)

mine = a.models.predictions.create(model="augur/echo", input={"text": "a's secret"})
theirs = b.models.predictions.create(model="augur/echo", input={"text": "b's"})
mine.wait()
theirs.wait()
assert mine.status == "succeeded", mine.status

# B cannot read or cancel A's prediction: a 404, like a prediction that does not exist.
for action in (lambda: b.predictions.get(mine.id), lambda: b.predictions.cancel(mine.id)):
    try:
        action()
        raise AssertionError("B reached A's prediction")
    except ReplicateError as e:
        assert e.status == 404, e
for method, path in (
    ("GET", f"/v1/predictions/{mine.id}/stream"),
    ("GET", f"/v1/predictions/{mine.id}/webhooks"),
    ("GET", f"/api/predictions/{mine.id}"),
):
    status, body = status_of(TOKEN_B, method, path)
    missing, _ = status_of(TOKEN_B, method, path.replace(mine.id, "nosuchprediction"))
    assert status == 404 == missing, (path, status, body)
    assert b"a's secret" not in body

# Lists: each sees its own; the admin sees both.
listed_b = [p.id for p in b.predictions.list().results]
assert mine.id not in listed_b and theirs.id in listed_b, listed_b
listed_a = [p.id for p in a.predictions.list().results]
assert mine.id in listed_a and theirs.id not in listed_a, listed_a
listed_admin = [p.id for p in admin.predictions.list().results]
assert mine.id in listed_admin and theirs.id in listed_admin, listed_admin
assert admin.predictions.get(mine.id).status == "succeeded"

# The event firehose: B heard of its own prediction, never of A's.
deadline = time.time() + 10
while theirs.id not in seen_by_b and time.time() < deadline:
    time.sleep(0.05)
stop.set()
assert theirs.id in seen_by_b, seen_by_b
assert mine.id not in seen_by_b, seen_by_b

# Each account reads its own credits and the other's is not found.
status, body = status_of(TOKEN_B, "GET", "/v1/account")
assert status == 200 and json.loads(body)["username"] == "bob", body
status, _ = status_of(TOKEN_B, "GET", "/v1/accounts/alice")
assert status == 404, status

print("all isolation checks passed")
