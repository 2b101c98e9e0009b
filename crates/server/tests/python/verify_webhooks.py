"""Verifies recorded webhook deliveries with the official verifiers.

Usage: verify_webhooks.py <records.json> <whsec_secret>

records.json is a list of {"headers": {name: value}, "body": "<raw body>"} as a receiver got
them. Each must verify with the Standard Webhooks library (PyPI `standardwebhooks`) and with
the Replicate Python client's `Webhooks.validate`; a tampered body must fail both.
"""

import json
import sys

from replicate.webhook import Webhooks, WebhookSigningSecret
from standardwebhooks.webhooks import Webhook


def main():
    records = json.load(open(sys.argv[1]))
    secret = sys.argv[2]
    standard = Webhook(secret)
    for record in records:
        headers, body = record["headers"], record["body"]
        payload = standard.verify(body, headers)
        assert payload["id"], payload
        Webhooks.validate(headers=headers, body=body, secret=WebhookSigningSecret(key=secret))
        tampered = body.replace('"', "'", 1)
        try:
            standard.verify(tampered, headers)
        except Exception:
            pass
        else:
            raise AssertionError("a tampered body verified")
        try:
            Webhooks.validate(headers=headers, body=tampered, secret=WebhookSigningSecret(key=secret))
        except Exception:
            pass
        else:
            raise AssertionError("a tampered body validated with the replicate client")
    print(f"verified {len(records)} deliveries")


if __name__ == "__main__":
    main()
