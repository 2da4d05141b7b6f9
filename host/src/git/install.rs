//! `hookwasm install-git-hooks`: writes `pre-receive` and `post-receive` scripts that run
//! `hookwasm git-hook`, keeping any hook already there.
//!
//! A hook that is not ours is renamed to `<name>.hookwasm-chained` and our script runs it first
//! with the same input; for `pre-receive` its refusal rejects the push before any handler runs.
//! Our scripts carry a marker line, so installing again rewrites only what changed and
//! uninstalling removes only what we wrote, putting the chained hook back.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{GitError, Repo};

/// The hooks hookwasm installs.
pub const HOOKS: [&str; 2] = ["pre-receive", "post-receive"];
/// Suffix of a hook that was there before ours and that ours runs first.
pub const CHAINED_SUFFIX: &str = ".hookwasm-chained";
/// The line that marks a script as ours.
const MARKER: &str = "# hookwasm-managed-hook";

/// Why installing or uninstalling failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// The folder is not a git repository, or git failed.
    #[error("{path}: {source}")]
    Repo {
        /// The repository as given.
        path: PathBuf,
        /// What git said.
        source: GitError,
    },
    /// A file could not be read, written, renamed or removed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Both a foreign hook and a chained hook exist: installing would lose one of them.
    #[error(
        "{hook} is not hookwasm's and {chained} exists too; move one of them away and install again"
    )]
    ChainTaken {
        /// The foreign hook.
        hook: PathBuf,
        /// The chained hook already there.
        chained: PathBuf,
    },
}

/// What to write into the scripts.
#[derive(Debug, Clone)]
pub struct HookCommand {
    /// Absolute path of the `hookwasm` binary.
    pub program: PathBuf,
    /// Absolute path of the config file.
    pub config: PathBuf,
    /// `HOOKWASM_URL` to set in the scripts, forwarding to a running `hookwasm serve`.
    pub url: Option<String>,
}

