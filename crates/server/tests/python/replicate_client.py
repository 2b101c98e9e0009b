"""The official Replicate Python client against a real Augur server.

Run by crates/server/tests/replicate_python.rs with AUGUR_URL and AUGUR_TOKEN set. Every check
raises on failure; the script prints one line per check.
"""

import os
import struct
import sys
import time
import urllib.request
import zlib

import replicate
from replicate.exceptions import ModelError, ReplicateError

BASE = os.environ["AUGUR_URL"]
TOKEN = os.environ["AUGUR_TOKEN"]
client = replicate.Client(api_token=TOKEN, base_url=BASE)


def check(name, cond, detail=""):
    if not cond:
        raise AssertionError(f"{name}: {detail}")
    print(f"ok - {name}")


def decode_png(data):
    """Decodes an 8-bit RGB PNG far enough to prove it is whole; returns (width, height)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    pos, idat, width, height = 8, b"", None, None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert (depth, color) == (8, 2), "expected 8-bit RGB"
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    assert len(raw) == height * (1 + width * 3), "pixel data has the wrong size"
    return width, height


def fetch(url):
    url = getattr(url, "url", url)
    with urllib.request.urlopen(str(url), timeout=30) as r:
        return r.read()


# 1. replicate.run() with an owner/name reference blocks (Prefer: wait) and returns the output.
out = client.run(
    "augur/demo-image",
    input={"prompt": "a red fox", "width": 96, "height": 64, "steps": 3, "step_ms": 20},
)
check("run() returns a URL", str(getattr(out, "url", out)).startswith(BASE + "/files/"), repr(out))
check("run() output decodes at the requested size", decode_png(fetch(out)) == (96, 64))

# 2. run() with owner/name:version goes through POST /v1/predictions with a version.
model = client.models.get("augur/demo-image")
version = model.latest_version.id
check("models.get() describes the model", model.owner == "augur" and len(version) == 64)
out = client.run(
    f"augur/demo-image:{version}",
    input={"prompt": "versioned", "width": 40, "height": 30, "steps": 2, "step_ms": 10},
)
check("run(owner/name:version) decodes", decode_png(fetch(out)) == (40, 30))

# 3. predictions.create + wait, then download.
p = client.predictions.create(
    model="augur/demo-image",
    input={"prompt": "a lighthouse", "width": 128, "height": 72, "steps": 5, "step_ms": 50},
)
check("create() starts the prediction", p.status in ("starting", "processing"), p.status)
check("create() returns absolute urls", p.urls["get"] == f"{BASE}/v1/predictions/{p.id}")
p.wait()
check("wait() ends succeeded", p.status == "succeeded", f"{p.status} {p.error}")
check("progress is parsed from the logs", p.progress is not None and p.progress.current == 5, repr(p.progress))
check("metrics are reported", p.metrics and p.metrics.get("predict_time", 0) > 0, repr(p.metrics))
check("created output decodes at the requested size", decode_png(fetch(p.output)) == (128, 72))

# 4. predictions.create with a version, and get.
p2 = client.predictions.create(version=version, input={"prompt": "by version", "width": 16, "height": 16, "steps": 1, "step_ms": 0})
p2.wait()
check("create(version=) succeeds", p2.status == "succeeded")
got = client.predictions.get(p2.id)
check("get() returns the same prediction", got.id == p2.id and got.output == p2.output)

# 5. Cancel through the client ends canceled.
p3 = client.predictions.create(
    model="augur/demo-image",
    input={"prompt": "too slow", "width": 16, "height": 16, "steps": 100, "step_ms": 100},
)
deadline = time.time() + 10
while p3.status == "starting" and time.time() < deadline:
    time.sleep(0.1)
    p3.reload()
check("the slow prediction starts", p3.status == "processing", p3.status)
p3.cancel()
p3.reload()
check("cancel() ends canceled", p3.status == "canceled", p3.status)
time.sleep(0.5)
p3.reload()
check("a canceled prediction stays canceled", p3.status == "canceled" and p3.output is None)

# 6. Bad input is a ReplicateError naming the field; a failed run raises ModelError.
try:
    client.predictions.create(model="augur/demo-image", input={"prompt": "x", "width": 1})
    raise AssertionError("invalid input accepted")
except ReplicateError as e:
    check("invalid input is a 422 naming the field", e.status == 422 and "width" in (e.detail or ""), repr(e))
try:
    client.predictions.create(model="acme/nothing", input={})
    raise AssertionError("unknown model accepted")
except ReplicateError as e:
    check("an unknown model is a 404", e.status == 404, repr(e))

# 7. Listing pages through everything created above.
ids = [pred.id for page in replicate.paginate(client.predictions.list) for pred in page]
check("list() pages through every prediction", {p.id, p2.id, p3.id} <= set(ids), f"{len(ids)} listed")

# 8. The echo model returns its input.
out = client.run("augur/echo", input={"text": "hello", "n": 3})
check("echo returns its input", out == {"text": "hello", "n": 3}, repr(out))

print("all Replicate Python client checks passed")
