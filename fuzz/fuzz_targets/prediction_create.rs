//! Prediction create bodies: any bytes as the JSON body of `POST /v1/predictions` and of
//! `POST /v1/models/{owner}/{name}/predictions` (input checks, webhooks, versions).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (bool, Vec<u8>)| {
    let (by_model, body) = input;
    let uri = if by_model {
        "/v1/models/augur/echo/predictions"
    } else {
        "/v1/predictions"
    };
    let api = augur_fuzz::Api::shared();
    let request = augur_fuzz::request("POST", uri, &[], body).expect("a fixed request");
    api.send(Vec::new(), request);
});
