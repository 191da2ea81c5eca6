//! Crash-safe files: every file lxvirt persists goes through here.
//!
//! Two kinds of writes: [`write_atomic`] (temporary file, fsync, rename,
//! fsync of the directory) for the state and configuration directories,
//! and [`replace_file`], atomic for readers and against a crash of the
//! writer but not forced to disk, for the run directory.
//!
//! Versioned state files are JSON objects with a `version` field next to
//! the value's own fields: [`write_versioned`] adds it, [`read_versioned`]
//! checks it before it looks at anything else, so a file from a newer
//! lxvirtd is refused with both versions named rather than misread.
//!
//! The lowest layer of the daemon: it imports nothing of the crate.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Prefix of temporary files; the store skips (and reports) leftovers.
pub const TEMP_PREFIX: &str = ".tmp-";

/// Largest versioned file read (an image's OCI config is kept in its meta).
pub const MAX_VERSIONED_FILE: u64 = 16 << 20;

/// Writes `contents` to `path` atomically: a temporary file in the same
/// directory, fsync, rename over `path`, fsync of the directory. A reader
/// sees either the old or the new file, never a torn one, also after a
/// power loss.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    write_via_temp(path, contents, mode, Durability::Durable)
}

/// Replaces `path` atomically for readers and against crashes of the
/// process, without forcing it to disk: for runtime state in the run
/// directory, which lives in memory (`/run`) and ends with the boot anyway.
/// Keeps fsync off the container start path.
pub fn replace_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    write_via_temp(path, contents, mode, Durability::Volatile)
}

/// How far a write must have gone before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On disk, file and directory entry: survives a power loss
    /// ([`write_atomic`]).
    Durable,
    /// Atomic for readers and against a crash of the writer, not forced to
    /// disk: for the run directory ([`replace_file`]).
    Volatile,
}

fn write_via_temp(
    path: &Path,
    contents: &[u8],
    mode: u32,
    durability: Durability,
) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let temp = dir.join(format!(
        "{TEMP_PREFIX}{}-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let durable = durability == Durability::Durable;
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(contents)?;
        if durable {
            file.sync_all()?;
        }
        fs::rename(&temp, path)?;
        if durable { sync_dir(dir) } else { Ok(()) }
    })();
    if result.is_err() {
        // Best effort: the temp file is ours and holds nothing anyone needs.
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Removes `path` and makes the removal durable.
pub fn remove_durable(path: &Path) -> io::Result<()> {
    fs::remove_file(path)?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// fsyncs a directory so that renames and unlinks in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A value kept in a versioned file. It must serialize as a JSON object
/// without a field of its own named `version`.
pub trait Versioned: Serialize + DeserializeOwned {
    /// The format version this build writes, and the newest it reads.
    const VERSION: u32;
    /// The oldest version this build still reads; older files are refused.
    const OLDEST_READABLE: u32 = Self::VERSION;
}

/// Why a versioned file could not be read or written. Every message names
/// the file.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: larger than {MAX_VERSIONED_FILE} bytes, not a file lxvirtd wrote; move it aside", path.display())]
    TooLarge { path: PathBuf },
    #[error("{}: truncated or corrupt; restore it from a backup or move it aside", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: no valid format version field, not a file lxvirtd wrote; move it aside", path.display())]
    NoVersion { path: PathBuf },
    #[error(
        "{}: written by a newer lxvirtd (format version {found}; this one reads up to {supported}); upgrade lxvirtd, or remove the file if it is stale",
        path.display()
    )]
    Newer {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "{}: format version {found} is older than this lxvirtd reads (versions {oldest} to {supported}); remove the file if it is stale",
        path.display()
    )]
    Older {
        path: PathBuf,
        found: u32,
        oldest: u32,
        supported: u32,
    },
    #[error("cannot encode the contents of {}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl PersistError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            PersistError::Read { path, .. }
            | PersistError::TooLarge { path }
            | PersistError::Corrupt { path, .. }
            | PersistError::NoVersion { path }
            | PersistError::Newer { path, .. }
            | PersistError::Older { path, .. }
            | PersistError::Encode { path, .. }
            | PersistError::Write { path, .. } => path,
        }
    }
}

