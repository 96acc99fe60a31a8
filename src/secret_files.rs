//! Files that hold secrets: the data directory and SQLite database the server creates are
//! private to its user whatever the umask, and a private key that group or others can read is
//! refused at start rather than used (one check for every kind of key).

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// A private key file that users other than its owner can read.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path} is readable by group or others (mode {mode:04o}): run `chmod {fix:o} {path}`", path = path.display())]
pub struct ExposedKey {
    /// What the file is, as the operator configured it (`IDENTITY_SIGNING_KEY_FILE`, ...).
    pub what: &'static str,
    pub path: PathBuf,
    pub mode: u32,
    /// The mode to set: 600, or 640 for a file root owns (see [`ensure_private`]).
    pub fix: u32,
}

/// Refuses `path` if others, or a group, may read or write it. As Postgres does for its TLS
/// key, a file owned by root may be readable by its group (0640): that is how Kubernetes mounts
/// a Secret for a non-root process (owner root, group `fsGroup`, `defaultMode: 0440`). A file
/// that does not exist passes: reading it reports that, naming it, where it is used.
pub fn ensure_private(what: &'static str, path: &Path) -> Result<(), ExposedKey> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if let Ok(metadata) = fs::metadata(path) {
            let mode = metadata.permissions().mode() & 0o7777;
            let (forbidden, fix) = if metadata.uid() == 0 { (0o037, 0o640) } else { (0o077, 0o600) };
            if mode & forbidden != 0 {
                return Err(ExposedKey { what, path: path.to_owned(), mode, fix });
            }
        }
    }
    let _ = (what, path);
    Ok(())
}

/// Every private key the configuration names, each refused if others can read it: the signing
/// key (configured, or generated earlier into the data directory), retired keys kept in their
/// private form, and the TLS key. A key kind added later belongs here too.
pub fn check_private_keys(config: &crate::config::Config) -> Result<(), ExposedKey> {
    match &config.signing_key_file {
        Some(path) => ensure_private("IDENTITY_SIGNING_KEY_FILE", path)?,
        None => ensure_private(
            "the generated signing key",
            &config.data_dir.join(crate::tokens::generated_key_file(config.signing_alg)),
        )?,
    }
    match &config.encryption_key_file {
        Some(path) => ensure_private("IDENTITY_ENCRYPTION_KEY_FILE", path)?,
        None => ensure_private(
            "the generated encryption key",
            &config.data_dir.join(crate::sealing::GENERATED_KEY_FILE),
        )?,
    }
    for path in &config.decryption_key_files {
        ensure_private("IDENTITY_DECRYPTION_KEY_FILES", path)?;
    }
    // A retired key may be kept as its private key: it still verifies, so it must not leak.
    for path in &config.verify_key_files {
        if fs::read_to_string(path).is_ok_and(|pem| pem.contains("PRIVATE KEY")) {
            ensure_private("IDENTITY_VERIFY_KEY_FILES", path)?;
        }
    }
    if let Some(tls) = &config.tls {
        ensure_private("IDENTITY_TLS_KEY_FILE", &tls.key_file)?;
    }
    Ok(())
}

/// Creates `dir` and any missing parents with mode 0700; directories that exist are left as
/// the operator made them.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates the empty file `path` with mode 0600 (and its directory with 0700) unless it exists,
/// so that whoever opens it next (SQLite) finds a private file rather than making one by the
/// umask.
pub fn create_private_file(path: &Path) -> io::Result<()> {
    write_new_private_file(path, &[]).map(drop)
}

/// Writes `contents` to the new file `path` (mode 0600, its directory 0700) unless the file
/// exists: `Ok(false)` then, and the file is left alone. `create_new` makes two processes
/// starting on one data dir agree on a single generated key.
pub fn write_new_private_file(path: &Path, contents: &[u8]) -> io::Result<bool> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            if !contents.is_empty() {
                io::Write::write_all(&mut file, contents).and_then(|()| file.sync_all())?;
            }
            Ok(true)
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(error),
    }
}

/// Takes group and other permissions off a SQLite database and its `-wal` and `-shm` files
/// (SQLite gives those the main file's mode, so this matters for files made before the server
/// created them 0600). Best effort: a file the server cannot chmod is reported, not fatal.
pub fn make_private_with_companions(database: &Path) {
    #[cfg(unix)]
    for suffix in ["", "-wal", "-shm"] {
        use std::os::unix::fs::PermissionsExt;
        let mut name = database.as_os_str().to_owned();
        name.push(suffix);
        let path = PathBuf::from(name);
        let Ok(metadata) = fs::metadata(&path) else { continue };
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 == 0 {
            continue;
        }
        match fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o700)) {
            Ok(()) => {
                tracing::warn!(path = %path.display(), was = format!("{mode:04o}"), "made a database file private to its owner")
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot make a database file private")
            }
        }
    }
    #[cfg(not(unix))]
    let _ = database;
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_directories_and_files_are_private_whatever_the_umask() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("a/b/identity.db");
        create_private_file(&file).unwrap();
        assert_eq!(mode(&root.path().join("a")), 0o700);
        assert_eq!(mode(&root.path().join("a/b")), 0o700);
        assert_eq!(mode(&file), 0o600);
    }

    #[test]
    fn a_key_readable_by_others_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        fs::write(&key, "secret").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let error = ensure_private("IDENTITY_TLS_KEY_FILE", &key).unwrap_err().to_string();
        // 600, or 640 when the tests run as root (a root-owned key may be group-readable).
        assert!(error.contains(&format!("0 {}`", key.display())) && error.contains("chmod 6"), "{error}");
        assert!(!error.contains('\n'));
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(ensure_private("IDENTITY_TLS_KEY_FILE", &key).is_ok());
    }

    #[test]
    fn loose_database_files_are_tightened_companions_included() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("identity.db");
        for name in ["identity.db", "identity.db-wal", "identity.db-shm"] {
            let path = dir.path().join(name);
            fs::write(&path, "").unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        }
        make_private_with_companions(&db);
        for name in ["identity.db", "identity.db-wal", "identity.db-shm"] {
            assert_eq!(mode(&dir.path().join(name)), 0o600, "{name}");
        }
    }
}
