"""Deployments, hardware, collections, model search and page links through the official
Replicate Python client, against a real Augur server.

Run by crates/server/tests/deployments.rs with AUGUR_URL and AUGUR_ADMIN_TOKEN set; acts as two
new accounts of its own; prints one line per check and exits non-zero on the first failure.
"""

import json
import os
import sys
import urllib.error
import urllib.request

import replicate
from replicate.exceptions import ReplicateError

URL = os.environ["AUGUR_URL"]
ADMIN = os.environ["AUGUR_ADMIN_TOKEN"]


def check(name, cond, detail=""):
    if not cond:
        print(f"FAILED {name}: {detail}")
        sys.exit(1)
    print(f"ok - {name}")


def admin(method, path, body=None):
    request = urllib.request.Request(
        URL + path,
        method=method,
        data=json.dumps(body or {}).encode(),
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def account(name):
    admin("POST", "/v1/accounts", {"username": name})
    return admin("POST", f"/v1/accounts/{name}/tokens")["token"]


owner = "deployer"
client = replicate.Client(api_token=account(owner), base_url=URL)
stranger = replicate.Client(api_token=account("stranger"), base_url=URL)
echo = client.models.get("augur/echo")

# create / get / list / update / delete, as the client sends and parses them.
d = client.deployments.create(
    name=f"{owner}/web",
    model="augur/echo",
    version=echo.latest_version.id,
    hardware="default",
    min_instances=0,
    max_instances=2,
)
check("create answers a Deployment", (d.owner, d.name) == (owner, "web"), repr(d))
release = d.current_release
check("release 1 names the model and version",
      (release.number, release.model, release.version) == (1, "augur/echo", echo.latest_version.id),
      repr(release))
check("the configuration is kept",
      (release.configuration.hardware, release.configuration.min_instances,
       release.configuration.max_instances) == ("default", 0, 2),
      repr(release.configuration))
check("created_by is the caller", release.created_by.username == owner, repr(release.created_by))
got = client.deployments.get(f"{owner}/web")
check("get finds it", got.current_release.number == 1 and got.id == f"{owner}/web", repr(got))
page = client.deployments.list()
check("list holds it", [x.name for x in page.results] == ["web"], repr(page))

updated = client.deployments.update(owner, "web", max_instances=3)
check("update makes release 2",
      (updated.current_release.number, updated.current_release.configuration.max_instances) == (2, 3),
      repr(updated))
check("update keeps what it was not given",
      updated.current_release.model == "augur/echo"
      and updated.current_release.configuration.hardware == "default",
      repr(updated))

# Predictions through the deployment: the deployment's own namespace and the top-level one.
p = got.predictions.create(input={"text": "hi"})
p.wait()
check("deployment.predictions.create runs it", p.status == "succeeded" and p.output == {"text": "hi"},
      f"{p.status} {p.output} {p.error}")
raw = admin("GET", f"/v1/predictions/{p.id}")
check("the prediction names its deployment", raw.get("deployment") == f"{owner}/web", json.dumps(raw))
p = client.deployments.predictions.create(deployment=f"{owner}/web", input={"n": 1})
p.wait()
check("deployments.predictions.create runs it", p.output == {"n": 1}, f"{p.status} {p.output}")
p = client.predictions.create(deployment=f"{owner}/web", input={"n": 2})
p.wait()
check("predictions.create(deployment=...)", p.status == "succeeded" and p.output == {"n": 2},
      f"{p.status} {p.output}")

# Another account does not see it, exactly like a missing one.
for call in (lambda: stranger.deployments.get(f"{owner}/web"),
             lambda: stranger.deployments.update(owner, "web", max_instances=9),
             lambda: stranger.deployments.predictions.create(deployment=f"{owner}/web", input={})):
    try:
        call()
        check("another account's deployment is refused", False, "no error")
    except ReplicateError as e:
        check("another account's deployment is a 404", e.status == 404, repr(e))
check("another account's list is empty", stranger.deployments.list().results == [], "")

# Bad requests are errors naming the field.
try:
    client.deployments.create(name="w2", model="augur/echo", version=echo.latest_version.id,
                              hardware="gpu-a100-large", min_instances=0, max_instances=1)
    check("unknown hardware is refused", False, "created")
except ReplicateError as e:
    check("unknown hardware is a 422", e.status == 422 and "hardware" in (e.detail or ""), repr(e))

# Hardware, collections, search.
hardware = client.hardware.list()
check("hardware.list has the one sku", [h.sku for h in hardware] == ["default"], repr(hardware))
collections = client.collections.list()
check("collections.list has the one collection", [c.slug for c in collections.results] == ["all"],
      repr(collections))
everything = client.collections.get("all")
check("collections.get lists every model",
      sorted(f"{m.owner}/{m.name}" for m in everything.models) == ["augur/demo-image", "augur/echo"],
      repr(everything))
found = client.models.search("echo")
check("models.search finds by name", [m.name for m in found.results] == ["echo"], repr(found))

# previous links: page forward one at a time, then back.
for n in ("b", "c"):
    client.deployments.create(name=n, model="augur/echo", version=echo.latest_version.id,
                              hardware="default", min_instances=0, max_instances=1)
request = urllib.request.Request(URL + "/v1/deployments?limit=1",
                                 headers={"Authorization": f"Bearer {client._api_token}"})
with urllib.request.urlopen(request, timeout=10) as response:
    first = json.loads(response.read())
check("the first page has no previous", first["previous"] is None and first["next"], json.dumps(first))
second = client.deployments.list(first["next"])
third = client.deployments.list(second.next)
check("pages go newest first", [first["results"][0]["name"], second.results[0].name,
                                third.results[0].name] == ["c", "b", "web"], "")
back = client.deployments.list(third.previous)
check("previous goes back one page", [x.name for x in back.results] == ["b"], repr(back))
back = client.deployments.list(back.previous)
check("and back to the first", [x.name for x in back.results] == ["c"] and back.previous is None,
      repr(back))

check("delete answers true", client.deployments.delete(owner, "web") is True, "")
try:
    client.deployments.get(f"{owner}/web")
    check("a deleted deployment is gone", False, "found")
except ReplicateError as e:
    check("a deleted deployment is a 404", e.status == 404, repr(e))

print("all deployments client checks passed")
