//! `/proc/PID/mountinfo`, parsed once for everyone who reads it (the cgroup
//! layer, the host probe, SELinux detection).
//!
//! A line (proc(5)):
//!
//! ```text
//! 36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//! id par dev root  mount point options    optional - type source   super options
//! ```
//!
//! The number of optional fields varies; a lone `-` ends them. The kernel
//! writes space, tab, newline and backslash in the root, the mount point,
//! the filesystem type and the source as octal escapes (`\040`, `\011`,
//! `\012`, `\134`), which [`parse`] undoes. Mount points are bytes, not
//! necessarily UTF-8, so the text is read as bytes and paths come back as
//! [`PathBuf`]s.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One mount of a mountinfo text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub id: u32,
    pub parent_id: u32,
    /// `major:minor` of the filesystem's device.
    pub major: u32,
    pub minor: u32,
    /// The directory of the filesystem that is mounted (not `/` for a bind
    /// mount of a subdirectory).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,relatime`).
    pub options: String,
    /// Optional fields: `shared:N`, `master:N`, `propagate_from:N`,
    /// `unbindable`.
    pub optional: Vec<String>,
    pub fstype: String,
    /// The mount source (a device, or whatever the filesystem was given,
    /// such as `none` or `cgroup2`).
    pub source: String,
    /// Per-superblock options (`rw,memory`, `rw,nsdelegate`).
    pub super_options: String,
}

impl MountInfo {
    /// The per-superblock options one by one.
    pub fn super_options(&self) -> impl Iterator<Item = &str> {
        self.super_options.split(',').filter(|o| !o.is_empty())
    }
}

/// Reads and parses a mountinfo file (`/proc/self/mountinfo`).
pub fn read(path: &Path) -> io::Result<Vec<MountInfo>> {
    Ok(parse(std::fs::read(path)?))
}

/// The mounts of a mountinfo text; lines that are not mountinfo lines are
/// skipped.
pub fn parse(text: impl AsRef<[u8]>) -> Vec<MountInfo> {
    text.as_ref()
        .split(|b| *b == b'\n')
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &[u8]) -> Option<MountInfo> {
    let mut fields = line.split(|b| *b == b' ');
    let id = number(fields.next()?)?;
    let parent_id = number(fields.next()?)?;
    let (major, minor) = split_once(fields.next()?, b':')?;
    let (major, minor) = (number(major)?, number(minor)?);
    let root = path(fields.next()?);
    let mount_point = path(fields.next()?);
    let options = text(fields.next()?);
    let mut optional = Vec::new();
    loop {
        match fields.next()? {
            b"-" => break,
            field => optional.push(text(field)),
        }
    }
    let fstype = String::from_utf8_lossy(&unescape(fields.next()?)).into_owned();
    let source = String::from_utf8_lossy(&unescape(fields.next().unwrap_or_default())).into_owned();
    let super_options = text(fields.next().unwrap_or_default());
    Some(MountInfo {
        id,
        parent_id,
        major,
        minor,
        root,
        mount_point,
        options,
        optional,
        fstype,
        source,
        super_options,
    })
}

fn number(field: &[u8]) -> Option<u32> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

fn split_once(field: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let at = field.iter().position(|b| *b == separator)?;
    Some((&field[..at], &field[at + 1..]))
}

fn path(field: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(field)))
}

fn text(field: &[u8]) -> String {
    String::from_utf8_lossy(field).into_owned()
}