/// The value with its version in front, as it is written.
#[derive(Serialize)]
struct Envelope<'a, T> {
    version: u32,
    #[serde(flatten)]
    value: &'a T,
}

/// Writes `value` with its format version ([`Versioned::VERSION`]) as JSON
/// to `path`, atomically and as durable as asked.
pub fn write_versioned<T: Versioned>(
    path: &Path,
    value: &T,
    mode: u32,
    durability: Durability,
) -> Result<(), PersistError> {
    let envelope = Envelope {
        version: T::VERSION,
        value,
    };
    let mut bytes =
        serde_json::to_vec_pretty(&envelope).map_err(|source| PersistError::Encode {
            path: path.to_owned(),
            source,
        })?;
    bytes.push(b'\n');
    write_via_temp(path, &bytes, mode, durability).map_err(|source| PersistError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Reads a file written by [`write_versioned`]: its version is checked
/// first (a newer or too old one is refused), then the value is decoded.
pub fn read_versioned<T: Versioned>(path: &Path) -> Result<T, PersistError> {
    match read_versioned_if_present(path)? {
        Some(value) => Ok(value),
        None => Err(PersistError::Read {
            path: path.to_owned(),
            source: io::ErrorKind::NotFound.into(),
        }),
    }
}

/// Like [`read_versioned`], with `None` when the file does not exist.
pub fn read_versioned_if_present<T: Versioned>(path: &Path) -> Result<Option<T>, PersistError> {
    let read_error = |source| PersistError::Read {
        path: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_VERSIONED_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_VERSIONED_FILE {
        return Err(PersistError::TooLarge {
            path: path.to_owned(),
        });
    }
    decode(path, &bytes).map(Some)
}

/// Fuzzing: reads `bytes` as a versioned file of `T`. It may be refused,
/// never panic; what is read is written and read again.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_round_trip<T: Versioned>(bytes: &[u8]) {
    let path = Path::new("fuzzed.json");
    let Ok(value) = decode::<T>(path, bytes) else {
        return;
    };
    let written = serde_json::to_vec(&Envelope {
        version: T::VERSION,
        value: &value,
    })
    .unwrap_or_else(|e| panic!("a value read cannot be written: {e}"));
    if let Err(e) = decode::<T>(path, &written) {
        panic!("a value read and written does not read back: {e}");
    }
}

/// The value in the bytes of a versioned file; `path` is for the errors.
fn decode<T: Versioned>(path: &Path, bytes: &[u8]) -> Result<T, PersistError> {
    let corrupt = |source| PersistError::Corrupt {
        path: path.to_owned(),
        source,
    };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(corrupt)?;
    let serde_json::Value::Object(mut fields) = value else {
        return Err(PersistError::NoVersion {
            path: path.to_owned(),
        });
    };
    let found = fields
        .remove("version")
        .and_then(|v| v.as_u64())
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| PersistError::NoVersion {
            path: path.to_owned(),
        })?;
    if found > T::VERSION {
        return Err(PersistError::Newer {
            path: path.to_owned(),
            found,
            supported: T::VERSION,
        });
    }
    if found < T::OLDEST_READABLE {
        return Err(PersistError::Older {
            path: path.to_owned(),
            found,
            oldest: T::OLDEST_READABLE,
            supported: T::VERSION,
        });
    }
    T::deserialize(serde_json::Value::Object(fields)).map_err(corrupt)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::ffi::OsString;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use serde::{Deserialize, Serialize};

    use super::{
        Durability, PersistError, Versioned, read_versioned, read_versioned_if_present,
        write_atomic, write_versioned,
    };

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        #[serde(default)]
        count: Option<u64>,
        by_key: BTreeMap<String, u32>,
    }

    impl Versioned for Sample {
        const VERSION: u32 = 2;
    }

    fn sample() -> Sample {
        Sample {
            name: "web".into(),
            count: Some(3),
            by_key: [("a".to_string(), 1)].into(),
        }
    }

    fn names(dir: &std::path::Path) -> Vec<OsString> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.xml");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(names(dir.path()), vec![OsString::from("a.xml")]);
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.xml");
        write_atomic(&path, b"old", 0o600).unwrap();
        // A directory in the way of the rename makes the write fail late.
        let blocked = dir.path().join("b.xml");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), b"").unwrap();
        assert!(write_atomic(&blocked, b"new", 0o600).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn versioned_files_round_trip_with_the_version_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        for durability in [Durability::Durable, Durability::Volatile] {
            write_versioned(&path, &sample(), 0o640, durability).unwrap();
            assert_eq!(read_versioned::<Sample>(&path).unwrap(), sample());
            assert_eq!(names(dir.path()), vec![OsString::from("s.json")]);
        }
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\n  \"version\": 2,\n"), "{text}");
        // The format older lxvirtd wrote (compact, version anywhere) reads.
        fs::write(
            &path,
            r#"{"name":"web","by_key":{"a":1},"version":2,"count":3}"#,
        )
        .unwrap();
        assert_eq!(read_versioned::<Sample>(&path).unwrap(), sample());
    }

    #[test]
    fn a_missing_file_is_none_or_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.json");
        assert_eq!(read_versioned_if_present::<Sample>(&path).unwrap(), None);
        let err = read_versioned::<Sample>(&path).unwrap_err();
        assert!(matches!(err, PersistError::Read { .. }), "{err}");
        assert_eq!(err.path(), path);
    }

    #[test]
    fn a_newer_version_is_refused_naming_the_file_and_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        // Whatever else a newer format changed, the version decides.
        fs::write(&path, r#"{"version": 3, "name": 7}"#).unwrap();
        let err = read_versioned::<Sample>(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: written by a newer lxvirtd (format version 3; this one reads up to 2); upgrade lxvirtd, or remove the file if it is stale",
                path.display()
            )
        );
        fs::write(&path, r#"{"version": 1, "name": "web", "by_key": {}}"#).unwrap();
        let err = read_versioned::<Sample>(&path).unwrap_err();
        assert!(
            matches!(
                err,
                PersistError::Older {
                    found: 1,
                    oldest: 2,
                    supported: 2,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_files_are_typed_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        // Truncated, empty, not JSON, or the wrong shape for its version.
        let corrupt: [&[u8]; 4] = [
            b"",
            b"{\"version\": 2, \"na",
            b"\x00\xff garbage",
            b"{\"version\": 2, \"name\": 5, \"by_key\": {}}",
        ];
        // No version, or one that is no format version.
        let unversioned: [&[u8]; 5] = [
            b"{\"name\": \"web\", \"by_key\": {}}",
            b"{\"version\": \"2\"}",
            b"{\"version\": -1}",
            b"{\"version\": 99999999999}",
            b"[2, 3]",
        ];
        let cases = (corrupt.iter().map(|bytes| (*bytes, true)))
            .chain(unversioned.iter().map(|bytes| (*bytes, false)));
        for (bytes, is_corrupt) in cases {
            fs::write(&path, bytes).unwrap();
            let err = read_versioned::<Sample>(&path).unwrap_err();
            let kind_ok = if is_corrupt {
                matches!(err, PersistError::Corrupt { .. })
            } else {
                matches!(err, PersistError::NoVersion { .. })
            };
            assert!(kind_ok, "{:?}: {err:?}", String::from_utf8_lossy(bytes));
            assert!(
                err.to_string().starts_with(&path.display().to_string()),
                "{err}"
            );
        }
    }

    #[test]
    fn an_oversized_file_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let file = fs::File::create(&path).unwrap();
        file.set_len(super::MAX_VERSIONED_FILE + 1).unwrap();
        let err = read_versioned::<Sample>(&path).unwrap_err();
        assert!(matches!(err, PersistError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn a_value_that_is_no_object_cannot_be_written() {
        #[derive(Debug, Serialize, Deserialize)]
        struct Bare(u32);
        impl Versioned for Bare {
            const VERSION: u32 = 1;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bare.json");
        let err = write_versioned(&path, &Bare(1), 0o600, Durability::Volatile).unwrap_err();
        assert!(matches!(err, PersistError::Encode { .. }), "{err}");
        assert!(names(dir.path()).is_empty());
    }
}