/// What happened to one hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Our script was written; `chained` when it runs a hook that was there before.
    Installed {
        /// The script.
        path: PathBuf,
        /// Whether it runs a previous hook first.
        chained: bool,
    },
    /// Our script was already there, exactly as it would be written.
    Unchanged {
        /// The script.
        path: PathBuf,
    },
    /// Our script was removed; `restored` when the chained hook was put back.
    Removed {
        /// The script.
        path: PathBuf,
        /// Whether the previous hook is back in place.
        restored: bool,
    },
    /// The hook there is not ours: uninstalling left it alone.
    NotOurs {
        /// The hook.
        path: PathBuf,
    },
    /// Nothing to uninstall.
    Absent {
        /// Where the hook would be.
        path: PathBuf,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Installed {
                path,
                chained: true,
            } => write!(
                f,
                "installed {} (runs the previous hook first, now {}{CHAINED_SUFFIX})",
                path.display(),
                file_name(path)
            ),
            Change::Installed { path, .. } => write!(f, "installed {}", path.display()),
            Change::Unchanged { path } => write!(f, "unchanged {}", path.display()),
            Change::Removed {
                path,
                restored: true,
            } => write!(
                f,
                "removed {} (the previous hook is back in place)",
                path.display()
            ),
            Change::Removed { path, .. } => write!(f, "removed {}", path.display()),
            Change::NotOurs { path } => write!(f, "left {} alone: not hookwasm's", path.display()),
            Change::Absent { path } => write!(f, "no hookwasm hook at {}", path.display()),
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Installs `pre-receive` and `post-receive` into the hooks folder of the repository at
/// `repo` (bare or not; `core.hooksPath` is honoured).
pub fn install(repo: &Path, command: &HookCommand) -> Result<Vec<Change>, InstallError> {
    let dir = hooks_dir(repo)?;
    std::fs::create_dir_all(&dir).map_err(|source| InstallError::Io {
        path: dir.clone(),
        source,
    })?;
    HOOKS
        .iter()
        .map(|name| install_one(&dir, name, command))
        .collect()
}

/// Removes our scripts and puts chained hooks back.
pub fn uninstall(repo: &Path) -> Result<Vec<Change>, InstallError> {
    let dir = hooks_dir(repo)?;
    HOOKS.iter().map(|name| uninstall_one(&dir, name)).collect()
}

fn hooks_dir(repo: &Path) -> Result<PathBuf, InstallError> {
    let error = |source| InstallError::Repo {
        path: repo.to_owned(),
        source,
    };
    Repo::at(repo).map_err(error)?.hooks_dir().map_err(error)
}

fn install_one(dir: &Path, name: &str, command: &HookCommand) -> Result<Change, InstallError> {
    let path = dir.join(name);
    let chained = dir.join(format!("{name}{CHAINED_SUFFIX}"));
    let existing = read_if_exists(&path)?;
    if existing.as_deref().is_some_and(|text| !is_ours(text)) {
        if chained.exists() {
            return Err(InstallError::ChainTaken {
                hook: path,
                chained,
            });
        }
        rename(&path, &chained)?;
    }
    let has_chained = chained.exists();
    let script = script(name, command, has_chained.then_some(chained.as_path()));
    if existing.as_deref() == Some(script.as_str()) {
        return Ok(Change::Unchanged { path });
    }
    std::fs::write(&path, &script).map_err(|source| InstallError::Io {
        path: path.clone(),
        source,
    })?;
    make_executable(&path)?;
    Ok(Change::Installed {
        path,
        chained: has_chained,
    })
}

fn uninstall_one(dir: &Path, name: &str) -> Result<Change, InstallError> {
    let path = dir.join(name);
    let chained = dir.join(format!("{name}{CHAINED_SUFFIX}"));
    match read_if_exists(&path)? {
        Some(text) if !is_ours(&text) => return Ok(Change::NotOurs { path }),
        Some(_) => std::fs::remove_file(&path).map_err(|source| InstallError::Io {
            path: path.clone(),
            source,
        })?,
        None if !chained.exists() => return Ok(Change::Absent { path }),
        None => {}
    }
    let restored = chained.exists();
    if restored {
        rename(&chained, &path)?;
    }
    Ok(Change::Removed { path, restored })
}

fn is_ours(script: &str) -> bool {
    script.lines().any(|line| line == MARKER)
}

fn read_if_exists(path: &Path) -> Result<Option<String>, InstallError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(InstallError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), InstallError> {
    std::fs::rename(from, to).map_err(|source| InstallError::Io {
        path: from.to_owned(),
        source,
    })
}

#[cfg(unix)]
fn make_executable(path: &Path) -> Result<(), InstallError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(|source| {
        InstallError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> Result<(), InstallError> {
    Ok(())
}

/// The script for hook `name`. Git passes the push on stdin; the script reads it once and gives
/// the same lines to the chained hook (first) and to hookwasm. Paths are absolute because git
/// runs hooks from the repository's folder with whatever PATH the server has.
fn script(name: &str, command: &HookCommand, chained: Option<&Path>) -> String {
    let mut out = String::new();
    out.push_str("#!/bin/sh\n");
    out.push_str(MARKER);
    out.push('\n');
    let _ = writeln!(
        out,
        "# Written by `hookwasm install-git-hooks`; `hookwasm install-git-hooks --uninstall` removes it."
    );
    out.push_str("input=$(cat)\n");
    if let Some(chained) = chained {
        let chained = quote(chained);
        if name == "pre-receive" {
            let _ = writeln!(
                out,
                "# A refusal by the hook that was here before rejects the push."
            );
            let _ = writeln!(
                out,
                "printf '%s\\n' \"$input\" | {chained} \"$@\" || exit $?"
            );
        } else {
            let _ = writeln!(out, "printf '%s\\n' \"$input\" | {chained} \"$@\"");
        }
    }
    if let Some(url) = &command.url {
        let _ = writeln!(out, "HOOKWASM_URL={}", quote(Path::new(url)));
        out.push_str("export HOOKWASM_URL\n");
    }
    let _ = writeln!(
        out,
        "printf '%s\\n' \"$input\" | {} git-hook {name} --config {}",
        quote(&command.program),
        quote(&command.config)
    );
    out
}

/// Single-quotes a path for sh.
fn quote(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', r"'\''"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn command() -> HookCommand {
        HookCommand {
            program: "/opt/hookwasm/bin/hookwasm".into(),
            config: "/etc/hookwasm/it's.json".into(),
            url: None,
        }
    }

    #[test]
    fn scripts_run_hookwasm_with_absolute_paths_quoted() {
        let text = script("post-receive", &command(), None);
        assert_eq!(
            text,
            "#!/bin/sh\n\
             # hookwasm-managed-hook\n\
             # Written by `hookwasm install-git-hooks`; `hookwasm install-git-hooks --uninstall` removes it.\n\
             input=$(cat)\n\
             printf '%s\\n' \"$input\" | '/opt/hookwasm/bin/hookwasm' git-hook post-receive --config '/etc/hookwasm/it'\\''s.json'\n"
        );
        assert!(is_ours(&text));
    }

    #[test]
    fn a_chained_pre_receive_refusal_stops_the_script() {
        let mut forwarding = command();
        forwarding.url = Some("http://127.0.0.1:8787".into());
        let text = script(
            "pre-receive",
            &forwarding,
            Some(Path::new("/r/hooks/pre-receive.hookwasm-chained")),
        );
        assert!(text.contains(
            "printf '%s\\n' \"$input\" | '/r/hooks/pre-receive.hookwasm-chained' \"$@\" || exit $?\n"
        ));
        assert!(text.contains("HOOKWASM_URL='http://127.0.0.1:8787'\nexport HOOKWASM_URL\n"));
        let post = script(
            "post-receive",
            &command(),
            Some(Path::new("/r/hooks/post-receive.hookwasm-chained")),
        );
        assert!(post.contains("'/r/hooks/post-receive.hookwasm-chained' \"$@\"\n"));
    }
}
