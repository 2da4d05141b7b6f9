//! The event-type registry: the built-in types, and the custom types an operator declares under
//! `eventTypes` (a namespaced type, a display name, a category, a description and a JSON Schema
//! of `data`), as in the integration-event registry of the seeds.
//!
//! A declared type's `data` is validated at ingest against its schema; an undeclared custom type
//! is accepted as before unless `strictTypes` is on. `hookwasm events` and `GET /v1/event-types`
//! print the same [`Registry::catalogue`].
//!
//! `eventTypes` and `strictTypes` are hookwasm's own keys. GitProxy's config schema refuses
//! top-level keys it does not know, so a `proxy.config.json` shared with GitProxy keeps them in
//! a separate file named by `HOOKWASM_EVENT_TYPES` (same two keys, schema paths relative to that
//! file) instead.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Event;

/// The environment variable naming a file with `eventTypes` and `strictTypes`, for a config
/// shared with GitProxy.
pub const EVENT_TYPES_ENV: &str = "HOOKWASM_EVENT_TYPES";

/// Longest declared type name, as CloudEvents producers are told to keep `type` short.
const MAX_TYPE_LEN: usize = 128;

/// Known event types: the built-in ones and the declared custom ones.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    custom: Vec<CustomType>,
    strict: bool,
}

/// One declared custom type.
#[derive(Debug, Clone)]
pub struct CustomType {
    /// The CloudEvents `type`, e.g. `acme.user.created`.
    pub event_type: String,
    /// A short human name, e.g. `User created`.
    pub display_name: String,
    /// What it means and who sends it.
    pub description: String,
    /// A grouping for listings, e.g. `Identity`.
    pub category: String,
    /// The JSON Schema of `data`.
    pub data_schema: Value,
    validator: Arc<jsonschema::Validator>,
}

/// Why an event is refused by the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// `strictTypes` is on and the type is not declared.
    #[error(
        "event type {event_type:?} is not declared in `eventTypes` and `strictTypes` is on; declare it, or run `hookwasm events` for the known types"
    )]
    Undeclared {
        /// The refused type.
        event_type: String,
    },
    /// `data` does not match the declared schema.
    #[error(
        "`data` of {event_type} does not match its schema at {pointer}: {message} (rule {rule})"
    )]
    Invalid {
        /// The declared type.
        event_type: String,
        /// JSON pointer, within the event, of the failing value (e.g. `/data/email`).
        pointer: String,
        /// JSON pointer, within the schema, of the rule it breaks (e.g. `/properties/email/format`).
        rule: String,
        /// What is wrong with the value.
        message: String,
    },
}

/// `eventTypes` entries as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TypeEntry {
    #[serde(rename = "type")]
    event_type: String,
    display_name: Option<String>,
    description: String,
    category: Option<String>,
    /// Inline schema (an object or a boolean), or the path of a JSON file holding one.
    data_schema: Option<Value>,
}

/// The sidecar file named by [`EVENT_TYPES_ENV`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Sidecar {
    #[serde(default)]
    event_types: Option<Value>,
    #[serde(default)]
    strict_types: Option<Value>,
}

