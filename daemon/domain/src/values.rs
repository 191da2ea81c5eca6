//! Small validated value types of the domain model: names, MAC addresses,
//! user and group references, and the keyword enums.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Defines a keyword enum with `as_str`, `parse` and `NAMES`.
macro_rules! keyword_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $( $(#[$vmeta])* $variant ),+ }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Every keyword, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The keyword as written in XML.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The variant for a keyword, if any.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use keyword_enum;

/// Longest domain name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Defines a name type that holds a string checked by [`check_name`].
macro_rules! object_name {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Checks `name`; the error says what is wrong.
            pub fn new(name: &str) -> Result<$name, String> {
                check_name(name, MAX_NAME_LEN)?;
                Ok($name(name.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

object_name! {
    /// A domain name: 1 to 64 characters of `[A-Za-z0-9_.+-]`, not starting
    /// with `.` or `-`. Such names are safe as file names, in D-Bus object
    /// paths once escaped, in cgroup and machined names, and on command
    /// lines.
    DomainName
}

object_name! {
    /// A network name: the same rule as [`DomainName`], for the same reasons
    /// (file names, object paths, command lines).
    NetworkName
}

impl DomainName {
    /// The host name derived from the domain name as libvirt does: only
    /// `[A-Za-z0-9-]` are kept, leading dashes are dropped, at most 63
    /// characters; `localhost` when nothing is left.
    pub fn hostname(&self) -> String {
        let filtered: String = self
            .0
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let trimmed: String = filtered.trim_start_matches('-').chars().take(63).collect();
        if trimmed.is_empty() {
            "localhost".to_owned()
        } else {
            trimmed
        }
    }
}

/// The rule shared by domain, network and other object names.
pub fn check_name(name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > max {
        return Err(format!("the name is longer than {max} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-')))
    {
        return Err(format!("the name contains {c:?}"));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err("the name starts with '.' or '-'".into());
    }
    Ok(())
}

/// A network interface name as the kernel accepts it: 1 to 15 bytes, no `/`,
/// `:`, whitespace or control characters, not `.` or `..`.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the interface name is empty".into());
    }
    if name.len() > 15 {
        return Err("the interface name is longer than 15 bytes".into());
    }
    if name == "." || name == ".." {
        return Err("'.' and '..' are not interface names".into());
    }
    // What the kernel takes (no '/', ':' or space) and the schemas'
    // device names allow: letters, digits and `_.@+-`, which every tool
    // that handles the name (tc, nft, dnsmasq) takes as it is.
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '+' | '-')))
    {
        return Err(format!(
            "the interface name contains {c:?}; use letters, digits and '_.@+-'"
        ));
    }
    Ok(())
}

/// Longest DNS name accepted, in bytes (RFC 1035, without the final dot).
pub const MAX_DNS_NAME_LEN: usize = 253;

/// A DNS name such as `example.org` or a host name such as `web1`: labels
/// of 1 to 63 letters, digits and `-`, not starting or ending with `-`,
/// separated by single dots; at most 253 bytes; no trailing dot.
pub fn check_dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_DNS_NAME_LEN {
        return Err(format!("the name is longer than {MAX_DNS_NAME_LEN} bytes"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(
                "the name has an empty label (two dots in a row, or a dot at an end)".into(),
            );
        }
        if label.len() > 63 {
            return Err(format!("the label '{label}' is longer than 63 bytes"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!("the name contains {c:?}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("the label '{label}' starts or ends with '-'"));
        }
    }
    Ok(())
}

/// An Ethernet MAC address; never multicast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Parses `52:54:00:12:34:56` (also with `-`); refuses multicast
    /// addresses.
    pub fn parse(text: &str) -> Result<MacAddr, String> {
        let text = text.trim();
        let sep = if text.contains('-') { '-' } else { ':' };
        let mut bytes = [0u8; 6];
        let mut count = 0;
        for part in text.split(sep) {
            if count == 6 || part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "'{text}' is not a MAC address like 52:54:00:12:34:56"
                ));
            }
            bytes[count] = u8::from_str_radix(part, 16)
                .map_err(|_| format!("'{text}' is not a MAC address"))?;
            count += 1;
        }
        if count != 6 {
            return Err(format!(
                "'{text}' is not a MAC address like 52:54:00:12:34:56"
            ));
        }
        let mac = MacAddr(bytes);
        if mac.is_multicast() {
            return Err(format!("'{text}' is a multicast address"));
        }
        Ok(mac)
    }

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// A user or group for `<inituser>`/`<initgroup>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdRef {
    /// A name, looked up in the container; if no such name exists and it is
    /// all digits, it is used as a number (libvirt's rule).
    Name(String),
    /// `+N`: a number, never looked up.
    Id(u32),
}

impl IdRef {
    pub fn parse(text: &str) -> Result<IdRef, String> {
        let t = text.trim();
        if let Some(num) = t.strip_prefix('+') {
            if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("'{t}' is neither a name nor +NUMBER"));
            }
            return num
                .parse()
                .map(IdRef::Id)
                .map_err(|_| format!("'{t}' is too large for a user or group id"));
        }
        if t.is_empty() || t.len() > 32 {
            return Err("user and group names have 1 to 32 characters".into());
        }
        let body = t.strip_suffix('$').unwrap_or(t);
        if body.is_empty()
            || body.starts_with('-')
            || !body
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(format!(
                "'{t}' is not a valid user or group name (letters, digits, '_', '.', '-')"
            ));
        }
        Ok(IdRef::Name(t.to_owned()))
    }
}

