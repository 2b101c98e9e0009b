//! Predictions and effects as script arguments, and script replies back into the contract's
//! types.
//!
//! A prediction is stored in two parts: its *body* (the JSON record without input, output
//! and logs) in the prediction hash, and its *data* (input, output and logs, the bulky part
//! retention removes) in a separate key that Redis expires by itself at `expires_at`.

use augur_core::store::Effect;
use augur_core::{Prediction, PredictionId, Revision, Timestamp, Versioned};
use redis::Value;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::Error;
use crate::layout::{created_key, expiry_millis};

/// The part of a prediction retention removes.
#[derive(Serialize, Deserialize)]
struct Data {
    input: Json,
    #[serde(default)]
    output: Option<Json>,
    #[serde(default)]
    logs: String,
}

/// A prediction as the eight record arguments of the scripts (see `record_at` in
/// [`crate::scripts`]).
pub(crate) struct EncodedRecord {
    pub(crate) args: [String; 8],
}

impl EncodedRecord {
    /// Encodes `p`, stored under `id` whatever `p.id` says.
    pub(crate) fn encode(id: &PredictionId, p: &Prediction) -> Result<Self, Error> {
        let mut body = p.clone();
        body.id = id.clone();
        let data = Data {
            input: std::mem::take(&mut body.input),
            output: body.output.take(),
            logs: std::mem::take(&mut body.logs),
        };
        let removed = std::mem::take(&mut body.data_removed);
        let data = if data.input.is_null() && data.output.is_none() && data.logs.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&data).map_err(Error::Encode)?
        };
        let (exp, exp_ms) = match p.expires_at {
            Some(at) => (at.as_micros().to_string(), expiry_millis(at).to_string()),
            None => (String::new(), String::new()),
        };
        Ok(Self {
            args: [
                serde_json::to_string(&body).map_err(Error::Encode)?,
                data,
                if removed { "1" } else { "0" }.to_owned(),
                p.owner.as_str().to_owned(),
                p.status.as_str().to_owned(),
                created_key(p.created_at, id),
                exp,
                exp_ms,
            ],
        })
    }
}

/// Refuses effect kinds this build does not know, before anything is sent.
pub(crate) fn check_effects(effects: &[Effect]) -> Result<(), Error> {
    for effect in effects {
        match effect {
            Effect::EnqueueJob { .. }
            | Effect::EnqueueClaimed { .. }
            | Effect::CompleteJob
            | Effect::Count { .. }
            | Effect::EnqueueDelivery(_)
            | Effect::AppendEvents(_) => {}
            // `Effect` is non-exhaustive: a kind this build does not know must fail the write,
            // never be skipped.
            other => return Err(Error::UnsupportedEffect(format!("{other:?}"))),
        }
    }
    Ok(())
}

/// Effects as script arguments: a count, then each kind and its arguments (see
/// `check_effects` in [`crate::scripts`]).
pub(crate) fn effect_args(effects: &[Effect]) -> Result<Vec<String>, Error> {
    check_effects(effects)?;
    let mut args = vec![effects.len().to_string()];
    for effect in effects {
        match effect {
            Effect::EnqueueJob { queue, run_at } => {
                args.extend(["E".into(), queue.clone(), run_at.as_micros().to_string()]);
            }
            Effect::EnqueueClaimed {
                queue,
                worker,
                token,
                expires_at,
            } => args.extend([
                "C".into(),
                queue.clone(),
                worker.as_str().to_owned(),
                token.0.to_string(),
                expires_at.as_micros().to_string(),
            ]),
            Effect::CompleteJob => args.push("X".into()),
            Effect::Count { name, delta } => {
                args.extend(["N".into(), name.clone(), delta.to_string()]);
            }
            Effect::EnqueueDelivery(delivery) => args.extend([
                "D".into(),
                delivery.id.clone(),
                serde_json::to_string(delivery).map_err(Error::Encode)?,
            ]),
            Effect::AppendEvents(events) => {
                args.extend(["V".into(), events.len().to_string()]);
                for event in events {
                    args.push(serde_json::to_string(event).map_err(Error::Encode)?);
                }
            }
            other => return Err(Error::UnsupportedEffect(format!("{other:?}"))),
        }
    }
    Ok(args)
}

/// Decodes a stored `{rev, body, rm, data}` as a reader at `now` (the server's clock) sees
/// it: once `expires_at` has passed, Redis may already have dropped the data, so the record
/// reads as its tombstone even before `expire` bumps its revision (the service masks expired
/// records the same way).
pub(crate) fn decode_record(value: &Value, now: Timestamp) -> Result<Versioned<Prediction>, Error> {
    let parts = array(value, "prediction")?;
    let [rev, body, removed, data] = parts else {
        return Err(unexpected("a prediction is not four values"));
    };
    let revision = Revision(parse_int(rev, "revision")?);
    let mut p: Prediction = serde_json::from_slice(bytes(body, "body")?).map_err(Error::Decode)?;
    p.data_removed = bytes(removed, "removed flag")? == b"1";
    if let Some(data) = opt_bytes(data) {
        let data: Data = serde_json::from_slice(data).map_err(Error::Decode)?;
        p.input = data.input;
        p.output = data.output;
        p.logs = data.logs;
    }
    Ok(Versioned {
        value: p.as_seen_at(now),
        revision,
    })
}

