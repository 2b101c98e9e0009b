"""The files API through the official Replicate Python client, against a real Augur server.

Run by crates/server/tests/files.rs with AUGUR_URL, AUGUR_ADMIN_TOKEN, AUGUR_FILE_MAX_BYTES and
AUGUR_FILE_EXPIRY_SECS set (the server's own settings); AUGUR_FILES_CHECKS=expiry runs only the
expiry checks (against a server whose files expire in seconds). Every check raises on failure; the
script prints one line per check.
"""

import hashlib
import io
import json
import os
import pathlib
import struct
import tempfile
import time
import urllib.error
import urllib.request
import zlib

import httpx
import replicate
from replicate.exceptions import ReplicateError

URL = os.environ["AUGUR_URL"]
ADMIN = os.environ["AUGUR_ADMIN_TOKEN"]
MAX_BYTES = int(os.environ["AUGUR_FILE_MAX_BYTES"])
EXPIRY_SECS = float(os.environ["AUGUR_FILE_EXPIRY_SECS"])


def check(name, cond, detail=""):
    if not cond:
        raise AssertionError(f"{name}: {detail}")
    print(f"ok - {name}")


def call(method, path, token, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        URL + path,
        method=method,
        data=data,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def new_account(username):
    status, _, body = call("POST", "/v1/accounts", ADMIN, {"username": username})
    assert status == 201, body
    status, _, body = call("POST", f"/v1/accounts/{username}/tokens", ADMIN, {})
    assert status == 201, body
    return json.loads(body)["token"]


def fetch(url, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return call_raw("GET", url, headers)


def call_raw(method, url, headers=None):
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def png(width, height):
    """A small valid RGB PNG."""
    raw = b"".join(b"\x00" + b"".join(bytes((x * 7 % 256, y * 5 % 256, 99)) for x in range(width)) for y in range(height))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def main_checks():
    cat = work / "cat.png"
    cat_bytes = png(40, 30)
    cat.write_bytes(cat_bytes)
    cat_sha = hashlib.sha256(cat_bytes).hexdigest()

    # 1. Upload, get, list.
    f = alice.files.create(cat, metadata={"caption": "a cat", "n": 2})
    check("files.create() describes the file", (f.name, f.content_type, f.size) == ("cat.png", "image/png", len(cat_bytes)), repr(f))
    check("files.create() gives the sha256", f.checksums.get("sha256") == cat_sha, repr(f.checksums))
    check("files.create() keeps the metadata", f.metadata == {"caption": "a cat", "n": 2}, repr(f.metadata))
    check("files.create() gives urls.get", f.urls["get"] == f"{URL}/v1/files/{f.id}", repr(f.urls))
    check("files.create() gives an expiry", f.expires_at is not None and f.expires_at > f.created_at, repr(f))
    got = alice.files.get(f.id)
    check("files.get() reads it back", (got.id, got.size, got.checksums) == (f.id, f.size, f.checksums), repr(got))
    listed = alice.files.list()
    check("files.list() lists it", [x.id for x in listed] == [f.id], repr(listed))

    # 2. The signed download URL works without a token, with safe headers; a tampered one does not.
    download = f.urls["download"]
    status, headers, body = fetch(download)
    check("the signed URL downloads the bytes without a token", status == 200 and body == cat_bytes, status)
    check("served files are nosniff", headers.get("X-Content-Type-Options") == "nosniff", dict(headers))
    check("served files are sandboxed", "sandbox" in headers.get("Content-Security-Policy", ""), dict(headers))
    check("a PNG is served inline as image/png", headers.get("Content-Type") == "image/png" and not headers.get("Content-Disposition"), dict(headers))
    sig_at = download.index("signature=") + len("signature=")
    flipped = "0" if download[sig_at] != "0" else "1"
    status, _, body = fetch(download[:sig_at] + flipped + download[sig_at + 1 :])
    check("a bad signature is refused", status == 403 and json.loads(body)["code"] == "invalid_signature", body)
    status, _, body = fetch(download.replace("owner=alice", "owner=bob"))
    check("a signature is bound to its owner", status == 403, body)
    status, _, body = fetch(f"{URL}/v1/files/{f.id}/download")
    check("without a signature the download needs a token", status == 401, body)
    status, _, body = fetch(f"{URL}/v1/files/{f.id}/download", alice_token)
    check("the owner's token downloads it", status == 200 and body == cat_bytes, status)

    # 3. Another account sees nothing of it.
    try:
        bob.files.get(f.id)
        raise AssertionError("bob read alice's file")
    except ReplicateError as e:
        check("another account's file is a 404", e.status == 404, repr(e))
    try:
        bob.files.delete(f.id)
        raise AssertionError("bob deleted alice's file")
    except ReplicateError as e:
        check("another account cannot delete it", e.status == 404, repr(e))
    check("another account's list is empty", bob.files.list() == [], "")
    status, _, _ = fetch(f"{URL}/v1/files/{f.id}/download", bob_token)
    check("another account's token cannot download it", status == 404, status)

    # 4. run() with a file input: the client uploads it (its default), the model sees the bytes.
    with open(cat, "rb") as handle:
        out = alice.run("augur/echo", input={"image": handle, "prompt": "hi"})
    image = out["image"]
    check("run() with a file input returns the bytes the model saw", image.read() == cat_bytes, repr(out))
    check("other inputs pass unchanged", out["prompt"] == "hi", repr(out))
    uploads = [x for x in alice.files.list() if x.id != f.id]
    check("run() uploaded through POST /v1/files", len(uploads) == 1 and uploads[0].checksums["sha256"] == cat_sha, repr(uploads))
    # bob names alice's file in an input: refused at once, naming the field, as if missing.
    try:
        bob.run("augur/echo", input={"image": f.urls["get"]})
        raise AssertionError("bob's model read alice's file")
    except ReplicateError as e:
        check("another account's file in an input is a 422 naming the field", e.status == 422 and "input.image" in (e.detail or "") and "not found" in (e.detail or ""), repr(e))

    # 5. Types a browser would run are served as attachments.
    svg = alice.files.create(io.BytesIO(b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"), filename="x.svg")
    check("an SVG keeps its type", svg.content_type == "image/svg+xml", svg.content_type)
    status, headers, _ = fetch(svg.urls["download"])
    check("an SVG is served as an attachment", status == 200 and headers.get("Content-Disposition", "").startswith("attachment"), dict(headers))

    # 6. The size limit: a clear 413, read by the client rather than a broken pipe.
    big = work / "big.bin"
    big.write_bytes(os.urandom(MAX_BYTES + 1))
    try:
        alice.files.create(big)
        raise AssertionError("an upload over the limit was accepted")
    except ReplicateError as e:
        check("an upload over the limit is a 413", e.status == 413 and "limit" in (e.detail or ""), repr(e))
    exact = work / "exact.bin"
    exact.write_bytes(os.urandom(MAX_BYTES))
    check("an upload at the limit is accepted", alice.files.create(exact).size == MAX_BYTES, "")
    response = httpx.post(
        f"{URL}/v1/files",
        headers={"Authorization": "Bearer aug_wrong"},
        files={"content": ("big.bin", big.read_bytes(), "application/octet-stream")},
    )
    check("a bad token on an upload is a JSON 401", response.status_code == 401 and response.json()["code"] == "invalid_token", response.text)
    response = httpx.post(f"{URL}/v1/files", headers={"Authorization": f"Bearer {alice_token}"}, files={"other": ("x", b"abc")})
    check("an upload without content names the field", response.status_code == 422 and response.json()["field"] == "content", response.text)
    response = httpx.post(f"{URL}/v1/files", headers={"Authorization": f"Bearer {alice_token}"}, files={"content": ("x", b"abc")}, data={"metadata": "{not json"})
    check("bad metadata names the field", response.status_code == 422 and response.json()["field"] == "metadata", response.text)

    # 7. Delete: the file and its bytes are gone.
    check("files.delete() answers 204", alice.files.delete(f.id) is True, "")
    try:
        alice.files.get(f.id)
        raise AssertionError("a deleted file is still there")
    except ReplicateError as e:
        check("a deleted file is a 404", e.status == 404, repr(e))
    status, _, _ = fetch(download)
    check("a deleted file's signed URL is a 404", status == 404, status)


def expiry_checks():
    # 8. Expiry: the signed URL stops working, and the file is gone.
    short = alice.files.create(io.BytesIO(b"short-lived"), filename="short.txt")
    status, _, body = fetch(short.urls["download"])
    check("a fresh file downloads", status == 200 and body == b"short-lived", status)
    time.sleep(EXPIRY_SECS + 1.2)
    status, _, body = fetch(short.urls["download"])
    check("an expired signed URL is refused", status == 403 and json.loads(body)["code"] == "url_expired", body)
    try:
        alice.files.get(short.id)
        raise AssertionError("an expired file is still there")
    except ReplicateError as e:
        check("an expired file is a 404", e.status == 404, repr(e))


alice_token, bob_token = new_account("alice"), new_account("bob")
alice = replicate.Client(api_token=alice_token, base_url=URL)
bob = replicate.Client(api_token=bob_token, base_url=URL)
work = pathlib.Path(tempfile.mkdtemp())
if os.environ.get("AUGUR_FILES_CHECKS") == "expiry":
    expiry_checks()
else:
    main_checks()
print("all files checks passed")