impl fmt::Display for IdRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdRef::Name(n) => f.write_str(n),
            IdRef::Id(n) => write!(f, "+{n}"),
        }
    }
}

/// Whether `name` can be an environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Normalises an absolute path: drops `.` components, repeated and trailing
/// slashes. Refuses relative paths, `..`, NUL and over-long paths.
pub fn normalize_abs_path(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("the path is empty".into());
    }
    if text.len() > 4096 {
        return Err("the path is longer than 4096 bytes".into());
    }
    if text.chars().any(|c| c.is_control()) {
        return Err("the path contains a control character".into());
    }
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(format!("'{text}' is not an absolute path"));
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => return Err(format!("'{text}' contains '..'")),
            Component::Prefix(_) => return Err(format!("'{text}' is not a Unix path")),
        }
    }
    Ok(out)
}

/// Whether a free-form string is printable: no control characters but tab
/// and newline.
pub fn is_printable_text(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
}

keyword_enum! {
    /// A Linux capability, in kernel numbering order, named without `cap_`.
    pub enum Capability {
        Chown = "chown",
        DacOverride = "dac_override",
        DacReadSearch = "dac_read_search",
        Fowner = "fowner",
        Fsetid = "fsetid",
        Kill = "kill",
        Setgid = "setgid",
        Setuid = "setuid",
        Setpcap = "setpcap",
        LinuxImmutable = "linux_immutable",
        NetBindService = "net_bind_service",
        NetBroadcast = "net_broadcast",
        NetAdmin = "net_admin",
        NetRaw = "net_raw",
        IpcLock = "ipc_lock",
        IpcOwner = "ipc_owner",
        SysModule = "sys_module",
        SysRawio = "sys_rawio",
        SysChroot = "sys_chroot",
        SysPtrace = "sys_ptrace",
        SysPacct = "sys_pacct",
        SysAdmin = "sys_admin",
        SysBoot = "sys_boot",
        SysNice = "sys_nice",
        SysResource = "sys_resource",
        SysTime = "sys_time",
        SysTtyConfig = "sys_tty_config",
        Mknod = "mknod",
        Lease = "lease",
        AuditWrite = "audit_write",
        AuditControl = "audit_control",
        Setfcap = "setfcap",
        MacOverride = "mac_override",
        MacAdmin = "mac_admin",
        Syslog = "syslog",
        WakeAlarm = "wake_alarm",
        BlockSuspend = "block_suspend",
        AuditRead = "audit_read",
        Perfmon = "perfmon",
        Bpf = "bpf",
        CheckpointRestore = "checkpoint_restore",
    }
}

