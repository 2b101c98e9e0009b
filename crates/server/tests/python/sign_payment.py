"""Signs a Polar-shaped order.paid payload with the PyPI standardwebhooks library.

Usage: sign_payment.py SECRET MSG_ID TIMESTAMP PAYLOAD_JSON; prints the webhook-signature
header value.
"""

import sys
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook

secret, msg_id, timestamp, payload = sys.argv[1:5]
at = datetime.fromtimestamp(int(timestamp), tz=timezone.utc)
print(Webhook(secret).sign(msg_id, at, payload))
