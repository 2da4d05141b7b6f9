//! Config mistakes that parse but would silently disable a handler: a gate that can never be
//! called lets every push through, so it is an error; an observer that can never run, an empty
//! handler list and a near-miss of one of hookwasm's top-level keys are warnings. Also turns
//! serde's messages about an entry into ones that name the field and what to write.

use std::collections::BTreeSet;
use std::sync::Mutex;

use super::{Filter, HandlerSpec};
use crate::event::registry::Registry;

/// Type prefixes reserved for the built-in events: nothing else can arrive under them.
const RESERVED: [&str; 3] = ["git.", "push.", "pull."];

/// hookwasm's own top-level keys. Every other key belongs to GitProxy and is left alone, unless
/// it is a near miss of one of these.
const OUR_KEYS: [&str; 5] = [
    "eventHandlers",
    "eventDelivery",
    "auth",
    "eventTypes",
    "strictTypes",
];

/// Why `spec` can never be called, when it cannot: its `events` match no type that can arrive,
/// or its `refs` no ref name.
pub fn never_runs(spec: &HandlerSpec, registry: &Registry) -> Option<String> {
    let patterns = spec.filter.event_patterns();
    if !patterns.is_empty() && patterns.iter().all(|p| matches_nothing(p, registry)) {
        let types = arriving_types(registry);
        let hint = patterns
            .iter()
            .find_map(|p| closest(p, &types))
            .map(|t| format!(" (did you mean {t:?}?)"))
            .unwrap_or_default();
        return Some(format!(
            "`events` {patterns:?} match no event type that can arrive{hint}; run `hookwasm \
             events` for the types, or declare a custom type under `eventTypes`"
        ));
    }
    let refs = spec.filter.ref_patterns();
    if !refs.is_empty() && refs.iter().all(|r| !can_match_a_ref(r)) {
        let first = refs[0];
        let fix = if first.contains('/') {
            format!("refs/{first}")
        } else {
            format!("refs/heads/{first}")
        };
        return Some(format!(
            "`refs` {refs:?} can never match: events carry full ref names; write {fix:?}"
        ));
    }
    None
}

/// Warns, once per handler and type for the life of the process, about each literal type a
/// handler subscribes to (`events`) that is neither built in nor declared: most likely a
/// typo, or a type the operator forgot to declare.
pub fn warn_undeclared(handlers: &[HandlerSpec], registry: &Registry) {
    static WARNED: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());
    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    for spec in handlers.iter().filter(|s| s.enabled) {
        for pattern in spec.filter.event_patterns() {
            let literal = !pattern.contains(['*', '?', '[', '{']);
            if literal
                && !registry.knows(pattern)
                && warned.insert((spec.name.clone(), pattern.to_owned()))
            {
                tracing::warn!(
                    handler = %spec.name,
                    event_type = pattern,
                    "the handler subscribes to {pattern:?}, which no `eventTypes` entry declares; declare it (with a dataSchema) or fix the name"
                );
            }
        }
    }
}

/// Every type an event may have: built in, or declared.
fn arriving_types(registry: &Registry) -> Vec<String> {
    crate::event::known_types()
        .map(str::to_owned)
        .chain(registry.custom().iter().map(|c| c.event_type.clone()))
        .collect()
}

/// Whether no event that can arrive has a type matching `pattern`: none of the known and
/// declared types match, and it is under a reserved prefix, or undeclared types are refused.
fn matches_nothing(pattern: &str, registry: &Registry) -> bool {
    let Ok(filter) = Filter::new(&[pattern.to_owned()], &[]) else {
        return false;
    };
    if arriving_types(registry)
        .iter()
        .any(|t| filter.matches(t, std::iter::empty()))
    {
        return false;
    }
    RESERVED.iter().any(|r| pattern.starts_with(r)) || registry.strict()
}

/// Ref names are full (`refs/heads/main`): a pattern that starts with neither `refs/` nor a
/// wildcard can never match one.
fn can_match_a_ref(pattern: &str) -> bool {
    pattern.starts_with("refs/") || pattern.starts_with(['*', '?', '[', '{'])
}

/// Warnings about the file as a whole: a near miss of one of hookwasm's top-level keys (most
/// likely a typo that leaves hookwasm without that part of its config).
pub fn top_level_warnings(text: &str) -> Vec<String> {
    let Ok(serde_json::Value::Object(top)) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    top.keys()
        .filter(|k| !OUR_KEYS.contains(&k.as_str()))
        .filter_map(|key| {
            let ours = OUR_KEYS.iter().find(|ours| {
                distance(&key.to_ascii_lowercase(), &ours.to_ascii_lowercase()) <= 2
            })?;
            Some(format!(
                "top-level key `{key}` is not one of hookwasm's (GitProxy may read it); did you \
                 mean `{ours}`?"
            ))
        })
        .collect()
}

/// The candidate closest to `word`, if it is close (a typo away).
fn closest<'a>(word: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}

/// Levenshtein distance, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// What to write at a field path of an entry, for the fields whose serde message says little.
fn what_to_write(path: &str) -> Option<&'static str> {
    Some(match path {
        "limits" => r#"an object such as {"fuel": 50000000, "timeoutMs": 1000, "memoryMiB": 64}"#,
        "limits.fuel" | "limits.timeoutMs" | "limits.memoryMiB" => "a whole number above zero",
        "quarantine" => r#"an object such as {"afterFailures": 5, "backoffMs": 1000}"#,
        "retry" => r#"an object such as {"maxAttempts": 10, "backoffMs": 1000}"#,
        "capabilities" => r#"an object such as {"allowedHosts": ["https://hooks.example.com"]}"#,
        "capabilities.allowedHosts" => r#"a list of URLs such as ["https://hooks.example.com"]"#,
        "events" => r#"a list of event-type patterns such as ["git.branch.*"]"#,
        "refs" => r#"a list of ref patterns such as ["refs/heads/main"]"#,
        "mode" => r#""gate" or "observe""#,
        "failurePolicy" => r#""open" or "closed""#,
        "enabled" => "true or false",
        "module" => "the path of a .wasm component",
        "name" => "a name of letters, digits, `-`, `_` and `.`",
        "queueCapacity" => "a whole number above zero",
        _ => return None,
    })
}

