//! `serve --watch --build "<command>"`: edit a handler's source and the host rebuilds it, then
//! reloads, while events keep flowing to the running version.
//!
//! The source folders are watched, with the folders under them (not build output or tool
//! folders). Only source files count (`.rs`, `.toml`, `.js`,
//! `.mjs`, `.cjs`, `.ts`, `.mts`, `.wit`, `package.json`), outside build output and tool folders
//! (`target/`, `node_modules/`, `.hookwasm/`, hidden folders): the host's own log, the outbox and
//! what the build writes never start a build. After a burst of edits the command runs once, in
//! the config's folder, through the shell. If it fails, its output goes to the host's log and
//! the running version keeps serving; if it succeeds, the config and modules are reloaded (a
//! module that did not change is left alone).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::reload::{Reloader, WatchError};

/// Quiet time after the last source edit before a build starts.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// How many lines of a failed build's output the log shows (the end, where errors are).
const OUTPUT_LINES: usize = 60;

/// Folders whose contents are never sources.
const IGNORED_FOLDERS: [&str; 3] = ["target", "node_modules", "__pycache__"];

/// What to run, where, and what to watch.
#[derive(Debug, Clone)]
pub struct Rebuild {
    /// The shell command, e.g. `cargo build --release`.
    pub command: String,
    /// Where it runs: the config's folder.
    pub dir: PathBuf,
    /// Folders (or files) whose edits start a build.
    pub sources: Vec<PathBuf>,
}

/// How one build ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildResult {
    /// It exited 0.
    Ok,
    /// It failed: exit status and the end of its output.
    Failed(String),
}

impl Rebuild {
    /// Starts watching the sources; the returned future builds and reloads after each burst of
    /// edits until the process ends.
    pub fn watch(
        self,
        reloader: Arc<Reloader>,
    ) -> Result<impl Future<Output = ()> + Send, WatchError> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && !matches!(event.kind, notify::EventKind::Access(_))
            {
                let _ = tx.send(event.paths);
            }
        })?;
        let mut folders = SourceFolders {
            watcher,
            watched: std::collections::BTreeSet::new(),
        };
        for source in &self.sources {
            if !source.is_dir() {
                return Err(WatchError::NotAFolder(source.clone()));
            }
            folders.add(source);
        }
        Ok(async move {
            let sources = self.sources.clone();
            let edits = |paths: &[PathBuf]| {
                paths.iter().any(|p| {
                    sources
                        .iter()
                        .any(|root| p.strip_prefix(root).is_ok_and(is_source))
                })
            };
            // A folder created under a source folder (a new module) is watched too.
            let follow = |paths: &[PathBuf], folders: &mut SourceFolders| {
                for path in paths {
                    let inside = sources.iter().any(|root| {
                        path.strip_prefix(root).is_ok_and(|relative| {
                            !relative.components().any(|c| ignored(c.as_os_str()))
                        })
                    });
                    if inside && path.is_dir() {
                        folders.add(path);
                    }
                }
            };
            loop {
                loop {
                    let Some(paths) = rx.recv().await else { return };
                    follow(&paths, &mut folders);
                    if edits(&paths) {
                        break;
                    }
                }
                let mut quiet_until = tokio::time::Instant::now() + DEBOUNCE;
                loop {
                    match tokio::time::timeout_at(quiet_until, rx.recv()).await {
                        Ok(Some(paths)) if edits(&paths) => {
                            follow(&paths, &mut folders);
                            quiet_until = tokio::time::Instant::now() + DEBOUNCE;
                        }
                        Ok(Some(paths)) => follow(&paths, &mut folders),
                        Ok(None) => return,
                        Err(_quiet) => break,
                    }
                }
                let this = self.clone();
                let started = Instant::now();
                tracing::info!(command = %self.command, "sources changed: building");
                let result = tokio::task::spawn_blocking(move || this.run())
                    .await
                    .unwrap_or_else(|e| BuildResult::Failed(format!("the build task failed: {e}")));
                match result {
                    BuildResult::Ok => {
                        tracing::info!(
                            ms = started.elapsed().as_millis(),
                            "build succeeded: reloading"
                        );
                        reloader.reload().await;
                    }
                    BuildResult::Failed(why) => tracing::error!(
                        command = %self.command,
                        "build failed, the running version keeps serving: {why}"
                    ),
                }
            }
        })
    }

    /// Runs the command once, to the end.
    pub fn run(&self) -> BuildResult {
        let mut command = if cfg!(windows) {
            let mut c = std::process::Command::new("cmd");
            c.arg("/C").arg(&self.command);
            c
        } else {
            let mut c = std::process::Command::new("sh");
            c.arg("-c").arg(&self.command);
            c
        };
        let output = match command
            .current_dir(&self.dir)
            .stdin(std::process::Stdio::null())
            .output()
        {
            Ok(output) => output,
            Err(e) => return BuildResult::Failed(format!("cannot run `{}`: {e}", self.command)),
        };
        if output.status.success() {
            return BuildResult::Ok;
        }
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(OUTPUT_LINES)..].join("\n");
        BuildResult::Failed(format!("{}\n{tail}", output.status))
    }
}

