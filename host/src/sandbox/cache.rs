//! On-disk cache of compiled components, so a restart or a reload of an unchanged module skips
//! Cranelift.
//!
//! An entry is named after the module's SHA-256 and a key of the engine that compiled it (the
//! wasmtime version and every setting that affects compiled code), and ends with the SHA-256 of
//! its own bytes. An entry whose key or checksum does not match, or that wasmtime refuses, is
//! deleted and rebuilt; it is never run. The folder must be writable only by the host's user:
//! whoever can write there could plant code.

use std::hash::Hasher;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where commands without a config folder (`hookwasm call`) keep compiled components:
/// `HOOKWASM_CACHE_DIR`, else the user's cache folder (`$XDG_CACHE_HOME/hookwasm`,
/// `~/.cache/hookwasm`; `~/Library/Caches/hookwasm` on macOS; `%LOCALAPPDATA%\hookwasm` on
/// Windows). `None` when none of these can be found.
pub fn user_cache_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("HOOKWASM_CACHE_DIR") {
        return Some(dir);
    }
    let base = if cfg!(windows) {
        var("LOCALAPPDATA")
    } else if cfg!(target_os = "macos") {
        var("HOME").map(|home| home.join("Library").join("Caches"))
    } else {
        var("XDG_CACHE_HOME")
            .filter(|dir| dir.is_absolute())
            .or_else(|| var("HOME").map(|home| home.join(".cache")))
    };
    base.map(|dir| dir.join("hookwasm"))
}

/// Length of the checksum trailer.
const CHECKSUM_BYTES: usize = 32;

/// A folder of compiled components for one engine configuration.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
}

impl CompileCache {
    /// A cache in `dir` (created if missing, private to this user) for `engine`.
    pub fn open(dir: &Path, engine: &Engine) -> std::io::Result<CompileCache> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut hasher = Sha256Hasher(Sha256::new());
        hasher.write(env!("CARGO_PKG_VERSION").as_bytes());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        Ok(CompileCache {
            dir: dir.to_owned(),
            engine_key,
        })
    }

    fn path(&self, module_digest: &str) -> PathBuf {
        self.dir
            .join(format!("{module_digest}-{}.cwasm", self.engine_key))
    }

    /// The compiled component for a module digest, if a sound entry exists.
    pub fn get(&self, engine: &Engine, module_digest: &str) -> Option<Component> {
        let path = self.path(module_digest);
        let bytes = std::fs::read(&path).ok()?;
        let verified = bytes.len() > CHECKSUM_BYTES && {
            let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
            Sha256::digest(body).as_slice() == checksum
        };
        let component = verified.then(|| {
            let body = &bytes[..bytes.len() - CHECKSUM_BYTES];
            // SAFETY: `body` is exactly what `Component::serialize` produced for an engine with
            // this configuration (the engine key is in the file name) and it passed our checksum,
            // so it is not truncated or altered; wasmtime checks version and settings again.
            #[allow(unsafe_code)]
            unsafe {
                Component::deserialize(engine, body)
            }
        });
        match component {
            Some(Ok(component)) => Some(component),
            failed => {
                let why = match failed {
                    Some(Err(e)) => e.to_string(),
                    _ => "checksum mismatch".into(),
                };
                tracing::warn!(entry = %path.display(), "ignoring a broken compile-cache entry ({why}); rebuilding it");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a compiled component; failures only cost a recompile later, so they are logged.
    pub fn put(&self, module_digest: &str, component: &Component) {
        let result = component
            .serialize()
            .map_err(|e| e.to_string())
            .and_then(|mut bytes| {
                let checksum = Sha256::digest(&bytes);
                bytes.extend_from_slice(&checksum);
                // Write then rename, so a reader never sees half an entry.
                let path = self.path(module_digest);
                let partial = path.with_extension(format!("partial-{}", std::process::id()));
                std::fs::write(&partial, &bytes)
                    .and_then(|()| std::fs::rename(&partial, &path))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = result {
            tracing::warn!(dir = %self.dir.display(), "cannot write the compile cache: {e}");
        }
    }
}

/// Feeds `Hash` output into SHA-256, for a key that is stable across processes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_corrupt_ones_are_rebuilt() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Engine::default();
        let cache = CompileCache::open(dir.path(), &engine).expect("cache");
        let component = Component::new(&engine, empty_component()).expect("compiles");
        assert!(cache.get(&engine, "abc").is_none());
        cache.put("abc", &component);
        assert!(cache.get(&engine, "abc").is_some());

        let path = cache.path("abc");
        let mut bytes = std::fs::read(&path).expect("entry");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&path, bytes).expect("corrupt it");
        assert!(
            cache.get(&engine, "abc").is_none(),
            "a corrupt entry is never used"
        );
        assert!(!path.exists(), "and it is deleted");
    }

    #[test]
    fn another_engine_configuration_does_not_share_entries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let plain = Engine::default();
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true);
        let metered = Engine::new(&config).expect("engine");
        let a = CompileCache::open(dir.path(), &plain).expect("cache");
        let b = CompileCache::open(dir.path(), &metered).expect("cache");
        assert_ne!(a.path("abc"), b.path("abc"));
    }

    /// The smallest valid component: the preamble alone (`\0asm`, version 0x0d, layer 1).
    fn empty_component() -> Vec<u8> {
        vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]
    }
}