impl Registry {
    /// The registry a config describes: its own `eventTypes`/`strictTypes` (paths relative to
    /// `base`), or the file [`EVENT_TYPES_ENV`] names. Declaring them in both is an error, so
    /// nobody wonders which one applies.
    pub fn from_sources(
        event_types: Option<Value>,
        strict_types: Option<Value>,
        base: &Path,
    ) -> Result<Registry, RegistryError> {
        let Some(file) = std::env::var_os(EVENT_TYPES_ENV).filter(|f| !f.is_empty()) else {
            return Registry::from_config(event_types, strict_types, base);
        };
        if event_types.is_some() || strict_types.is_some() {
            return Err(RegistryError::new(format!(
                "is set both in the config and in {EVENT_TYPES_ENV}; keep one of them"
            )));
        }
        let path = PathBuf::from(file);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            let message = format!("cannot read {} ({EVENT_TYPES_ENV}): {e}", path.display());
            RegistryError::caused(message, e)
        })?;
        let sidecar: Sidecar = serde_json::from_str(&text).map_err(|e| {
            let message = format!(
                "{} ({EVENT_TYPES_ENV}): {e}; it holds {{\"eventTypes\": [...], \"strictTypes\": false}}",
                path.display()
            );
            RegistryError::caused(message, e)
        })?;
        let folder = path.parent().unwrap_or(Path::new("."));
        let folder = std::path::absolute(folder).unwrap_or_else(|_| folder.to_path_buf());
        Registry::from_config(sidecar.event_types, sidecar.strict_types, &folder)
            .map_err(|e| e.within(|m| format!("in {}: {m}", path.display())))
    }

    /// Parses `eventTypes` and `strictTypes`; schema files resolve against `base`.
    pub fn from_config(
        event_types: Option<Value>,
        strict_types: Option<Value>,
        base: &Path,
    ) -> Result<Registry, RegistryError> {
        let strict = match strict_types {
            None | Some(Value::Null) => false,
            Some(Value::Bool(strict)) => strict,
            Some(other) => {
                return Err(RegistryError::new(format!(
                    "`strictTypes` must be true or false, found {other}"
                )));
            }
        };
        let entries = match event_types {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(entries)) => entries,
            Some(_) => {
                return Err(RegistryError::new(
                    "`eventTypes` must be a list of {\"type\", \"description\", \"dataSchema\", …} objects",
                ));
            }
        };
        let mut custom: Vec<CustomType> = Vec::with_capacity(entries.len());
        for (index, value) in entries.into_iter().enumerate() {
            let hint = value
                .get("type")
                .and_then(Value::as_str)
                .map(|t| format!(" ({t})"))
                .unwrap_or_default();
            let declared = parse_entry(value, base)
                .map_err(|e| e.within(|m| format!("`eventTypes[{index}]`{hint}: {m}")))?;
            if custom.iter().any(|c| c.event_type == declared.event_type) {
                return Err(RegistryError::new(format!(
                    "`eventTypes[{index}]`{hint}: the type is declared twice; keep one entry"
                )));
            }
            custom.push(declared);
        }
        Ok(Registry { custom, strict })
    }

    /// Whether undeclared custom types are refused.
    pub fn strict(&self) -> bool {
        self.strict
    }

    /// The declared custom types, in config order.
    pub fn custom(&self) -> &[CustomType] {
        &self.custom
    }

    /// The declared type called `event_type`, if any.
    pub fn declared(&self, event_type: &str) -> Option<&CustomType> {
        self.custom.iter().find(|c| c.event_type == event_type)
    }

    /// Whether `event_type` is built in or declared.
    pub fn knows(&self, event_type: &str) -> bool {
        super::known_types().any(|t| t == event_type) || self.declared(event_type).is_some()
    }

    /// Checks an accepted event against the registry: a declared type's `data` must match its
    /// schema; an undeclared custom type passes unless `strictTypes` is on. Built-in types were
    /// already typed when the event was parsed.
    pub fn check(&self, event: &Event) -> Result<(), Refusal> {
        let event_type = event.event_type();
        if super::known_types().any(|t| t == event_type) {
            return Ok(());
        }
        let Some(declared) = self.declared(event_type) else {
            return if self.strict {
                Err(Refusal::Undeclared {
                    event_type: event_type.to_owned(),
                })
            } else {
                Ok(())
            };
        };
        let data = event.json().get("data").unwrap_or(&Value::Null);
        match declared.validator.iter_errors(data).next() {
            None => Ok(()),
            Some(error) => Err(Refusal::Invalid {
                event_type: event_type.to_owned(),
                pointer: format!("/data{}", error.instance_path().as_str()),
                rule: match error.schema_path().as_str() {
                    "" => "/".to_owned(),
                    rule => rule.to_owned(),
                },
                message: truncate(&error.to_string(), 300),
            }),
        }
    }

    /// Every type with its schema: the built-in ones, the declared ones, and (unless
    /// `strictTypes` is on) the catch-all `*` for undeclared custom types. What `hookwasm events`
    /// prints and `GET /v1/event-types` serves.
    pub fn catalogue(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for info in super::catalogue() {
            if info.event_type == "*" {
                continue;
            }
            out.push(json!({
                "type": info.event_type,
                "displayName": display_name(info.event_type),
                "category": builtin_category(info.event_type),
                "description": info.description,
                "builtin": true,
                "dataSchema": info.data_schema,
            }));
        }
        for declared in &self.custom {
            out.push(json!({
                "type": declared.event_type,
                "displayName": declared.display_name,
                "category": declared.category,
                "description": declared.description,
                "builtin": false,
                "dataSchema": declared.data_schema,
            }));
        }
        if !self.strict {
            out.push(json!({
                "type": "*",
                "displayName": "Any other type",
                "category": "custom",
                "description": "any undeclared type outside push., pull. and git., e.g. user.created: data is passed to handlers as JSON text, unchecked",
                "builtin": true,
                "dataSchema": {},
            }));
        }
        out
    }

    /// The catalogue entry of one type.
    pub fn entry(&self, event_type: &str) -> Option<Value> {
        self.catalogue()
            .into_iter()
            .find(|e| e["type"] == event_type && event_type != "*")
    }

    /// A CloudEvent of `event_type` whose `data` is built from the type's schema (its
    /// `examples`, `default`s, `const`s and `enum`s first), checked as ingest would check it.
    pub fn example(&self, event_type: &str) -> Result<Value, RegistryError> {
        let entry = self.entry(event_type).ok_or_else(|| {
            RegistryError::new(format!(
                "unknown event type {event_type:?}; run `hookwasm events` for the list"
            ))
        })?;
        let schema = &entry["dataSchema"];
        let data = example_of(schema, schema, 0);
        let event = json!({
            "specversion": "1.0",
            "id": "example-1",
            "source": "https://example.com/hookwasm",
            "type": event_type,
            "time": "2026-01-01T00:00:00Z",
            "datacontenttype": "application/json",
            "data": data,
        });
        let parsed = Event::from_json(event.clone()).map_err(|e| {
            let message = format!("cannot make a valid example of {event_type} ({e}); add `examples` to its dataSchema");
            RegistryError::caused(message, e)
        })?;
        self.check(&parsed).map_err(|e| {
            RegistryError::new(format!("cannot make a valid example of {event_type} ({e}); add `examples` to its dataSchema"))
        })?;
        Ok(event)
    }
}

