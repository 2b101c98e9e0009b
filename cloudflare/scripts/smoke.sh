#!/usr/bin/env bash
# Calls every method of PROTOCOL.md once or more through call.mjs against a running Worker and
# checks the answers' status and a piece of their body, including the refusals (exists,
# conflict, not_found, lease_lost, insufficient_credits, limit_reached, invalid, bad_request)
# and the signature checks (replay, bad signature, stale timestamp).
#
#   cloudflare/scripts/smoke.sh STORE_URL      # e.g. "$AUGUR_TEST_CLOUDFLARE_URL"
#
# Uses a fresh namespace (the URL's is replaced). Prints one line per failed check and a
# summary; exits 1 if any check failed.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
url="${1:?usage: smoke.sh STORE_URL}"
url="${url%%\?*}?namespace=smoke$(od -An -tx1 -N6 /dev/urandom | tr -d ' \n')"
passed=0
failed=0

call() { node "$here/call.mjs" "$url" "$@" 2>&1; }

# expect NAME STATUS SUBSTRING OUTPUT
expect() {
    local name="$1" status="$2" want="$3" got="$4"
    if [[ "$got" == "$status "* && "$got" == *"$want"* ]]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL $name: wanted $status ...$want...; got: ${got:0:400}"
    fi
}

fnv_partition() {
    node -e 'let h=0xcbf29ce484222325n;for(const b of Buffer.from(process.argv[1])){h^=BigInt(b);h=(h*0x100000001b3n)&0xffffffffffffffffn};console.log(Number(h%256n))' "$1"
}

now=$(($(date +%s%N) / 1000))
acct="acct-$RANDOM"
other="other-$RANDOM"
p=$(fnv_partition "$acct")
key='{"kind":"prediction","id":"p1","partition":'$p'}'
rec() { # status expires_at data
    echo '{"key":'"$key"',"owner":"'"$acct"'","created_at":'$now',"status":"'"$1"'","parent":null,"expires_at":'"$2"',"data_removed":false,"body":"{\"id\":\"p1\",\"model\":\"a/b\",\"status\":\"'"$1"'\",\"created_at\":\"2026-01-01T00:00:00Z\"}","data":'"$3"'}'
}
item() { # lane id claimed
    echo '{"lane":"'"$1"'","id":"'"$2"'","group":'"$key"',"topic":"a/b","owner":"'"$acct"'","payload":"{}","run_at":'$now',"replace":true,"claimed":'"$3"'}'
}
entry() { # id delta held reason
    echo '{"account":"'"$acct"'","id":"'"$1"'","delta":'"$2"',"held":'"$3"',"reason":"'"$4"'","reference":null,"memo":null,"at":'$now'}'
}

expect hello 200 '"protocol":1' "$(call hello '{}')"
if [ "$failed" != 0 ]; then
    echo "smoke: the Worker does not answer hello; stopping"
    exit 1
fi

# write: insert with every effect, then the refusals.
expect write 200 '"revisions":[1]' "$(call write '{"account":"'"$acct"'","ops":[{"insert":'"$(rec starting null '"{\"output\":null}"')"'}],"effects":[{"enqueue":'"$(item jobs p1 null)"'},{"enqueue":'"$(item webhooks w1 null)"'},{"enqueue":'"$(item webhooks w2 null)"'},{"count":{"name":"made","delta":1,"limit":3}},{"append_events":{"stream":'"$key"',"events":[{"kind":"logs","data":"hi"}]}},{"post":'"$(entry g1 10 0 grant)"'},{"post":'"$(entry r1 0 4 reserve)"'}]}')"
expect write/exists 409 '"error":"exists"' "$(call write '{"account":"'"$acct"'","ops":[{"insert":'"$(rec starting null null)"'}],"effects":[]}')"
expect write/conflict 409 '"actual":1' "$(call write '{"account":"'"$acct"'","ops":[{"update":{"record":'"$(rec processing null null)"',"expected":5}}],"effects":[]}')"
expect write/not_found 404 '"error":"not_found"' "$(call write '{"account":"'"$acct"'","ops":[{"update":{"record":'"$(rec processing null null | sed 's/"id":"p1"/"id":"p9"/')"',"expected":1}}],"effects":[]}')"
expect write/insufficient 409 '"needed":7' "$(call write '{"account":"'"$acct"'","ops":[],"effects":[{"post":'"$(entry c1 -7 0 charge)"'}]}')"
expect write/limit 409 '"limit_reached"' "$(call write '{"account":"'"$acct"'","ops":[],"effects":[{"count":{"name":"made","delta":3,"limit":3}}]}')"
expect write/invalid 422 '"error":"invalid"' "$(call write '{"account":"'"$other"'","ops":[{"insert":'"$(rec starting null null)"'}],"effects":[]}')"
expect write/repeat 200 '"skipped_entries":["g1"]' "$(call write '{"account":"'"$acct"'","ops":[],"effects":[{"post":'"$(entry g1 10 0 grant)"'}]}')"
expect write/update 200 '"revisions":[2]' "$(call write '{"account":"'"$acct"'","ops":[{"update":{"record":'"$(rec processing null '"{\"output\":\"https://x/y.png\"}"')"',"expected":1}}],"effects":[{"append_events":{"stream":'"$key"',"events":[{"kind":"output","data":"a"},{"kind":"output","data":"b"}]}}]}')"