/// The folders under the source folders, each watched on its own: build output and tool
/// folders (`target/`, `node_modules/`: thousands of folders) are never watched, and symbolic
/// links are not followed.
struct SourceFolders {
    watcher: notify::RecommendedWatcher,
    watched: std::collections::BTreeSet<PathBuf>,
}

impl SourceFolders {
    /// Watches `folder` and every folder under it that is not ignored.
    fn add(&mut self, folder: &Path) {
        let mut pending = vec![folder.to_path_buf()];
        while let Some(folder) = pending.pop() {
            if !self.watched.insert(folder.clone()) {
                continue;
            }
            if let Err(e) = self.watcher.watch(&folder, RecursiveMode::NonRecursive) {
                tracing::warn!(folder = %folder.display(), "cannot watch: {e}");
            }
            let Ok(entries) = std::fs::read_dir(&folder) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) && !ignored(&entry.file_name()) {
                    pending.push(entry.path());
                }
            }
        }
    }
}

/// Folders that never hold sources: build output, dependencies, hidden folders.
fn ignored(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    IGNORED_FOLDERS.contains(&name.as_ref()) || name.starts_with('.')
}

/// Whether an edit of `path` (relative to a watched source folder) is an edit of a handler's
/// source.
pub fn is_source(path: &Path) -> bool {
    let in_ignored_folder = path
        .parent()
        .is_some_and(|folder| folder.components().any(|c| ignored(c.as_os_str())));
    if in_ignored_folder {
        return false;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    if name.starts_with('.') {
        return false;
    }
    name == "package.json"
        || path.extension().is_some_and(|ext| {
            ["rs", "toml", "js", "mjs", "cjs", "ts", "mts", "wit"]
                .contains(&ext.to_string_lossy().as_ref())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sources_outside_build_output_count() {
        for source in [
            "src/lib.rs",
            "Cargo.toml",
            "handler.js",
            "wit/handler.wit",
            "package.json",
        ] {
            assert!(is_source(Path::new(source)), "{source}");
        }
        for other in [
            "serve.log",
            "proxy.config.json",
            ".hookwasm/outbox.db-wal",
            "target/wasm32-wasip2/release/build/x/out/lib.rs",
            "node_modules/x/index.js",
            ".git/index",
            "src/.lib.rs.swp",
            "gate.wasm",
            "Cargo.lock",
        ] {
            assert!(!is_source(Path::new(other)), "{other}");
        }
    }

    #[test]
    fn a_failed_build_reports_its_status_and_output() {
        let dir = tempfile::tempdir().expect("temp dir");
        let build = Rebuild {
            command: "echo compiling; echo 'error[E0425]: cannot find value' >&2; exit 3".into(),
            dir: dir.path().to_owned(),
            sources: vec![],
        };
        let BuildResult::Failed(why) = build.run() else {
            panic!("the command fails")
        };
        assert!(why.contains("exit status: 3"), "{why}");
        assert!(why.contains("compiling\nerror[E0425]"), "{why}");
        let ok = Rebuild {
            command: "true".into(),
            ..build
        };
        assert_eq!(ok.run(), BuildResult::Ok);
    }
}
