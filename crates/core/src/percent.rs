//! Percent-decoding of the parts of store URLs (`%XX` escapes), shared by every backend's URL
//! parser so that they accept and refuse the same texts.

/// Decodes `%XX` escapes. A `%` not followed by two hex digits, or a result that is not
/// UTF-8, is an error saying which (a short phrase, for the caller to place in its message).
pub fn decode(text: &str) -> Result<String, &'static str> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a `%` is not followed by two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the text is not UTF-8 once decoded")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_decoded_and_bad_ones_named() {
        assert_eq!(decode("a%2Fb%20c").unwrap(), "a/b c");
        assert_eq!(decode("plain").unwrap(), "plain");
        assert!(decode("50%").unwrap_err().contains("two hex digits"));
        assert!(decode("%zz").unwrap_err().contains("two hex digits"));
        assert!(decode("%ff").unwrap_err().contains("UTF-8"));
    }
}
