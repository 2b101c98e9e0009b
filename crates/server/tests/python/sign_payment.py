"""Signs a Polar-shaped order.paid payload with the PyPI standardwebhooks library.

Usage: sign_payment.py SECRET MSG_ID TIMESTAMP PAYLOAD_JSON; prints the webhook-signature
header value. A Polar dashboard secret (`polar_whs_...`) signs as Polar does: its SDKs
base64-encode the text and hand that to Standard Webhooks.
"""

import base64
import sys
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook

secret, msg_id, timestamp, payload = sys.argv[1:5]
if secret.startswith("polar_whs_"):
    secret = base64.b64encode(secret.encode()).decode()
at = datetime.fromtimestamp(int(timestamp), tz=timezone.utc)
print(Webhook(secret).sign(msg_id, at, payload))
