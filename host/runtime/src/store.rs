//! The plugin store: an immutable, content-addressed directory of plugin files
//! (`<store>/<sha256>.<ext>`). A file is written once (temp file + rename) and
//! never overwritten, because overwriting a library a worker has loaded would
//! crash it; runs always load from here, never from the plugins directory.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::RuntimeError;

/// SHA-256 hex of a file, read in chunks (never the whole file in memory).
pub fn sha256_file(path: &Path) -> Result<String, RuntimeError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(RuntimeError::io("cannot read plugin file", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(RuntimeError::io("cannot read plugin file", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Copies `src` into the store under its hash; returns the stored path and
/// whether this call created it. A file already stored under that hash is left
/// untouched.
pub fn put(store_dir: &Path, src: &Path, sha256: &str) -> Result<(PathBuf, bool), RuntimeError> {
    let ext = src.extension().and_then(|e| e.to_str()).unwrap_or("so");
    std::fs::create_dir_all(store_dir).map_err(RuntimeError::io("cannot create plugin store", store_dir))?;
    let target = store_dir.join(format!("{sha256}.{ext}"));
    if target.exists() {
        return Ok((target, false));
    }
    let tmp = store_dir.join(format!(".{sha256}.{}.tmp", std::process::id()));
    std::fs::copy(src, &tmp).map_err(RuntimeError::io("cannot copy plugin into the store", &tmp))?;
    let copied = sha256_file(&tmp)?;
    if copied != sha256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(RuntimeError::Refused(format!(
            "{} changed while it was being registered; wait until it is fully written and reload again",
            src.display()
        )));
    }
    std::fs::rename(&tmp, &target).map_err(RuntimeError::io("cannot move plugin into the store", &target))?;
    Ok((target, true))
}

/// Where this host keeps the stored file of `version` (the registering host's
/// path, or this host's own store when that path is not here).
pub fn local_path(store_dir: &Path, version: &dc_core::apps::PluginVersionRow) -> PathBuf {
    let registered = PathBuf::from(&version.store_path);
    if registered.exists() {
        return registered;
    }
    let ext = registered.extension().and_then(|e| e.to_str()).unwrap_or("so");
    store_dir.join(format!("{}.{ext}", version.sha256))
}

/// Makes sure this host has the plugin file of `version` in its store,
/// fetching it from the database (`dc_plugin_files`) when it registered on
/// another host; the bytes are checked against the hash before they are used.
pub async fn ensure_local(
    db: &dc_core::Database,
    store_dir: &Path,
    version: &dc_core::apps::PluginVersionRow,
) -> Result<PathBuf, RuntimeError> {
    let path = local_path(store_dir, version);
    if path.exists() {
        return Ok(path);
    }
    let bytes = dc_core::apps::plugin_file(db, &version.sha256).await?.ok_or_else(|| {
        RuntimeError::NotFound(format!(
            "the plugin file of {} {} (sha256 {}) is neither in this host's store ({}) nor in the database; register the file again on this host",
            version.app_id,
            version.version,
            &version.sha256[..12.min(version.sha256.len())],
            store_dir.display()
        ))
    })?;
    let got = hex::encode(Sha256::digest(&bytes));
    if got != version.sha256 {
        return Err(RuntimeError::Conflict(format!(
            "the database holds other bytes for plugin file {} (they hash to {got}); register the file again",
            version.sha256
        )));
    }
    std::fs::create_dir_all(store_dir).map_err(RuntimeError::io("cannot create plugin store", store_dir))?;
    let tmp = store_dir.join(format!(".{}.{}.fetch", version.sha256, std::process::id()));
    std::fs::write(&tmp, &bytes).map_err(RuntimeError::io("cannot write plugin into the store", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(RuntimeError::io("cannot move plugin into the store", &path))?;
    tracing::info!(sha256 = %version.sha256, path = %path.display(), "plugin file fetched from the database");
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_by_hash_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("p.so");
        std::fs::write(&src, b"one").expect("write");
        let h = sha256_file(&src).expect("hash");
        let (stored, created) = put(&dir.path().join("store"), &src, &h).expect("stored");
        assert!(created);
        assert_eq!(stored.file_name().and_then(|n| n.to_str()), Some(format!("{h}.so").as_str()));
        std::fs::write(&src, b"two").expect("write");
        let again = put(&dir.path().join("store"), &src, &h);
        // same hash name already present: untouched
        assert_eq!(again.expect("exists"), (stored.clone(), false));
        assert_eq!(std::fs::read(&stored).expect("read"), b"one");
        let wrong = put(&dir.path().join("store2"), &src, &h).expect_err("content does not match hash");
        assert!(wrong.to_string().contains("changed while it was being registered"));
    }
}
