//! [`Secret`]: a string that never appears in logs or `Debug` output.

use std::fmt;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// A secret value (an API token, a signing key). `Debug` and `Display` print `<redacted>`;
/// comparison takes the same time whatever the contents.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call sites are where secrets leave the type: keep them few.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with a candidate in constant time (for equal lengths).
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Compared in constant time (for equal lengths), like [`Secret::matches`].
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.matches(other.expose())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_compared() {
        let s = Secret::new("r8_abc");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert!(s.matches("r8_abc"));
        assert!(!s.matches("r8_abd"));
        assert!(!s.matches("r8_ab"));
    }
}
