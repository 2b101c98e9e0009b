//! The shape of a JSON text, read in one pass over its bytes without decoding it: how many
//! values, objects and arrays it holds and how deep it nests, and from that an upper estimate
//! of the memory it takes once decoded into `serde_json::Value`s.
//!
//! Decoding amplifies: a string decodes into about its length, but `[{"":0},{"":0},…]`
//! decodes into a hundred times its text (a 32-byte slot per value, a 640-byte tree node per
//! object). The API refuses bodies whose structure would take more than a stated amount
//! (`augur_api`'s `AppJson`), and the read cache weighs records with this estimate
//! ([`crate::store::cached::footprint`]). It does not validate: invalid JSON gets some
//! shape, and the decoder rejects it afterwards.

/// Bytes counted for each value: its slot in an array (with room for the array to grow) or
/// its entry in an object's tree.
pub const VALUE_BYTES: u64 = 80;
/// Bytes counted besides for each object: the `BTreeMap` leaf node a non-empty object
/// allocates (counted for empty ones too, to stay an upper bound).
pub const OBJECT_BYTES: u64 = 640;
/// Bytes counted besides for each array: the smallest buffer a non-empty array allocates.
pub const ARRAY_BYTES: u64 = 128;

/// What a JSON text holds, counted without decoding it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JsonShape {
    /// The text's length in bytes.
    pub bytes: u64,
    /// Values of any kind (object keys are not values).
    pub values: u64,
    /// Objects among them.
    pub objects: u64,
    /// Arrays among them.
    pub arrays: u64,
    /// The deepest nesting of objects and arrays.
    pub depth: u64,
}

impl JsonShape {
    /// The shape of `json`.
    pub fn of(json: &[u8]) -> Self {
        let mut shape = JsonShape {
            bytes: json.len() as u64,
            ..JsonShape::default()
        };
        // Whether each open container is an object; one byte per level, bounded by the text.
        let mut open: Vec<bool> = Vec::new();
        let (mut in_string, mut escaped, mut in_scalar, mut expect_key) =
            (false, false, false, false);
        for &b in json {
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            let scalar_byte = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.');
            if scalar_byte {
                if !in_scalar {
                    shape.values += 1;
                }
                in_scalar = true;
                continue;
            }
            in_scalar = false;
            match b {
                b'"' => {
                    in_string = true;
                    if !expect_key {
                        shape.values += 1;
                    }
                }
                b'{' | b'[' => {
                    shape.values += 1;
                    let object = b == b'{';
                    if object {
                        shape.objects += 1;
                    } else {
                        shape.arrays += 1;
                    }
                    open.push(object);
                    shape.depth = shape.depth.max(open.len() as u64);
                    expect_key = object;
                }
                b'}' | b']' => {
                    open.pop();
                    expect_key = false;
                }
                b',' => expect_key = open.last().copied().unwrap_or(false),
                b':' => expect_key = false,
                _ => {}
            }
        }
        shape
    }

    /// An upper estimate of what its values take in memory once decoded, besides the text
    /// their strings and keys copy.
    pub fn structure_bytes(&self) -> u64 {
        self.values * VALUE_BYTES + self.objects * OBJECT_BYTES + self.arrays * ARRAY_BYTES
    }

    /// An upper estimate of the heap the text takes once decoded: its text and its
    /// structure.
    pub fn decoded_bytes(&self) -> u64 {
        self.bytes + self.structure_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_values_objects_arrays_and_depth_but_not_keys_or_quoted_text() {
        let shape = JsonShape::of(br#"{"a": [1, -2.5e3, true, null, "x,{[:"], "b": {"c": {}}}"#);
        assert_eq!(
            shape,
            JsonShape {
                bytes: 55,
                values: 9,
                objects: 3,
                arrays: 1,
                depth: 3,
            }
        );
        assert_eq!(JsonShape::of(br#""\"{[,""#).values, 1);
        assert_eq!(JsonShape::of(b"").values, 0);
    }

    #[test]
    fn text_weighs_about_its_length_and_small_objects_far_more() {
        let text = format!("{{\"prompt\":\"{}\"}}", "x".repeat(10_000));
        let shape = JsonShape::of(text.as_bytes());
        assert_eq!((shape.values, shape.objects), (2, 1));
        assert!((10_000..12_000).contains(&shape.decoded_bytes()));
        let tree = format!("[{}{{\"\":0}}]", "{\"\":0},".repeat(10_000));
        let shape = JsonShape::of(tree.as_bytes());
        assert_eq!((shape.values, shape.objects), (20_003, 10_001));
        assert!(shape.decoded_bytes() > 100 * tree.len() as u64);
    }
}
