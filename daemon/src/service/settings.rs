//! The daemon's configuration file (`/etc/lxvirt/lxvirtd.conf`): one
//! `name = value` per line, the names those of `lxvirtd`'s long options,
//! `#` starting a comment line. Options given on the command line win, so
//! a unit file or an administrator can still override a setting for one
//! run without editing the file.

use std::path::{Path, PathBuf};

/// One `name = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub name: String,
    pub value: String,
    /// 1-based, for messages.
    pub line: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: expected `name = value` (a long option of lxvirtd without its dashes)")]
    Syntax { path: PathBuf, line: usize },
    #[error("{path}:{line}: '{name}' is set a second time (first on line {first})")]
    Repeated {
        path: PathBuf,
        line: usize,
        name: String,
        first: usize,
    },
}

/// The settings of the file at `path`. A missing file is no settings when
/// `required` is false (the default file is optional).
pub fn read(path: &Path, required: bool) -> Result<Vec<Setting>, SettingsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(Vec::new());
        }
        Err(source) => {
            return Err(SettingsError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    parse(&text, path)
}

/// The settings in `text`, read from `path` (named in errors).
pub fn parse(text: &str, path: &Path) -> Result<Vec<Setting>, SettingsError> {
    let mut settings: Vec<Setting> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let syntax = || SettingsError::Syntax {
            path: path.to_owned(),
            line,
        };
        let (name, value) = trimmed.split_once('=').ok_or_else(syntax)?;
        let name = name.trim();
        let valid_name = !name.is_empty()
            && !name.starts_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid_name {
            return Err(syntax());
        }
        if let Some(first) = settings.iter().find(|s| s.name == name) {
            return Err(SettingsError::Repeated {
                path: path.to_owned(),
                line,
                name: name.to_owned(),
                first: first.line,
            });
        }
        settings.push(Setting {
            name: name.to_owned(),
            value: unquote(value.trim()).to_owned(),
            line,
        });
    }
    Ok(settings)
}

/// `"a value"` → `a value`: quotes let a value keep surrounding spaces.
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parsed(text: &str) -> Result<Vec<(String, String, usize)>, SettingsError> {
        Ok(parse(text, Path::new("/etc/lxvirt/lxvirtd.conf"))?
            .into_iter()
            .map(|s| (s.name, s.value, s.line))
            .collect())
    }

    #[test]
    fn names_values_comments_and_quotes() {
        let text = "# lxvirtd settings\n\nstorage-backend = devicemapper\n  default-network=false  \nlog = \" lxvirtd=debug \"\n";
        assert_eq!(
            parsed(text).unwrap(),
            [
                ("storage-backend".into(), "devicemapper".into(), 3),
                ("default-network".into(), "false".into(), 4),
                ("log".into(), " lxvirtd=debug ".into(), 5),
            ]
        );
    }

    #[test]
    fn bad_lines_are_named_with_their_number() {
        let error = parsed("a = 1\nno equals sign\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "/etc/lxvirt/lxvirtd.conf:2: expected `name = value` (a long option of lxvirtd without its dashes)"
        );
        assert!(matches!(
            parsed("--log = info"),
            Err(SettingsError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            parsed("Log = info"),
            Err(SettingsError::Syntax { .. })
        ));
        assert!(matches!(
            parsed("log = info\n\nlog = debug"),
            Err(SettingsError::Repeated {
                line: 3,
                first: 1,
                ..
            })
        ));
    }

    #[test]
    fn a_missing_default_file_is_no_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lxvirtd.conf");
        assert!(read(&path, false).unwrap().is_empty());
        assert!(matches!(read(&path, true), Err(SettingsError::Read { .. })));
    }
}