/// The elements of an array reply.
pub(crate) fn array<'a>(value: &'a Value, what: &str) -> Result<&'a [Value], Error> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(unexpected(&format!(
            "{what}: expected an array, got {other:?}"
        ))),
    }
}

/// A string reply's bytes.
pub(crate) fn bytes<'a>(value: &'a Value, what: &str) -> Result<&'a [u8], Error> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.as_bytes()),
        Value::VerbatimString { text, .. } => Ok(text.as_bytes()),
        other => Err(unexpected(&format!(
            "{what}: expected a string, got {other:?}"
        ))),
    }
}

/// A string reply's bytes, `None` for nil.
pub(crate) fn opt_bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// A string reply as text.
pub(crate) fn text<'a>(value: &'a Value, what: &str) -> Result<&'a str, Error> {
    std::str::from_utf8(bytes(value, what)?).map_err(|_| Error::InvalidStored {
        what: "text",
        detail: format!("{what} is not UTF-8"),
    })
}

/// An integer, sent as an integer or a decimal string.
pub(crate) fn parse_int<T: std::str::FromStr>(
    value: &Value,
    what: &'static str,
) -> Result<T, Error> {
    let parsed = match value {
        Value::Int(n) => n.to_string().parse().ok(),
        other => std::str::from_utf8(bytes(other, what)?)
            .ok()
            .and_then(|s| s.parse().ok()),
    };
    parsed.ok_or_else(|| Error::InvalidStored {
        what,
        detail: format!("{value:?} is not a valid number"),
    })
}

/// A timestamp in microseconds.
pub(crate) fn parse_time(value: &Value, what: &'static str) -> Result<Timestamp, Error> {
    parse_int(value, what).map(Timestamp::from_micros)
}

/// A prediction id.
pub(crate) fn parse_id(value: &Value) -> Result<PredictionId, Error> {
    let s = text(value, "prediction id")?;
    PredictionId::parse(s).map_err(|e| Error::InvalidStored {
        what: "prediction id",
        detail: e.to_string(),
    })
}

pub(crate) fn unexpected(what: &str) -> Error {
    Error::Reply(what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_core::{AccountId, ModelName};
    use serde_json::json;

    fn prediction() -> Prediction {
        Prediction::new(
            PredictionId::generate(),
            AccountId::admin(),
            ModelName::parse("a/b").unwrap(),
            "v".into(),
            json!({"x": 1.1}),
        )
    }

    fn stored(record: &EncodedRecord, rev: &str) -> Value {
        let data = if record.args[1].is_empty() {
            Value::Nil
        } else {
            Value::BulkString(record.args[1].clone().into_bytes())
        };
        Value::Array(vec![
            Value::BulkString(rev.as_bytes().to_vec()),
            Value::BulkString(record.args[0].clone().into_bytes()),
            Value::BulkString(record.args[2].clone().into_bytes()),
            data,
        ])
    }

    #[test]
    fn records_round_trip_in_two_parts() {
        let mut p = prediction();
        p.logs = "hello ✓".into();
        p.output = Some(json!([1, 2.5]));
        let record = EncodedRecord::encode(&p.id, &p).unwrap();
        assert!(!record.args[0].contains("hello"), "the body holds no logs");
        let got = decode_record(&stored(&record, "3"), Timestamp::now()).unwrap();
        assert_eq!(got.revision, Revision(3));
        assert_eq!(got.value, p);

        // Without data the data argument is empty, and the record still round-trips.
        let mut empty = prediction();
        empty.input = Json::Null;
        let record = EncodedRecord::encode(&empty.id, &empty).unwrap();
        assert!(record.args[1].is_empty());
        let got = decode_record(&stored(&record, "1"), Timestamp::now()).unwrap();
        assert_eq!(got.value, empty);
    }

    #[test]
    fn expired_records_read_as_tombstones() {
        let mut p = prediction();
        p.expires_at = Some(Timestamp::from_micros(1_000));
        let record = EncodedRecord::encode(&p.id, &p).unwrap();
        assert_eq!(record.args[6], "1000");
        assert_eq!(record.args[7], "1");
        let got = decode_record(&stored(&record, "1"), Timestamp::from_micros(1_000)).unwrap();
        assert!(got.value.data_removed && got.value.input.is_null());
        let early = decode_record(&stored(&record, "1"), Timestamp::from_micros(999)).unwrap();
        assert_eq!(early.value, p);
    }
}
