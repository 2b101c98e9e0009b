//! Pagination cursors and list queries: any text as `cursor` (and other query parameters) of
//! the list routes, which must answer 400 for a cursor the server never issued.
#![no_main]

use libfuzzer_sys::fuzz_target;

const LISTS: &[&str] = &[
    "/v1/predictions",
    "/v1/accounts",
    "/v1/account/ledger",
    "/v1/batches",
    "/v1/workflows",
    "/v1/runs",
    "/v1/files",
    "/v1/models",
];

fuzz_target!(|input: (u8, String, String)| {
    let (list, cursor, rest) = input;
    let path = LISTS[usize::from(list) % LISTS.len()];
    let mut uri = format!("{path}?cursor=");
    for b in cursor.bytes() {
        uri.push_str(&format!("%{b:02X}"));
    }
    uri.push('&');
    uri.push_str(&rest);
    let Some(request) = augur_fuzz::request("GET", &uri, &[], Vec::new()) else {
        return; // not a URI at all
    };
    augur_fuzz::Api::shared().send(Vec::new(), request);
});
