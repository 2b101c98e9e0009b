"""The Replicate Python client's `stream()` against Augur.

Usage (env AUGUR_URL, AUGUR_TOKEN): stream_client.py
Streams a prediction of `augur/demo-image` and checks that events arrive (logs are not
yielded by the client; the output file URL is) and that iteration ends at `done`.
"""

import os

import replicate


def main():
    client = replicate.Client(api_token=os.environ["AUGUR_TOKEN"], base_url=os.environ["AUGUR_URL"])
    events = list(
        client.stream(
            "augur/demo-image",
            input={"prompt": "a stream", "steps": 4, "step_ms": 50, "width": 16, "height": 16},
        )
    )
    text = [str(e) for e in events]
    assert any("/files/" in t for t in text), text
    print(f"stream ok: {len(events)} events")


if __name__ == "__main__":
    main()
