//! `hookwasm new`: a handler project that builds, passes its own tests and runs under
//! `hookwasm call` and `hookwasm serve` without edits.
//!
//! The templates are in `host/templates/`, compiled into the binary, so `hookwasm new` works
//! wherever `hookwasm` was installed. A Rust project depends on `hookwasm-sdk` by the git URL and
//! tag of this very release (the crate's `repository` and version), unless told a local path.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// What a new project handles events as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Answers allow/deny: refuses force-pushes and deletions of protected branches.
    Gate,
    /// Watches: logs one line per event.
    Observer,
}

/// The language a new project is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// A Rust crate on `hookwasm-sdk`, built with cargo.
    Rust,
    /// A JavaScript module built with componentize-js.
    Js,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct NewProject {
    /// The project's name: its folder, package and handler name.
    pub name: String,
    /// Gate or observer.
    pub kind: Kind,
    /// Rust or JavaScript.
    pub lang: Lang,
    /// Rust: depend on the SDK at this path instead of the release's git tag.
    pub sdk_path: Option<PathBuf>,
}

/// Why a project could not be generated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScaffoldError {
    /// The name cannot be a package name.
    #[error(
        "{0:?} is not a usable name: use lower-case letters, digits, `-` and `_`, starting with a letter"
    )]
    BadName(String),
    /// The folder exists and is not empty.
    #[error("{0} already exists and is not empty; choose another name or remove it")]
    Exists(PathBuf),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The repository `hookwasm-sdk` is fetched from until it is published on crates.io.
pub const REPOSITORY: &str = env!("CARGO_PKG_REPOSITORY");

/// The git tag of this release.
pub fn release_tag() -> String {
    format!("v{}", env!("CARGO_PKG_VERSION"))
}

/// The `[dependencies]` line for the SDK: the release's git tag, or a local path.
pub fn sdk_dependency(sdk_path: Option<&Path>) -> String {
    match sdk_path {
        Some(path) => format!(
            "hookwasm-sdk = {{ path = {} }}",
            toml_string(&path.to_string_lossy())
        ),
        None => format!(
            "hookwasm-sdk = {{ git = \"{REPOSITORY}\", tag = \"{}\" }}",
            release_tag()
        ),
    }
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// Where each generated file's text comes from.
mod templates {
    pub const RUST_CARGO: &str = include_str!("../templates/rust/Cargo.toml.tmpl");
    pub const RUST_CARGO_CONFIG: &str = include_str!("../templates/rust/cargo-config.toml.tmpl");
    pub const RUST_GITIGNORE: &str = include_str!("../templates/rust/gitignore.tmpl");
    pub const RUST_GATE: &str = include_str!("../templates/rust/gate.rs.tmpl");
    pub const RUST_OBSERVER: &str = include_str!("../templates/rust/observer.rs.tmpl");
    pub const RUST_README: &str = include_str!("../templates/rust/README.md.tmpl");
    pub const JS_PACKAGE: &str = include_str!("../templates/js/package.json.tmpl");
    pub const JS_GITIGNORE: &str = include_str!("../templates/js/gitignore.tmpl");
    pub const JS_GATE: &str = include_str!("../templates/js/gate.js.tmpl");
    pub const JS_GATE_TEST: &str = include_str!("../templates/js/gate.test.js.tmpl");
    pub const JS_OBSERVER: &str = include_str!("../templates/js/observer.js.tmpl");
    pub const JS_OBSERVER_TEST: &str = include_str!("../templates/js/observer.test.js.tmpl");
    pub const JS_README: &str = include_str!("../templates/js/README.md.tmpl");
    /// The JavaScript SDK and its test kit, copied into each JS project (componentize-js
    /// resolves relative imports only). Links to `sdk-js/`, so the crate packages them.
    pub const JS_SDK: &str = include_str!("../templates/js/hookwasm-sdk/index.js");
    pub const JS_SDK_TYPES: &str = include_str!("../templates/js/hookwasm-sdk/index.d.ts");
    pub const JS_SDK_TESTING: &str = include_str!("../templates/js/hookwasm-sdk/testing.js");
    pub const JS_SDK_HOST_STUB: &str = include_str!("../templates/js/hookwasm-sdk/host-stub.js");
    /// The WIT world the host implements, which componentize-js builds against (`host/wit` is
    /// a link to the workspace's `wit/`).
    pub const WIT: &str = include_str!("../wit/handler.wit");
}

/// Writes the project into `parent/<name>` and returns the files written, relative to it.
pub fn generate(parent: &Path, project: &NewProject) -> Result<Vec<PathBuf>, ScaffoldError> {
    let name = project.name.as_str();
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(ScaffoldError::BadName(name.to_owned()));
    }
    let dir = parent.join(name);
    if std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ScaffoldError::Exists(dir));
    }
    let files = match project.lang {
        Lang::Rust => rust_files(project),
        Lang::Js => js_files(project),
    };
    for (path, text) in &files {
        let full = dir.join(path);
        let write = |full: &Path| -> std::io::Result<()> {
            if let Some(folder) = full.parent() {
                std::fs::create_dir_all(folder)?;
            }
            std::fs::write(full, text)
        };
        write(&full).map_err(|source| ScaffoldError::Write { path: full, source })?;
    }
    Ok(files.into_iter().map(|(path, _)| path).collect())
}