impl Capability {
    /// The kernel's number for this capability (`CAP_CHOWN` is 0).
    pub fn number(self) -> u32 {
        // Declaration order is kernel order; the enum has no explicit values.
        self as u32
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn domain_names() {
        for ok in ["a", "web-1", "A.b_c+d", "0", &"x".repeat(64)] {
            assert!(DomainName::new(ok).is_ok(), "{ok:?} refused");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "-x",
            "a/b",
            "a b",
            "é",
            "a\n",
            "a:b",
            &"x".repeat(65),
        ] {
            assert!(DomainName::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn network_names_follow_the_domain_rule() {
        assert!(NetworkName::new("default").is_ok());
        assert!(NetworkName::new(".x").is_err());
        assert_eq!(
            NetworkName::new("a b").unwrap_err(),
            DomainName::new("a b").unwrap_err()
        );
    }

    #[test]
    fn dns_names() {
        for ok in ["a", "web-1", "example.org", "a.b-c.d", &"x".repeat(63)] {
            assert!(check_dns_name(ok).is_ok(), "{ok:?} refused");
        }
        let long = ["a"; 127].join(".") + "bc";
        for bad in [
            "",
            ".",
            "a..b",
            "a.",
            ".a",
            "-a",
            "a-",
            "a_b",
            "a b",
            "é",
            &"x".repeat(64),
            &long,
        ] {
            assert!(check_dns_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn hostnames_filter_like_libvirt() {
        let h = |n: &str| DomainName::new(n).unwrap().hostname();
        assert_eq!(h("web-1"), "web-1");
        assert_eq!(h("my_box.example+1"), "myboxexample1");
        assert_eq!(h("_-x"), "x");
        assert_eq!(h("___"), "localhost");
        assert_eq!(h(&"a".repeat(64)).len(), 63);
    }

    #[test]
    fn mac_addresses() {
        assert_eq!(
            MacAddr::parse("52:54:00:AB:cd:0f").unwrap().to_string(),
            "52:54:00:ab:cd:0f"
        );
        assert_eq!(
            MacAddr::parse("52-54-00-ab-cd-0f").unwrap().to_string(),
            "52:54:00:ab:cd:0f"
        );
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:00",
            "52:54:00:ab:cd:g0",
            "5:54:00:ab:cd:0f",
            "01:00:5e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
        ] {
            assert!(MacAddr::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn id_refs() {
        assert_eq!(IdRef::parse("+1000"), Ok(IdRef::Id(1000)));
        assert_eq!(IdRef::parse("1000"), Ok(IdRef::Name("1000".into())));
        assert_eq!(IdRef::parse("www-data"), Ok(IdRef::Name("www-data".into())));
        assert_eq!(IdRef::parse("host$"), Ok(IdRef::Name("host$".into())));
        for bad in ["", "+", "+-1", "+99999999999", "a b", "-x", "a:b", "$"] {
            assert!(IdRef::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(IdRef::Id(7).to_string(), "+7");
    }

    #[test]
    fn env_names_and_paths() {
        assert!(is_env_name("APP_MODE"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name("1x"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name(""));
        assert!(!is_env_name("A=B"));
        assert_eq!(
            normalize_abs_path("//srv/./data/").unwrap(),
            PathBuf::from("/srv/data")
        );
        assert_eq!(normalize_abs_path("/").unwrap(), PathBuf::from("/"));
        assert!(normalize_abs_path("srv").is_err());
        assert!(normalize_abs_path("/srv/../etc").is_err());
        assert!(normalize_abs_path("").is_err());
    }

    #[test]
    fn capabilities_follow_kernel_numbering() {
        assert_eq!(Capability::ALL.len(), 41);
        assert_eq!(Capability::Chown.number(), 0);
        assert_eq!(Capability::SysAdmin.number(), 21);
        assert_eq!(Capability::Mknod.number(), 27);
        assert_eq!(Capability::CheckpointRestore.number(), 40);
        assert_eq!(Capability::parse("sys_admin"), Some(Capability::SysAdmin));
        assert_eq!(Capability::parse("cap_sys_admin"), None);
    }
}