fn parse_entry(value: Value, base: &Path) -> Result<CustomType, RegistryError> {
    let entry: TypeEntry =
        serde_json::from_value(value).map_err(|e| RegistryError::caused(e.to_string(), e))?;
    let event_type = entry.event_type;
    valid_type(&event_type)?;
    if entry.description.trim().is_empty() {
        return Err(RegistryError::new(
            "`description` is empty; say what the event means and who sends it",
        ));
    }
    let data_schema = match entry.data_schema {
        None => json!({}),
        Some(Value::String(file)) => {
            let path = base.join(&file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                let message = format!(
                    "cannot read `dataSchema` file {}: {e}; give a path relative to the config's folder",
                    path.display()
                );
                RegistryError::caused(message, e)
            })?;
            serde_json::from_str(&text).map_err(|e| {
                let message = format!("`dataSchema` file {} is not JSON: {e}", path.display());
                RegistryError::caused(message, e)
            })?
        }
        Some(schema @ (Value::Object(_) | Value::Bool(_))) => schema,
        Some(_) => {
            return Err(RegistryError::new(
                "`dataSchema` must be a JSON Schema (an object) or the path of a file holding one",
            ));
        }
    };
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&data_schema)
        .map_err(|e| {
            let message = match e.kind() {
                jsonschema::error::ValidationErrorKind::Referencing(_) => format!(
                    "`dataSchema` refers to a schema hookwasm cannot reach ({e}); `$ref`s must point inside the schema, e.g. #/$defs/name"
                ),
                _ => format!("`dataSchema` is not a valid JSON Schema: {e}"),
            };
            RegistryError::caused(message, e.to_owned())
        })?;
    Ok(CustomType {
        display_name: entry
            .display_name
            .unwrap_or_else(|| display_name(&event_type)),
        category: entry.category.unwrap_or_else(|| "custom".into()),
        event_type,
        description: entry.description,
        data_schema,
        validator: Arc::new(validator),
    })
}

