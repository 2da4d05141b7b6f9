//! Hot reload: watch the config file and every module file, and apply changes while events flow.
//!
//! A change is debounced (a build writes a file several times; editors replace files by
//! rename), then the config is read again and applied as a diff, handler by handler:
//! - a new entry is loaded and put in service;
//! - a removed or disabled entry is taken out of service; an observer first works through what
//!   is already queued;
//! - a changed entry, or a module file whose digest changed, is compiled off the dispatch path
//!   (from the compile cache when it can be), `init` runs, and only then is the new version
//!   swapped in. Events in flight finish on the old version. If anything fails, the running
//!   version stays and the failure is logged and shown in `GET /v1/handlers`;
//! - a change of `mode` replaces the handler (an observer's worker starts or stops).
//!
//! Unchanged handlers keep their queues, counters and quarantine state.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{Config, HandlerSpec};
use crate::dispatch::{self, Dispatcher, Install, Version};
use crate::sandbox::{self, Sandbox};

/// Quiet time after the last file event before a reload starts.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Why watching files for changes could not start. The CLI prints the chain of causes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The operating system's file watcher could not start (e.g. inotify's limits).
    #[error("cannot watch files for changes")]
    Watcher(#[from] notify::Error),
    /// A `--sources` path is not a folder.
    #[error("--sources {}: not a folder", .0.display())]
    NotAFolder(PathBuf),
}

/// Applies config and module changes to a running dispatcher.
#[derive(Debug)]
pub struct Reloader {
    config_path: PathBuf,
    sandbox: Sandbox,
    dispatcher: Arc<Dispatcher>,
    /// The config text last applied (empty before the first reload: start-up logged its
    /// warnings). Locked for a whole reload, so there is one at a time: the watcher and SIGHUP
    /// may ask at once.
    applied_text: tokio::sync::Mutex<String>,
}

/// What one reload did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Handlers put in service.
    pub added: Vec<String>,
    /// Handlers taken out of service.
    pub removed: Vec<String>,
    /// Handlers whose new version is now in service.
    pub swapped: Vec<String>,
    /// Handlers (or the config file) whose change could not be applied, with why.
    pub failed: Vec<(String, String)>,
}

impl Reloader {
    /// A reloader for the dispatcher that serves `config_path`.
    pub fn new(config_path: &Path, sandbox: Sandbox, dispatcher: Arc<Dispatcher>) -> Reloader {
        Reloader {
            config_path: config_path.to_owned(),
            sandbox,
            dispatcher,
            applied_text: tokio::sync::Mutex::new(
                std::fs::read_to_string(config_path).unwrap_or_default(),
            ),
        }
    }

    /// Reads the config again and applies what changed.
    pub async fn reload(&self) -> Summary {
        let summary = self.apply().await;
        tracing::debug!(?summary, "reload done");
        summary
    }