/// Replaces every `{{key}}` of `template`.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values
        .iter()
        .fold(template.to_owned(), |text, (key, value)| {
            text.replace(&format!("{{{{{key}}}}}"), value)
        })
}

fn rust_files(project: &NewProject) -> Vec<(PathBuf, String)> {
    let crate_name = project.name.replace('-', "_");
    let (kind, source) = match project.kind {
        Kind::Gate => ("gate", templates::RUST_GATE),
        Kind::Observer => ("observer", templates::RUST_OBSERVER),
    };
    let module = format!("target/wasm32-wasip2/release/{crate_name}.wasm");
    let dependency = sdk_dependency(project.sdk_path.as_deref());
    let values = [
        ("name", project.name.as_str()),
        ("crate", crate_name.as_str()),
        ("kind", kind),
        ("sdk_dependency", dependency.as_str()),
        ("module", module.as_str()),
    ];
    vec![
        ("Cargo.toml".into(), fill(templates::RUST_CARGO, &values)),
        (
            ".cargo/config.toml".into(),
            fill(templates::RUST_CARGO_CONFIG, &values),
        ),
        (".gitignore".into(), templates::RUST_GITIGNORE.to_owned()),
        ("src/lib.rs".into(), fill(source, &values)),
        ("README.md".into(), fill(templates::RUST_README, &values)),
        ("event.json".into(), pretty(&sample_event(project.kind))),
        (
            "proxy.config.json".into(),
            pretty(&proxy_config(project, &module)),
        ),
    ]
}