/// serde's message about an entry, rewritten to name the field path and what to write.
pub fn explain(path: &str, raw: &str) -> String {
    let at = if path.is_empty() || path == "." {
        "the entry".to_owned()
    } else {
        format!("`{path}`")
    };
    if let Some(rest) = raw.strip_prefix("invalid type: ") {
        let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, "?"));
        let write = what_to_write(path).map_or_else(|| plain(expected), str::to_owned);
        return format!("{at} is {found}; write {write}");
    }
    if let Some(rest) = raw.strip_prefix("unknown field `") {
        let (field, valid) = rest.split_once("`, expected ").unwrap_or((rest, ""));
        let field = field.trim_end_matches('`');
        let options: Vec<String> = valid
            .trim_start_matches("one of ")
            .split(", ")
            .map(|o| o.trim_matches('`').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        // The path ends with the unknown field itself; the place is its parent.
        let parent = path
            .rsplit_once('.')
            .map(|(parent, _)| parent)
            .unwrap_or("");
        let hint = match (parent, nested_home(field)) {
            ("", Some(home)) => format!("; it belongs in `{home}`: `{home}.{field}`"),
            _ => closest(field, &options)
                .map(|o| format!("; did you mean `{o}`?"))
                .unwrap_or_default(),
        };
        let place = if parent.is_empty() {
            String::new()
        } else {
            format!(" in `{parent}`")
        };
        let listed: Vec<String> = options.iter().map(|o| format!("`{o}`")).collect();
        return format!(
            "unknown field `{field}`{place}{hint} (expected one of {})",
            listed.join(", ")
        );
    }
    if let Some(rest) = raw.strip_prefix("unknown variant `") {
        let (value, valid) = rest.split_once("`, expected ").unwrap_or((rest, ""));
        let write = what_to_write(path).map_or_else(|| plain(valid), str::to_owned);
        return format!("{at} is \"{value}\"; write {write}");
    }
    if let Some(field) = raw
        .strip_prefix("missing field `")
        .and_then(|f| f.strip_suffix('`'))
    {
        let full = if at == "the entry" {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        };
        let write = what_to_write(&full).unwrap_or("it");
        return format!("`{full}` is missing; add {write}");
    }
    format!("{at}: {raw}")
}

/// The object a field written at the top of an entry belongs in, for the nested fields.
fn nested_home(field: &str) -> Option<&'static str> {
    Some(match field {
        "fuel" | "timeoutMs" | "memoryMiB" => "limits",
        "afterFailures" => "quarantine",
        "maxAttempts" => "retry",
        "allowedHosts" | "smtp" => "capabilities",
        _ => return None,
    })
}

/// serde's "expected" in words a config author knows: `struct X` is an object, `a sequence` a
/// list, `u64` a whole number.
fn plain(expected: &str) -> String {
    if expected.starts_with("struct ") || expected.starts_with("a map") {
        return "an object".into();
    }
    expected
        .replace("a sequence", "a list")
        .replace("u64", "a whole number")
        .replace("u32", "a whole number")
        .replace("usize", "a whole number")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_name_the_field_and_what_to_write() {
        assert_eq!(
            explain(
                "limits",
                "invalid type: integer `5`, expected struct Limits"
            ),
            r#"`limits` is integer `5`; write an object such as {"fuel": 50000000, "timeoutMs": 1000, "memoryMiB": 64}"#
        );
        assert_eq!(
            explain(
                "event",
                "unknown field `event`, expected one of `name`, `module`, `events`"
            ),
            "unknown field `event`; did you mean `events`? (expected one of `name`, `module`, `events`)"
        );
        assert_eq!(
            explain(
                "mode",
                "unknown variant `gatekeeper`, expected `gate` or `observe`"
            ),
            r#"`mode` is "gatekeeper"; write "gate" or "observe""#
        );
    }

    #[test]
    fn near_misses_of_our_keys_are_found_and_gitproxy_keys_left_alone() {
        // Every top-level key of GitProxy's config schema, plus one typo of ours.
        let gitproxy = [
            "proxyUrl",
            "cookieSecret",
            "sessionMaxAgeHours",
            "serverPort",
            "httpsServerPort",
            "uiHost",
            "uiPort",
            "httpsUiPort",
            "api",
            "commitConfig",
            "attestationConfig",
            "domains",
            "rateLimit",
            "privateOrganizations",
            "urlShortener",
            "contactEmail",
            "csrfProtection",
            "sidebandProgress",
            "plugins",
            "authorisedList",
            "limits",
            "sink",
            "authentication",
            "tempPassword",
            "apiAuthentication",
            "tls",
            "sslKeyPemPath",
            "sslCertPemPath",
            "configurationSources",
            "uiRouteAuth",
            "ssh",
            "upstreamProxy",
        ];
        let mut file = serde_json::Map::new();
        for key in gitproxy.iter().chain(&["eventHandler"]) {
            file.insert((*key).to_owned(), serde_json::Value::Null);
        }
        let warnings = top_level_warnings(&serde_json::Value::Object(file).to_string());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("did you mean `eventHandlers`?"));
    }
}
