//! The handler-side error: any error or message becomes the WIT `Err(string)`.

use std::fmt;

/// What a handler's methods return: `Ok` or an [`Error`] whose message the host records.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error a handler returns to the host. Only its message crosses the boundary.
///
/// Everything `Box<dyn std::error::Error>` converts from converts into it: every
/// `std::error::Error` (`serde_json`, `std::io`, parse errors, ...) and `&str`/`String`
/// messages, so `?` works on them (`Err("no reason given")?`, `.ok_or("missing")?`).
///
/// It implements `Display` (its message) but, like `anyhow::Error`, not `std::error::Error`:
/// that would make the blanket `From` conflict with `From<Error> for Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message. Takes the `String` as is, where `.into()` and `?` copy it.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message the host will see.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message, by value (what the WIT `Err(string)` carries).
    pub fn into_message(self) -> String {
        self.message
    }
}

impl<E: Into<Box<dyn std::error::Error>>> From<E> for Error {
    fn from(error: E) -> Self {
        Self::new(error.into().to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<Error> for String {
    fn from(error: Error) -> Self {
        error.message
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn parse_number(text: &str) -> Result<u8> {
        Ok(serde_json::from_str::<u8>(text)?)
    }

    fn needs_value(value: Option<u8>) -> Result<u8> {
        let value = value.ok_or("no value given")?;
        if value == 0 {
            return Err(format!("value must not be {value}").into());
        }
        Ok(value)
    }

    #[test]
    fn question_mark_converts_foreign_errors() {
        let error = parse_number("nope").unwrap_err();
        assert!(error.message().starts_with("expected ident"), "{error:?}");
    }

    #[test]
    fn strings_become_errors() {
        assert_eq!(needs_value(None).unwrap_err().message(), "no value given");
        assert_eq!(
            needs_value(Some(0)).unwrap_err().message(),
            "value must not be 0"
        );
        assert_eq!(needs_value(Some(3)), Ok(3));
    }

    #[test]
    fn displays_its_message() {
        let error = Error::from("no value given");
        assert_eq!(error.to_string(), "no value given");
        assert_eq!(
            format!("handler said: {error}"),
            "handler said: no value given"
        );
        let owned: Error = String::from("owned").into();
        assert_eq!(format!("{owned}"), "owned");
    }

    #[test]
    fn becomes_the_wit_error_string() {
        let text: String = Error::new("boom").into();
        assert_eq!(text, "boom");
        assert_eq!(
            Error::from(fmt::Error).into_message(),
            "an error occurred when formatting an argument"
        );
    }
}