/// Why `eventTypes`/`strictTypes` (or the file of [`EVENT_TYPES_ENV`]) cannot be used, or why no
/// example can be made. The message names the cause's text, because the config error prints it
/// alone; the cause (an I/O, JSON or JSON Schema error), where there is one, is kept as the
/// source.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RegistryError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl RegistryError {
    fn new(message: impl Into<String>) -> RegistryError {
        RegistryError {
            message: message.into(),
            source: None,
        }
    }

    fn caused(
        message: String,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> RegistryError {
        RegistryError {
            message,
            source: Some(Box::new(source)),
        }
    }

    /// The same error, its message rewritten by `place` (which says where it was found).
    fn within(self, place: impl FnOnce(&str) -> String) -> RegistryError {
        RegistryError {
            message: place(&self.message),
            source: self.source,
        }
    }
}

/// A declared type is namespaced (`vendor.noun.verb`: at least two dot-separated segments of
/// lower-case letters, digits, `-` and `_`) and outside the reserved namespaces.
fn valid_type(event_type: &str) -> Result<(), RegistryError> {
    let segments: Vec<&str> = event_type.split('.').collect();
    let segment_ok = |s: &&str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    };
    if event_type.len() > MAX_TYPE_LEN || segments.len() < 2 || !segments.iter().all(segment_ok) {
        return Err(RegistryError::new(format!(
            "`type` {event_type:?} must be namespaced like acme.user.created: two or more dot-separated parts of lower-case letters, digits, `-` and `_`"
        )));
    }
    if super::RESERVED_PREFIXES
        .iter()
        .any(|p| event_type.starts_with(p))
    {
        return Err(RegistryError::new(format!(
            "`type` {event_type:?} is in a namespace reserved for built-in types (push., pull., git.); use your own prefix"
        )));
    }
    Ok(())
}

