"""Schemathesis hooks for Augur's API (loaded by scripts/schemathesis/schemathesis.toml).

The document types every list cursor as `format: cursor`: text the server made for a page's
`next` or `previous` link, opaque to clients. A random string is not one (the server answers
400 `invalid_cursor`, as documented), so without help every positive request with a cursor
would be "rejected". This registers what the format means, so positive cases carry
well-formed cursors at arbitrary positions (any time, any id, either direction): the server
must page from any of them, never 400 or 5xx. It mirrors `encode_cursor` in
crates/api/src/predictions.rs: URL-safe base64 (no padding) of `v1|b1:<micros>:<record id>`.
"""

import base64
import json

import schemathesis
from hypothesis import strategies as st


def _encode(direction: str, micros: int, record_id: str) -> str:
    text = f"{direction}:{micros}:{record_id}".encode()
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


# Record ids: a prediction's, a file's, or `owner/name`; never empty, no control characters,
# and at most 256 bytes (60 characters of at most 4 bytes each).
_RECORD_ID = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=60
)

schemathesis.openapi.format(
    "cursor",
    st.builds(
        _encode,
        st.sampled_from(["v1", "b1"]),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        _RECORD_ID,
    ),
)

# `format: json-object` (a file's `metadata` field): JSON text of an object.
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
schemathesis.openapi.format(
    "json-object", st.dictionaries(st.text(max_size=10), _JSON, max_size=3).map(json.dumps)
)

# `format: duration-text` (`Cancel-After`): 1 s to 7 days in humantime's units, as
# `parse_duration` reads them.
schemathesis.openapi.format(
    "duration-text",
    st.one_of(
        st.integers(1, 7 * 24 * 3600).map(lambda n: f"{n}s"),
        st.integers(1, 7 * 24 * 60).map(lambda n: f"{n}m"),
        st.tuples(st.integers(0, 167), st.integers(1, 59)).map(lambda hm: f"{hm[0]}h{hm[1]}m"),
    ),
)

# `format: prefer` (`Prefer`, RFC 7240): `wait` or `wait=N` (1 to 60 s), maybe beside other
# preferences, which the server ignores.
schemathesis.openapi.format(
    "prefer",
    st.one_of(
        st.just("wait"),
        st.integers(1, 60).map(lambda n: f"wait={n}"),
        st.just("respond-async"),
    ),
)

# `format: event-id` (`Last-Event-ID`): `revision:index`, as a stream sends in its `id:` lines.
schemathesis.openapi.format(
    "event-id",
    st.builds(lambda r, i: f"{r}:{i}", st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1)),
)

# `format: media-type` (a file's `type`): `type/subtype` of RFC 6838 token characters, maybe
# with parameters, as `is_media_type` in crates/api/src/uploads.rs reads it.
_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789!#$&-^_.+", min_size=1, max_size=20)
schemathesis.openapi.format(
    "media-type",
    st.builds(
        lambda a, b, p: f"{a}/{b}{p}",
        _TOKEN,
        _TOKEN,
        st.sampled_from(["", "; charset=utf-8"]),
    ),
)
