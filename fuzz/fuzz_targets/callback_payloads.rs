//! Model servers' callback payloads: any bytes as a Cog (coglet) webhook body and as a
//! Replicate upstream prediction, through the types the callback routes read them into.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<augur_engine::cog::WebhookPayload>(data);
    let _ = serde_json::from_slice::<augur_engine::replicate::UpstreamPrediction>(data);
});