/// `git.branch.force-pushed` → `Branch force-pushed`; `push.started` → `Push started`.
fn display_name(event_type: &str) -> String {
    let rest = event_type.strip_prefix("git.").unwrap_or(event_type);
    let words = rest.replace('.', " ");
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn builtin_category(event_type: &str) -> &'static str {
    if event_type.starts_with("git.") {
        "git server"
    } else {
        "git proxy"
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Deepest schema nesting the example builder follows (a recursive `$ref` stops here).
const MAX_EXAMPLE_DEPTH: usize = 16;

/// A value that `schema` accepts, as far as a simple reading of it goes: `examples`, `default`,
/// `const` and `enum` first, then the first listed type with its required properties, minimum
/// lengths and bounds. `root` resolves local `$ref`s (`#/$defs/...`).
fn example_of(schema: &Value, root: &Value, depth: usize) -> Value {
    let Some(schema) = schema.as_object() else {
        return Value::Null;
    };
    if depth > MAX_EXAMPLE_DEPTH {
        return Value::Null;
    }
    if let Some(first) = schema
        .get("examples")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for key in ["default", "const"] {
        if let Some(value) = schema.get(key) {
            return value.clone();
        }
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    if let Some(target) = schema.get("$ref").and_then(Value::as_str)
        && let Some(pointer) = target.strip_prefix('#')
        && let Some(resolved) = root.pointer(pointer)
    {
        return example_of(resolved, root, depth + 1);
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(first) = schema
            .get(key)
            .and_then(Value::as_array)
            .and_then(|s| s.first())
        {
            return example_of(first, root, depth + 1);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("null"),
        _ if schema.contains_key("properties") => "object",
        _ => "object",
    };
    match kind {
        "object" => {
            let mut out = Map::new();
            let properties = schema.get("properties").and_then(Value::as_object);
            let required = schema.get("required").and_then(Value::as_array);
            for name in required.into_iter().flatten().filter_map(Value::as_str) {
                let property = properties.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
                out.insert(name.to_owned(), example_of(property, root, depth + 1));
            }
            Value::Object(out)
        }
        "array" => {
            let items = schema.get("items").unwrap_or(&Value::Null);
            let count = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0);
            Value::Array(
                (0..count.min(8))
                    .map(|_| example_of(items, root, depth + 1))
                    .collect(),
            )
        }
        "string" => Value::String(example_string(schema)),
        "integer" | "number" => example_number(schema, kind == "integer"),
        "boolean" => Value::Bool(false),
        _ => Value::Null,
    }
}

/// The smallest round number within `minimum`/`exclusiveMinimum`, else the largest within the
/// maxima, else 0.
fn example_number(schema: &Map<String, Value>, integer: bool) -> Value {
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    let mut value = match (bound("minimum"), bound("exclusiveMinimum")) {
        (Some(min), _) => min.ceil(),
        (None, Some(min)) => min.floor() + 1.0,
        (None, None) => match (bound("maximum"), bound("exclusiveMaximum")) {
            (Some(max), _) => max.floor(),
            (None, Some(max)) => max.ceil() - 1.0,
            (None, None) => 0.0,
        },
    };
    if let Some(step) = bound("multipleOf").filter(|s| *s > 0.0) {
        value = (value / step).ceil() * step;
    }
    if integer || value.fract() == 0.0 {
        json!(value as i64)
    } else {
        json!(value)
    }
}

fn example_string(schema: &Map<String, Value>) -> String {
    let text = match schema.get("format").and_then(Value::as_str) {
        Some("date-time") => "2026-01-01T00:00:00Z",
        Some("date") => "2026-01-01",
        Some("time") => "00:00:00Z",
        Some("email") => "ada@example.com",
        Some("uri" | "iri" | "uri-reference" | "iri-reference") => "https://example.com/",
        Some("uuid") => "00000000-0000-4000-8000-000000000000",
        Some("hostname") => "example.com",
        Some("ipv4") => "192.0.2.1",
        Some("ipv6") => "2001:db8::1",
        _ => "example",
    };
    let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0);
    let mut text = text.to_owned();
    while (text.chars().count() as u64) < min.min(1024) {
        text.push('x');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(types: Value, strict: bool) -> Registry {
        Registry::from_config(Some(types), Some(json!(strict)), Path::new("/")).expect("valid")
    }

    fn user_created() -> Value {
        json!([{
            "type": "acme.user.created",
            "description": "a user signed up",
            "category": "Identity",
            "dataSchema": {
                "type": "object",
                "required": ["login", "email"],
                "properties": {
                    "login": {"type": "string", "minLength": 2},
                    "email": {"type": "string", "format": "email"},
                    "age": {"type": "integer", "minimum": 0},
                    "score": {"type": "number", "exclusiveMinimum": 0.5, "maximum": 10}
                }
            }
        }])
    }

    fn event(event_type: &str, data: Value) -> Event {
        Event::from_json(json!({
            "specversion": "1.0", "id": "e1", "source": "test", "type": event_type, "data": data
        }))
        .expect("a valid CloudEvent")
    }

    #[test]
    fn a_declared_type_accepts_valid_data_and_names_the_failing_pointer_and_rule() {
        let registry = registry(user_created(), false);
        let ok = event(
            "acme.user.created",
            json!({"login": "ada", "email": "ada@example.com"}),
        );
        assert_eq!(registry.check(&ok), Ok(()));
        let bad = event(
            "acme.user.created",
            json!({"login": "ada", "email": "not an address"}),
        );
        let Err(Refusal::Invalid { pointer, rule, .. }) = registry.check(&bad) else {
            panic!("accepted a bad e-mail")
        };
        assert_eq!(pointer, "/data/email");
        assert_eq!(rule, "/properties/email/format");
        let missing = event("acme.user.created", json!({"login": "ada"}));
        let Err(Refusal::Invalid { pointer, rule, .. }) = registry.check(&missing) else {
            panic!("accepted a missing e-mail")
        };
        assert_eq!((pointer.as_str(), rule.as_str()), ("/data", "/required"));
    }

    #[test]
    fn strict_types_refuse_undeclared_custom_types_only() {
        let lenient = registry(user_created(), false);
        let strict = registry(user_created(), true);
        let other = event("acme.user.deleted", json!({}));
        assert_eq!(lenient.check(&other), Ok(()));
        assert!(matches!(
            strict.check(&other),
            Err(Refusal::Undeclared { .. })
        ));
        let builtin = Event::from_json(json!({
            "specversion": "1.0", "id": "e", "source": "s", "type": "git.push.rejected",
            "data": {"pushId": "p", "repository": {"url": "u"}, "pusher": {"username": "a"}, "refs": [], "reason": "r"}
        }))
        .expect("valid");
        assert_eq!(strict.check(&builtin), Ok(()));
        assert!(strict.catalogue().iter().all(|e| e["type"] != "*"));
        assert!(lenient.catalogue().iter().any(|e| e["type"] == "*"));
    }

    #[test]
    fn mistakes_in_event_types_are_named() {
        let err = |types: Value| {
            Registry::from_config(Some(types), None, Path::new("/"))
                .expect_err("refused")
                .to_string()
        };
        assert!(err(json!([{"type": "user", "description": "d"}])).contains("namespaced"));
        assert!(err(json!([{"type": "git.thing.done", "description": "d"}])).contains("reserved"));
        assert!(
            err(json!([{"type": "a.b", "description": "d", "dataSchema": {"type": 3}}]))
                .contains("not a valid JSON Schema")
        );
        assert!(
            err(json!([{"type": "a.b", "description": "d"}, {"type": "a.b", "description": "e"}]))
                .contains("declared twice")
        );
        assert!(err(json!([{"type": "a.b", "description": "d", "colour": 1}])).contains("colour"));
        // Nothing is fetched: a remote reference is refused when the config is read.
        let remote = err(json!([{"type": "a.b", "description": "d",
            "dataSchema": {"$ref": "https://schemas.example.com/user.json"}}]));
        assert!(
            remote.contains("`$ref`s must point inside the schema"),
            "{remote}"
        );
        assert!(
            err(json!([{"type": "a.b", "description": "d", "dataSchema": "missing.json"}]))
                .starts_with("`eventTypes[0]` (a.b): cannot read `dataSchema` file")
        );
    }

    #[test]
    fn every_example_passes_its_own_schema() {
        let mut types = user_created();
        types.as_array_mut().expect("a list").push(json!({
            "type": "acme.score.set",
            "description": "bounds and formats",
            "dataSchema": {
                "type": "object",
                "required": ["score", "step", "when", "id", "level", "tags"],
                "properties": {
                    "score": {"type": "number", "exclusiveMinimum": 0.5, "maximum": 10},
                    "step": {"type": "integer", "minimum": 3, "multipleOf": 5},
                    "when": {"type": "string", "format": "date-time"},
                    "id": {"type": "string", "format": "uuid"},
                    "level": {"$ref": "#/$defs/level"},
                    "tags": {"type": "array", "minItems": 2, "items": {"type": "string", "minLength": 3}}
                },
                "$defs": {"level": {"enum": ["low", "high"]}}
            }
        }));
        let registry = registry(types, true);
        for entry in registry.catalogue() {
            let event_type = entry["type"].as_str().expect("type");
            let example = registry
                .example(event_type)
                .unwrap_or_else(|e| panic!("{event_type}: {e}"));
            let parsed = Event::from_json(example).expect("parses");
            assert_eq!(registry.check(&parsed), Ok(()), "{event_type}");
        }
    }
}