fn js_files(project: &NewProject) -> Vec<(PathBuf, String)> {
    let (kind, source, test) = match project.kind {
        Kind::Gate => ("gate", templates::JS_GATE, templates::JS_GATE_TEST),
        Kind::Observer => (
            "observer",
            templates::JS_OBSERVER,
            templates::JS_OBSERVER_TEST,
        ),
    };
    let module = format!("{}.wasm", project.name);
    let values = [
        ("name", project.name.as_str()),
        ("kind", kind),
        ("module", module.as_str()),
    ];
    vec![
        ("package.json".into(), fill(templates::JS_PACKAGE, &values)),
        (".gitignore".into(), fill(templates::JS_GITIGNORE, &values)),
        ("handler.js".into(), fill(source, &values)),
        ("handler.test.js".into(), fill(test, &values)),
        ("README.md".into(), fill(templates::JS_README, &values)),
        ("hookwasm-sdk/index.js".into(), templates::JS_SDK.to_owned()),
        (
            "hookwasm-sdk/index.d.ts".into(),
            templates::JS_SDK_TYPES.to_owned(),
        ),
        (
            "hookwasm-sdk/testing.js".into(),
            templates::JS_SDK_TESTING.to_owned(),
        ),
        (
            "hookwasm-sdk/host-stub.js".into(),
            templates::JS_SDK_HOST_STUB.to_owned(),
        ),
        ("wit/handler.wit".into(), templates::WIT.to_owned()),
        ("event.json".into(), pretty(&sample_event(project.kind))),
        (
            "proxy.config.json".into(),
            pretty(&proxy_config(project, &module)),
        ),
    ]
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// The event a new project's `event.json` holds: one its handler has something to say about
/// (the gate denies it).
fn sample_event(kind: Kind) -> Value {
    let event_type = match kind {
        Kind::Gate => "git.branch.force-pushed",
        Kind::Observer => "push.completed",
    };
    example_event(event_type).unwrap_or(Value::Null)
}

/// A complete, valid CloudEvent of a known type, with plausible data, as a producer sends it.
/// `None` for types the host does not know.
// Reconcile with `hookwasm events <type> --example` (issue 16) when both exist.
pub fn example_event(event_type: &str) -> Option<Value> {
    let repository = json!({
        "url": "https://git.example.com/acme/widgets.git", "project": "acme", "name": "widgets"
    });
    let known = |t: &str| crate::event::known_types().any(|k| k == t);
    if !known(event_type) {
        return None;
    }
    let data = if event_type.starts_with("push.") || event_type.starts_with("pull.") {
        json!({
            "actionId": "action-1",
            "repository": repository,
            "user": {"username": "alice", "email": "alice@example.com"},
            "branch": "refs/heads/main",
            "commitFrom": "1111111111111111111111111111111111111111",
            "commitTo": "2222222222222222222222222222222222222222",
            "steps": [{"name": "checkAuthorEmails", "passed": true}]
        })
    } else if event_type == "git.push.rejected" {
        json!({
            "pushId": "push-1",
            "repository": repository,
            "pusher": {"username": "mallory", "email": "mallory@example.com"},
            "refs": ["refs/heads/main"],
            "reason": "protect-main: force-push to refs/heads/main is not allowed"
        })
    } else {
        let ref_name = if event_type.starts_with("git.tag.") {
            "refs/tags/v1.0.0"
        } else if event_type.starts_with("git.ref.") {
            "refs/notes/commits"
        } else {
            "refs/heads/main"
        };
        let zeros = "0000000000000000000000000000000000000000";
        let (before, after) = if event_type.ends_with(".created") {
            (zeros, "2222222222222222222222222222222222222222")
        } else if event_type.ends_with(".deleted") {
            ("1111111111111111111111111111111111111111", zeros)
        } else {
            (
                "1111111111111111111111111111111111111111",
                "2222222222222222222222222222222222222222",
            )
        };
        json!({
            "pushId": "push-1",
            "repository": repository,
            "pusher": {"username": "mallory", "email": "mallory@example.com"},
            "ref": ref_name,
            "before": before,
            "after": after,
            "pushOptions": []
        })
    };
    Some(json!({
        "specversion": "1.0",
        "id": "evt-1",
        "source": "git://git.example.com/acme/widgets",
        "type": event_type,
        "time": "2026-01-01T12:00:00Z",
        "data": data
    }))
}

/// A `proxy.config.json` listing the project's handler, with the config its defaults use.
fn proxy_config(project: &NewProject, module: &str) -> Value {
    let entry = match project.kind {
        Kind::Gate => json!({
            "name": project.name,
            "module": module,
            "mode": "gate",
            "events": ["git.branch.*"],
            "config": {"protected": ["main"]}
        }),
        Kind::Observer => json!({
            "name": project.name,
            "module": module,
            "config": {"prefix": "seen"}
        }),
    };
    json!({ "eventHandlers": [entry] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, known_types};

    #[test]
    fn every_example_is_an_event_the_host_accepts() {
        for event_type in known_types() {
            let example = example_event(event_type).expect("a known type has an example");
            let event = Event::from_json(example).expect("the host accepts its own example");
            assert_eq!(event.event_type(), event_type);
        }
        assert!(example_event("git.branch.renamed").is_none());
    }

    #[test]
    fn names_must_be_package_names() {
        let dir = tempfile::tempdir().expect("temp dir");
        for bad in ["", "My-Gate", "1gate", "gate/x", "gate x", "-gate"] {
            let project = NewProject {
                name: bad.into(),
                kind: Kind::Gate,
                lang: Lang::Rust,
                sdk_path: None,
            };
            assert!(
                matches!(
                    generate(dir.path(), &project),
                    Err(ScaffoldError::BadName(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_default_dependency_is_this_release_by_git_tag() {
        assert_eq!(
            sdk_dependency(None),
            format!(
                "hookwasm-sdk = {{ git = \"https://github.com/hookwasm/hookwasm\", tag = \"v{}\" }}",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert_eq!(
            sdk_dependency(Some(Path::new("/src/hook\"wasm/sdk"))),
            r#"hookwasm-sdk = { path = "/src/hook\"wasm/sdk" }"#
        );
    }

    #[test]
    fn the_sdk_readme_shows_the_line_new_projects_get() {
        let readme = include_str!("../../sdk/README.md");
        assert!(
            readme.contains(&sdk_dependency(None)),
            "sdk/README.md is out of date"
        );
        let root = include_str!("../../README.md");
        assert!(
            root.contains(&format!("--tag {} --locked hookwasm", release_tag())),
            "README.md's install line is out of date"
        );
    }

    #[test]
    fn an_existing_folder_with_files_is_left_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("taken")).expect("mkdir");
        std::fs::write(dir.path().join("taken/keep.txt"), "mine").expect("write");
        let project = NewProject {
            name: "taken".into(),
            kind: Kind::Observer,
            lang: Lang::Rust,
            sdk_path: None,
        };
        assert!(matches!(
            generate(dir.path(), &project),
            Err(ScaffoldError::Exists(_))
        ));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("taken/keep.txt")).expect("kept"),
            "mine"
        );
    }
}
