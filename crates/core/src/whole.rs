//! Whole numbers read from JSON as JSON Schema reads them: `2` and `2.0` are the same integer.
//!
//! serde reads a `u32` or `i64` field only from JSON written without a fraction, so a client
//! (or a generator working from the OpenAPI document, where `type: integer` admits `2.0`) that
//! writes `2.0` would be refused. Fields that take counts or amounts in request bodies use
//! these with `#[serde(deserialize_with = ...)]`; a fraction or an out-of-range value is still
//! refused with serde's usual message (`expected u32`), which the API words for people.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserializer;
use serde::de::{Error, Unexpected, Visitor};

/// Integer types a whole number can be read into, with serde's name for each.
pub trait Whole: TryFrom<u64> + TryFrom<i64> + Sized {
    /// The name serde's messages give the type (`u32`).
    const NAME: &'static str;
}

impl Whole for u32 {
    const NAME: &'static str = "u32";
}

impl Whole for i64 {
    const NAME: &'static str = "i64";
}

struct WholeVisitor<T>(PhantomData<T>);

impl<T: Whole> Visitor<'_> for WholeVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::NAME)
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<T, E> {
        // Exactly whole and within 2^53, where every integer has one float spelling.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        if v.fract() == 0.0 && v.abs() <= EXACT {
            #[allow(clippy::cast_possible_truncation)]
            return self.visit_i64(v as i64);
        }
        Err(E::invalid_type(Unexpected::Float(v), &self))
    }
}

/// Reads a whole number (`2` or `2.0`) into `T`.
pub fn deserialize<'de, D: Deserializer<'de>, T: Whole>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(WholeVisitor(PhantomData))
}

/// Reads `null` or a whole number into `Option<T>` (with `#[serde(default)]` for absence).
pub fn option<'de, D: Deserializer<'de>, T: Whole>(d: D) -> Result<Option<T>, D::Error> {
    struct OptionVisitor<T>(PhantomData<T>);
    impl<'de, T: Whole> Visitor<'de> for OptionVisitor<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(T::NAME)
        }
        fn visit_none<E: Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_unit<E: Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
            deserialize(d).map(Some)
        }
    }
    d.deserialize_option(OptionVisitor(PhantomData))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::deserialize")]
        count: u32,
        #[serde(default, deserialize_with = "super::option")]
        amount: Option<i64>,
    }

    fn read(text: &str) -> Result<Body, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_floats_are_the_same_integers() {
        let body = read(r#"{"count": 141.0, "amount": -5.0}"#).unwrap();
        assert_eq!((body.count, body.amount), (141, Some(-5)));
        let body = read(r#"{"count": 7, "amount": null}"#).unwrap();
        assert_eq!((body.count, body.amount), (7, None));
        assert_eq!(read(r#"{"count": 7}"#).unwrap().amount, None);
    }

    #[test]
    fn fractions_range_and_text_are_refused_in_serdes_words() {
        let err = read(r#"{"count": 1.5}"#).unwrap_err();
        assert!(
            err.starts_with("invalid type: floating point `1.5`, expected u32"),
            "{err}"
        );
        let err = read(r#"{"count": -1}"#).unwrap_err();
        assert!(
            err.starts_with("invalid value: integer `-1`, expected u32"),
            "{err}"
        );
        let err = read(r#"{"count": 4294967296.0}"#).unwrap_err();
        assert!(err.contains("expected u32"), "{err}");
        let err = read(r#"{"count": "many"}"#).unwrap_err();
        assert!(
            err.starts_with("invalid type: string \"many\", expected u32"),
            "{err}"
        );
    }
}