expect get 200 '"revision":2' "$(call get '{"key":'"$key"'}')"
expect get/unknown 200 '{"stored":null}' "$(call get '{"key":{"kind":"prediction","id":"nope","partition":1}}')"
expect list 200 '"next":null' "$(call list '{"kind":"prediction","owner":null,"status":null,"parent":null,"created_after":null,"created_before":null,"after":null,"limit":10}')"
expect list/owner 200 '"id":"p1"' "$(call list '{"kind":"prediction","owner":"'"$acct"'","status":"processing","parent":null,"created_after":null,"created_before":null,"after":null,"limit":1}')"
expect read_events 200 '"revision":2,"index":1' "$(call read_events '{"stream":'"$key"',"after":[1,0],"limit":10}')"
expect balance 200 '{"balance":10,"reserved":4}' "$(call balance '{"account":"'"$acct"'"}')"
expect ledger 200 '"seq":2' "$(call ledger '{"account":"'"$acct"'","before":null,"limit":1}')"
expect counters 200 '["made",1]' "$(call counters '{}')"
expect queue_stats 200 '"ready":1' "$(call queue_stats '{"lane":"jobs"}')"
expect items 200 '"id":"w2"' "$(call items '{"lane":"webhooks","group":'"$key"'}')"

# The queue: claim, renew, finish, requeue.
claimed="$(call claim '{"lane":"webhooks","worker":"w","lease_for":60000000,"max":5,"exclude_topics":[]}')"
expect claim/one-per-group 200 '"id":"w1"' "$claimed"
[[ "$claimed" != *'"id":"w2"'* ]] && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL claim: w2 went out with w1"; }
lease="$(echo "$claimed" | sed 's/^200 {"leases":\[\(.*\)\]}$/\1/')"
expect renew 200 '"lease"' "$(call renew '{"lease":'"$lease"',"extend_by":90000000}')"
expect finish 200 '{}' "$(call finish '{"lease":'"$lease"',"outcome":"done","attempt":{"at":'$now',"status":200,"error":null,"duration_ms":5}}')"
expect finish/lost 409 '"lease_lost"' "$(call finish '{"lease":'"$lease"',"outcome":"done","attempt":null}')"
expect renew/lost 409 '"lease_lost"' "$(call renew '{"lease":'"$lease"',"extend_by":1}')"
expect claim/next 200 '"id":"w2"' "$(call claim '{"lane":"webhooks","worker":"w","lease_for":60000000,"max":5,"exclude_topics":[]}')"
expect claim/excluded 200 '{"leases":[]}' "$(call claim '{"lane":"jobs","worker":"w","lease_for":60000000,"max":5,"exclude_topics":["a/b"]}')"
expect requeue 200 '{}' "$(call requeue '{"lane":"webhooks","group":'"$key"',"id":"w1"}')"
expect requeue/unknown 404 '"not_found"' "$(call requeue '{"lane":"webhooks","group":'"$key"',"id":"nope"}')"

# Retention, export and import, changes.
expect write/expiring 200 '"revisions":[3]' "$(call write '{"account":"'"$acct"'","ops":[{"update":{"record":'"$(rec succeeded $now '"{}"')"',"expected":2}}],"effects":[]}')"
expect expire 200 '"id":"p1"' "$(call expire '{"now":'$((now + 1))',"limit":10}')"
expect get/tombstone 200 '"data_removed":true' "$(call get '{"key":'"$key"'}')"
for s in records items ledger counters; do
    expect "export/$s" 200 '"pieces":[{' "$(call export '{"section":"'$s'","after":null,"limit":2}')"
done
expect import 200 '{}' "$(call import '{"pieces":[{"counter":{"name":"imported","value":7}}]}')"
expect counters/imported 200 '["imported",7]' "$(call counters '{}')"
expect changes 200 '"resync":false' "$(call changes '{"after":null,"epoch":null,"wait_ms":0}')"

# Refusals of the transport.
expect bad_json 400 '"bad_request"' "$(call get '{"key":')"
expect bad_shape 400 '"bad_request"' "$(call get '{"key":{"kind":"nope","id":"x","partition":1}}')"
expect unknown_method 400 '"bad_request"' "$(call frobnicate '{}')"
expect bad_signature 401 '"unauthorized"' "$(AUGUR_CALL_BAD_SIGNATURE=1 call hello '{}')"
expect stale 401 'window' "$(AUGUR_CALL_TIMESTAMP=$(($(date +%s%3N) - 301000)) call hello '{}')"
nonce="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
expect replay/first 200 '"balance"' "$(AUGUR_CALL_NONCE=$nonce call balance '{"account":"'"$acct"'"}')"
expect replay/second 401 'replayed' "$(AUGUR_CALL_NONCE=$nonce call balance '{"account":"'"$acct"'"}')"
nonce="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
expect replay/fanout-first 200 '"counters"' "$(AUGUR_CALL_NONCE=$nonce call counters '{}')"
expect replay/fanout-second 401 'replayed' "$(AUGUR_CALL_NONCE=$nonce call counters '{}')"

echo "smoke: $passed passed, $failed failed"
[ "$failed" = 0 ]
