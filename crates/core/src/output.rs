//! References to output files inside a prediction's stored output, and their rendering as
//! absolute URLs for clients. It owns the reference format; the bytes are the engine's
//! (`OutputFiles`) and the routes that serve them the API's.
//!
//! A stored output never holds Augur's public URL: a file is kept as `/files/<key>`, a path
//! relative to the server (`<key>` is `<prediction id>/<32 hex digits>/<name>`). Whatever
//! shows an output to a client (the REST JSON, SSE `output` events, webhook bodies) renders
//! every such string as `<current public url>/files/<key>`, so a change of public URL, or a
//! move to other servers with `augur migrate`, keeps every output reachable. Only strings that
//! are a reference as a whole and whose key has exactly that shape are rendered, so text a
//! model returns is not taken for a file by accident. Records written before references
//! existed hold absolute URLs under the public URL of the time; they are shown as they are.

use std::borrow::Cow;

use serde_json::Value;

use crate::id::PredictionId;

/// What every reference starts with: the route that serves output files.
pub const ROUTE: &str = "/files/";

/// Hex digits of a key's random part.
pub const TOKEN_LEN: usize = 32;

/// Characters at most in a key's file name.
pub const MAX_NAME_LEN: usize = 100;

/// The reference stored in an output for the file under `key`.
pub fn reference(key: &str) -> String {
    format!("{ROUTE}{key}")
}

/// Whether `key` has the shape of an output file's key: `<prediction id>/<32 hex
/// digits>/<name>`, the name made of `[A-Za-z0-9._-]`, not starting with a dot, at most
/// [`MAX_NAME_LEN`] characters.
pub fn is_valid_key(key: &str) -> bool {
    let mut parts = key.split('/');
    let (Some(id), Some(token), Some(name), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    PredictionId::parse(id).is_ok()
        && token.len() == TOKEN_LEN
        && token.bytes().all(|b| b.is_ascii_hexdigit())
        && is_valid_name(name)
}

/// Whether `name` is a file name a key may end with.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The key in `s` if `s` is, as a whole, a reference to an output file.
pub fn key_of(s: &str) -> Option<&str> {
    s.strip_prefix(ROUTE).filter(|key| is_valid_key(key))
}

/// The absolute URL of `s` under `public_url` (no trailing slash) if `s` is a reference.
pub fn absolute(public_url: &str, s: &str) -> Option<String> {
    key_of(s).map(|key| format!("{public_url}{ROUTE}{key}"))
}

/// `value` with every reference in it (at any depth) rendered as an absolute URL under
/// `public_url`; borrowed, without a copy, when it holds none.
pub fn render<'a>(public_url: &str, value: &'a Value) -> Cow<'a, Value> {
    if !holds_reference(value) {
        return Cow::Borrowed(value);
    }
    Cow::Owned(rendered(public_url, value))
}

fn holds_reference(value: &Value) -> bool {
    match value {
        Value::String(s) => key_of(s).is_some(),
        Value::Array(items) => items.iter().any(holds_reference),
        Value::Object(map) => map.values().any(holds_reference),
        _ => false,
    }
}

fn rendered(public_url: &str, value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(absolute(public_url, s).unwrap_or_else(|| s.clone())),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| rendered(public_url, v)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), rendered(public_url, v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The data of a stored `output` stream event (`notices::output_text`: a string item as it
/// is, anything else as JSON) with its references rendered under `public_url`.
pub fn render_event_text<'a>(public_url: &str, text: &'a str) -> Cow<'a, str> {
    if let Some(url) = absolute(public_url, text) {
        return Cow::Owned(url);
    }
    if !text.contains(ROUTE) || !text.starts_with(['{', '[']) {
        return Cow::Borrowed(text);
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value) => match render(public_url, &value) {
            Cow::Owned(changed) => Cow::Owned(changed.to_string()),
            Cow::Borrowed(_) => Cow::Borrowed(text),
        },
        Err(_) => Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> String {
        format!("{}/{}/out.png", PredictionId::generate(), "ab".repeat(16))
    }

    #[test]
    fn references_render_under_the_current_public_url() {
        let key = key();
        let stored = json!({"image": reference(&key), "all": [reference(&key), "text", 3]});
        let a = render("http://a.example", &stored);
        assert_eq!(a["image"], format!("http://a.example/files/{key}"));
        assert_eq!(a["all"][0], format!("http://a.example/files/{key}"));
        assert_eq!(a["all"][1], "text");
        let b = render("https://b.example/augur", &stored);
        assert_eq!(b["image"], format!("https://b.example/augur/files/{key}"));
    }

    #[test]
    fn only_whole_references_of_the_right_shape_are_rendered() {
        for s in [
            "/files/x",
            "/files/../etc/passwd",
            "see /files/a/b/c",
            "http://elsewhere/files/a",
        ] {
            let value = json!([s]);
            assert!(
                matches!(render("http://a", &value), Cow::Borrowed(_)),
                "{s}"
            );
        }
        let bad_token = format!(
            "/files/{}/{}/x.png",
            PredictionId::generate(),
            "zz".repeat(16)
        );
        assert!(key_of(&bad_token).is_none());
        let hidden = format!("/files/{}/{}/.x", PredictionId::generate(), "ab".repeat(16));
        assert!(key_of(&hidden).is_none());
    }

    #[test]
    fn stream_event_data_is_rendered_whether_plain_or_json() {
        let key = key();
        let plain = reference(&key);
        assert_eq!(
            render_event_text("http://a", &plain),
            format!("http://a/files/{key}")
        );
        let object = json!({"file": reference(&key)}).to_string();
        let shown: Value = serde_json::from_str(&render_event_text("http://a", &object)).unwrap();
        assert_eq!(shown["file"], format!("http://a/files/{key}"));
        assert!(matches!(
            render_event_text("http://a", "tok"),
            Cow::Borrowed("tok")
        ));
    }
}
