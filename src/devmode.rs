//! Dev mode: secrets generated once and kept in the data directory.
//!
//! A node started with no config file and no `SWITCHBOARD_*` variable has
//! no configured secrets. Instead of refusing to start it generates an HMAC
//! secret and an API key on first start, stores them in
//! `<data_dir>/dev-secrets.json` (mode 0600), and reuses them afterwards so
//! tokens minted with `switchboard token` keep working across restarts.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The generated secrets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevSecrets {
    pub hmac_secret: String,
    pub api_key: String,
}

/// Why the secrets could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum DevSecretsError {
    #[error("cannot use {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a valid secrets file: {source}; delete it to generate new secrets")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The path of the secrets file in `data_dir`.
pub fn secrets_path(data_dir: &Path) -> PathBuf {
    data_dir.join("dev-secrets.json")
}

/// Loads the secrets, creating them on first use; `true` if just created.
pub fn load_or_create(data_dir: &Path) -> Result<(DevSecrets, bool), DevSecretsError> {
    let path = secrets_path(data_dir);
    let io_err = |source| DevSecretsError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let secrets =
                serde_json::from_slice(&bytes).map_err(|source| DevSecretsError::Corrupt {
                    path: path.clone(),
                    source,
                })?;
            Ok((secrets, false))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).map_err(io_err)?;
            let secrets = DevSecrets {
                hmac_secret: crate::random::token(32),
                api_key: crate::random::token(24),
            };
            let text =
                serde_json::to_vec_pretty(&secrets).map_err(|source| DevSecretsError::Corrupt {
                    path: path.clone(),
                    source,
                })?;
            write_private(&path, &text).map_err(io_err)?;
            Ok((secrets, true))
        }
        Err(e) => Err(io_err(e)),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = load_or_create(dir.path()).unwrap();
        assert!(created);
        let (again, created) = load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(first, again);
        assert!(first.hmac_secret.len() >= 40);
    }
}