/// Undoes the kernel's octal escapes: a backslash and exactly three octal
/// digits is one byte; anything else is kept as it is.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let digits = field.get(i + 1..i + 4);
        match digits {
            Some(d) if field[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)) => {
                let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                match u8::try_from(value) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 4;
                    }
                    // `\400` and up is no escape the kernel writes.
                    Err(_) => {
                        out.push(field[i]);
                        i += 1;
                    }
                }
            }
            _ => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    use super::{MountInfo, parse, unescape};

    #[test]
    fn parses_the_example_of_proc_5() {
        let mounts = parse(
            "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n",
        );
        assert_eq!(
            mounts,
            vec![MountInfo {
                id: 36,
                parent_id: 35,
                major: 98,
                minor: 0,
                root: "/mnt1".into(),
                mount_point: "/mnt/parent".into(),
                options: "rw,noatime".into(),
                optional: vec!["master:1".into()],
                fstype: "ext3".into(),
                source: "/dev/root".into(),
                super_options: "rw,errors=continue".into(),
            }]
        );
        assert_eq!(
            mounts[0].super_options().collect::<Vec<_>>(),
            ["rw", "errors=continue"]
        );
    }

    #[test]
    fn optional_fields_end_at_the_separator_however_many_there_are() {
        let text = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
25 30 0:23 / /sys rw,nosuid shared:7 master:2 propagate_from:1 unbindable - sysfs sysfs rw
";
        let mounts = parse(text);
        assert_eq!(mounts.len(), 2);
        assert!(mounts[0].optional.is_empty());
        assert_eq!(
            mounts[1].optional,
            ["shared:7", "master:2", "propagate_from:1", "unbindable"]
        );
        assert_eq!(mounts[1].fstype, "sysfs");
        assert_eq!(mounts[1].super_options, "rw");
    }

    #[test]
    fn escapes_are_undone_in_root_mount_point_type_and_source() {
        // A mount point with a space, a tab, a newline and a backslash; a
        // root with a space; a source with a space; a " - " inside a path
        // is no separator (it is escaped).
        let line = r"40 30 8:1 /my\040dir /mnt/a\040b\011c\012d\134e rw - fuse.my\040fs /dev/disk\040one rw";
        let mount = &parse(line)[0];
        assert_eq!(mount.root, Path::new("/my dir"));
        assert_eq!(mount.mount_point, Path::new("/mnt/a b\tc\nd\\e"));
        assert_eq!(mount.fstype, "fuse.my fs");
        assert_eq!(mount.source, "/dev/disk one");
        let line = r"41 30 8:1 / /tmp/x\040-\040y rw shared:1 - tmpfs tmpfs rw";
        let mount = &parse(line)[0];
        assert_eq!(mount.mount_point, Path::new("/tmp/x - y"));
        assert_eq!(mount.optional, ["shared:1"]);
        assert_eq!(mount.fstype, "tmpfs");
    }

    #[test]
    fn mount_points_need_not_be_utf8() {
        let mut line = b"42 30 8:1 / /mnt/".to_vec();
        line.extend_from_slice(&[0xff, 0xfe]);
        line.extend_from_slice(b" rw - ext4 /dev/sda1 rw\n");
        let mount = &parse(&line)[0];
        assert_eq!(mount.mount_point.as_os_str().as_bytes(), b"/mnt/\xff\xfe");
    }

    #[test]
    fn broken_lines_are_skipped() {
        let text = "\
not a mountinfo line
36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1
x 35 98:0 / /a rw - ext4 /dev/a rw
36 35 98 / /a rw - ext4 /dev/a rw

37 35 98:1 / /b rw - ext4
";
        let mounts = parse(text);
        assert_eq!(mounts.len(), 1, "{mounts:?}");
        assert_eq!(mounts[0].mount_point, Path::new("/b"));
        assert_eq!(mounts[0].source, "");
        assert_eq!(mounts[0].super_options().count(), 0);
    }

    #[test]
    fn only_three_octal_digits_make_an_escape() {
        assert_eq!(unescape(br"a\040b"), b"a b");
        assert_eq!(unescape(br"\134\134"), b"\\\\");
        assert_eq!(unescape(br"a\04"), br"a\04");
        assert_eq!(unescape(br"a\089"), br"a\089");
        assert_eq!(unescape(br"\400"), br"\400");
        assert_eq!(unescape(br"trailing\"), br"trailing\");
    }
}
