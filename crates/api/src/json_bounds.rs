//! What a JSON request body may cost to decode: [`AppJson`](crate::error::AppJson) reads
//! the body's shape ([`JsonShape`], one pass over the bytes) before decoding it and refuses,
//! with a 422 naming the limit, a body whose values would take more than
//! [`MAX_STRUCTURE_BYTES`] besides its text. The body's size is bounded already
//! (`AUGUR_MAX_BODY_BYTES`); this bounds what decoding it, and every later decode of the
//! input stored from it, can amplify it into: `[{"":0},{"":0},…]` would otherwise decode
//! into a hundred times its text.

use augur_core::json_shape::{ARRAY_BYTES, JsonShape, OBJECT_BYTES, VALUE_BYTES};

use crate::error::{ApiError, ErrorCode};

/// The most a JSON body's values may take in memory once decoded, besides its text (about
/// 100,000 numbers, or 11,000 small objects).
pub(crate) const MAX_STRUCTURE_BYTES: u64 = 8 << 20;

/// Refuses a body whose decoded values would take more than [`MAX_STRUCTURE_BYTES`].
pub(crate) fn check(body: &[u8]) -> Result<(), ApiError> {
    let shape = JsonShape::of(body);
    if shape.structure_bytes() <= MAX_STRUCTURE_BYTES {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::InvalidRequest,
        format!(
            "the JSON body holds too many values to decode: {} values ({} objects, {} arrays) \
             would take about {} MiB of memory besides the text, and at most {} MiB is \
             accepted (a value counts {VALUE_BYTES} bytes, an object {OBJECT_BYTES} more, an \
             array {ARRAY_BYTES} more); send fewer, larger values, or a file",
            shape.values,
            shape.objects,
            shape.arrays,
            shape.structure_bytes().div_ceil(1 << 20),
            MAX_STRUCTURE_BYTES >> 20,
        ),
    )
    .with("limit", MAX_STRUCTURE_BYTES)
    .with("values", shape.values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_numbers_pass_and_a_tree_of_small_objects_is_refused() {
        let prompt = format!("{{\"prompt\":\"{}\"}}", "x".repeat(2 << 20));
        assert!(check(prompt.as_bytes()).is_ok());
        let numbers = format!("{{\"v\":[{}0]}}", "0.125,".repeat(100_000));
        assert!(check(numbers.as_bytes()).is_ok());
        let tree = format!("{{\"v\":[{}{{}}]}}", "{\"\":0},".repeat(20_000));
        let error = check(tree.as_bytes()).unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidRequest);
        let text = error.detail();
        assert!(
            text.contains("40003 values (20002 objects, 1 arrays)"),
            "{text}"
        );
        assert!(text.contains("at most 8 MiB"), "{text}");
    }
}
