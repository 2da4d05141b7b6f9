//! Turning the host's config JSON into the handler's type.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Error, Result};

/// Deserialises a handler from its config text.
///
/// `null` (no config) and `{}` (an empty config) mean the same thing: when one does not fit the
/// handler's type, the other is tried, so both unit structs and structs whose fields all have
/// defaults work whether or not the operator wrote a `config`.
pub(crate) fn parse<T: DeserializeOwned>(text: &str) -> Result<T> {
    let error = match serde_json::from_str::<T>(text) {
        Ok(value) => return Ok(value),
        Err(error) => error,
    };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Null) => serde_json::from_str::<T>("{}").map_err(|fallback| {
            Error::new(format!(
                "invalid handler config: {} (no config was given)",
                without_location(&fallback)
            ))
        }),
        Ok(Value::Object(map)) if map.is_empty() => {
            serde_json::from_str::<T>("null").map_err(|_| invalid(&error))
        }
        _ => Err(invalid(&error)),
    }
}

fn invalid(error: &serde_json::Error) -> Error {
    Error::new(format!("invalid handler config: {error}"))
}

/// serde_json's message without its " at line L column C" suffix, for text the operator did not
/// write (the `{}` stand-in for a missing config).
fn without_location(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&suffix) {
        Some(message) => message.to_owned(),
        None => text,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    struct Unit;

    #[derive(Debug, PartialEq, Default, Deserialize)]
    #[serde(default)]
    struct AllDefaults {
        level: u8,
        name: String,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Required {
        protected: Vec<String>,
    }

    #[test]
    fn reads_a_full_config() {
        let parsed: Required = parse(r#"{"protected": ["main"]}"#).unwrap();
        assert_eq!(parsed.protected, ["main"]);
    }

    #[test]
    fn null_falls_back_to_an_empty_object() {
        assert_eq!(
            parse::<AllDefaults>("null").unwrap(),
            AllDefaults::default()
        );
        assert_eq!(
            parse::<AllDefaults>(" null \n").unwrap(),
            AllDefaults::default()
        );
    }

    #[test]
    fn empty_object_falls_back_to_null() {
        assert_eq!(parse::<Unit>("{}").unwrap(), Unit);
        assert_eq!(parse::<Unit>("null").unwrap(), Unit);
    }

    #[test]
    fn missing_required_config_says_none_was_given() {
        let error = parse::<Required>("null").unwrap_err();
        assert_eq!(
            error.message(),
            "invalid handler config: missing field `protected` (no config was given)"
        );
    }

    #[test]
    fn wrong_config_reports_serdes_error() {
        let error = parse::<Required>(r#"{"protected": "main"}"#).unwrap_err();
        assert_eq!(
            error.message(),
            "invalid handler config: invalid type: string \"main\", expected a sequence at line 1 column 20"
        );
        let error = parse::<Required>("{}").unwrap_err();
        assert_eq!(
            error.message(),
            "invalid handler config: missing field `protected` at line 1 column 2"
        );
        let error = parse::<Required>(r#"{"protected": [], "extra": 1}"#).unwrap_err();
        assert!(
            error
                .message()
                .starts_with("invalid handler config: unknown field `extra`")
        );
    }

    #[test]
    fn malformed_json_is_reported() {
        let error = parse::<AllDefaults>("{not json").unwrap_err();
        assert!(
            error
                .message()
                .starts_with("invalid handler config: key must be a string")
        );
    }
}