    async fn apply(&self) -> Summary {
        let mut applied_text = self.applied_text.lock().await;
        let mut summary = Summary::default();
        let text = std::fs::read_to_string(&self.config_path).map_err(|source| {
            crate::config::ConfigError::Read {
                path: self.config_path.clone(),
                source,
            }
        });
        let config = match text.and_then(|text| {
            let config = Config::parse(&text, &self.config_path)?;
            Ok((config, text))
        }) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!("config not reloaded, every handler keeps running as it was: {e}");
                self.dispatcher.stats().reloads_failed.fetch_add(1, Relaxed);
                summary
                    .failed
                    .push((self.config_path.display().to_string(), e.to_string()));
                return summary;
            }
        };
        let (config, text) = config;
        // An edited config gets the same warnings as at start: a mistake made while the host
        // runs is worth as much. A rebuilt module alone does not repeat them.
        if *applied_text != text {
            for warning in &config.warnings {
                tracing::warn!("{}: {warning}", self.config_path.display());
            }
            config.warn_undeclared_types();
            *applied_text = text;
        }
        self.dispatcher.set_registry(config.registry.clone());
        let wanted: Vec<&HandlerSpec> = config.handlers.iter().filter(|s| s.enabled).collect();

        for slot in self.dispatcher.slots().iter() {
            if !wanted.iter().any(|s| s.name == slot.name()) {
                self.remove(slot.name(), &mut summary);
            }
        }
        for spec in wanted {
            let how = match self.dispatcher.slot(&spec.name) {
                None => Install::Add,
                Some(slot) if slot.mode() != spec.mode => Install::Replace,
                Some(slot) => {
                    let running = slot.version();
                    let digest = sandbox::file_digest(&spec.module).ok();
                    if running.spec.source == spec.source
                        && digest.as_deref() == Some(running.handler.digest())
                    {
                        continue;
                    }
                    Install::Swap
                }
            };
            let started = Instant::now();
            match dispatch::load_handler(&self.sandbox, spec).await {
                Ok(handler) => {
                    let version = Version::new(spec.clone(), handler);
                    self.dispatcher.install(how, version, started.elapsed());
                    match how {
                        Install::Add => summary.added.push(spec.name.clone()),
                        Install::Replace | Install::Swap => summary.swapped.push(spec.name.clone()),
                    }
                }
                Err(e) => {
                    let digest = sandbox::file_digest(&spec.module).ok();
                    self.dispatcher.install_failed(how, spec, digest, &e);
                    summary.failed.push((spec.name.clone(), e.to_string()));
                }
            }
        }
        summary
    }

    fn remove(&self, name: &str, summary: &mut Summary) {
        if let Some(queued) = self.dispatcher.remove(name) {
            tracing::info!(
                handler = name,
                "handler removed; it makes those of its {queued} open deliveries that are due, then stops (the rest stay in the outbox)"
            );
            summary.removed.push(name.to_owned());
        }
    }

    /// The files a reload depends on: the config and every module it names.
    fn watched_files(&self) -> BTreeSet<PathBuf> {
        let mut files = BTreeSet::from([absolute(&self.config_path)]);
        if let Ok(config) = Config::load(&self.config_path) {
            files.extend(config.handlers.iter().map(|s| absolute(&s.module)));
        }
        files
    }

    /// Starts watching the config and module files; the returned future reloads after each
    /// burst of changes until the process ends. The watches are in place when this returns, so
    /// a change made right after is seen. Folders are watched rather than files, so files
    /// replaced by rename and modules that appear after the config names them are seen.
    pub fn watch(self: Arc<Self>) -> Result<impl Future<Output = ()> + Send, WatchError> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Reading a file (as a reload does) is an access event: only changes count.
            if let Ok(event) = event
                && !matches!(event.kind, notify::EventKind::Access(_))
            {
                let _ = tx.send(event.paths);
            }
        })?;
        let mut watches = Watches {
            watcher,
            folders: BTreeSet::new(),
        };
        let mut files = self.watched_files();
        watches.arm(&files);
        Ok(async move {
            let mut seen_at_last_reload = None;
            loop {
                // A file written after the last reload started but before its folder was
                // watched sent no event to us: compare what the files look like now.
                let missed = seen_at_last_reload
                    .as_ref()
                    .is_some_and(|seen| *seen != snapshot(&files));
                // A change to one of our files or to a folder on the way to one. Other files in
                // the watched folders (the host's own log, say) are ignored, here and below.
                let ours = |paths: &[PathBuf]| {
                    paths.iter().any(|p| {
                        let p = absolute(p);
                        files.iter().any(|f| f.starts_with(&p))
                    })
                };
                if !missed {
                    loop {
                        let Some(paths) = rx.recv().await else { return };
                        if ours(&paths) {
                            break;
                        }
                    }
                }
                // Then for the burst to end: only changes to our files push the reload back.
                let mut quiet_until = tokio::time::Instant::now() + DEBOUNCE;
                loop {
                    match tokio::time::timeout_at(quiet_until, rx.recv()).await {
                        Ok(Some(paths)) if ours(&paths) => {
                            quiet_until = tokio::time::Instant::now() + DEBOUNCE;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => return,
                        Err(_quiet) => break,
                    }
                }
                seen_at_last_reload = Some(snapshot(&files));
                self.reload().await;
                files = self.watched_files();
                watches.arm(&files);
            }
        })
    }
}

/// The folders being watched.
struct Watches {
    watcher: notify::RecommendedWatcher,
    folders: BTreeSet<PathBuf>,
}

impl Watches {
    /// Watches the folder of every file, or its nearest existing ancestor while the folder does
    /// not exist. Everything is watched afresh: a folder deleted and created again has lost its
    /// watch.
    fn arm(&mut self, files: &BTreeSet<PathBuf>) {
        for folder in std::mem::take(&mut self.folders) {
            let _ = self.watcher.unwatch(&folder);
        }
        self.folders = files.iter().filter_map(|f| existing_ancestor(f)).collect();
        for folder in &self.folders {
            if let Err(e) = self.watcher.watch(folder, RecursiveMode::NonRecursive) {
                tracing::warn!(folder = %folder.display(), "cannot watch: {e}");
            }
        }
    }
}

/// When each file was last modified (`None`: it does not exist).
fn snapshot(files: &BTreeSet<PathBuf>) -> Vec<Option<std::time::SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// The file's folder, or the closest folder above it that exists.
fn existing_ancestor(file: &Path) -> Option<PathBuf> {
    file.ancestors()
        .skip(1)
        .find(|p| p.is_dir())
        .map(Path::to_path_buf)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
