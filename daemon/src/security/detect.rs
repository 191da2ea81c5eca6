//! What SELinux the host has: selinuxfs, the loaded policy, the mode, the
//! policy type, the daemon's own context and category range, and the base
//! labels from the policy's `lxc_contexts`.
//!
//! Everything is read from files whose locations are parameters
//! ([`SelinuxPaths`]), so tests run against temporary trees:
//!
//! - selinuxfs: found in `PROC_SELF/mountinfo` (type `selinuxfs`); a policy
//!   is loaded when its `class/` directory has entries (the kernel fills it
//!   at policy load); the mode is its `enforce` file (`1`, `0`).
//! - the policy type: `SELINUXTYPE=` in `ETC_SELINUX/config`.
//! - `lxc_contexts`: `ETC_SELINUX/<SELINUXTYPE>/contexts/lxc_contexts`, the
//!   path libselinux's `selinux_lxc_contexts_path()` returns (its policy
//!   root is `/etc/selinux/<SELINUXTYPE>`); lxvirt reads the file itself.
//! - the daemon's context: `PROC_SELF/attr/current`.

use std::fs;
use std::path::{Path, PathBuf};

use super::SecurityError;
use crate::sys::mountinfo;

/// Where detection looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelinuxPaths {
    /// `/proc/self`: `mountinfo` and `attr/current`.
    pub proc_self: PathBuf,
    /// `/etc/selinux`: `config` and the policies' `contexts/lxc_contexts`.
    pub etc_selinux: PathBuf,
}

impl Default for SelinuxPaths {
    fn default() -> Self {
        SelinuxPaths {
            proc_self: "/proc/self".into(),
            etc_selinux: "/etc/selinux".into(),
        }
    }
}

/// Whether the kernel enforces the policy or only logs denials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforcing,
    Permissive,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforcing => "enforcing",
            Mode::Permissive => "permissive",
        }
    }
}

/// The contexts labels are built from: `lxc_contexts` keys `process`,
/// `file` and `content`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseLabels {
    /// The container's process context (`svirt_lxc_net_t`).
    pub process: String,
    /// The container's files (`svirt_sandbox_file_t`).
    pub file: String,
    /// Shared read-only content (`virt_var_lib_t`).
    pub content: String,
}

/// lxvirt's defaults where `lxc_contexts` or one of its keys is missing.
pub const DEFAULT_PROCESS_LABEL: &str = "system_u:system_r:svirt_lxc_net_t:s0";
pub const DEFAULT_FILE_LABEL: &str = "system_u:object_r:svirt_sandbox_file_t:s0";
pub const DEFAULT_CONTENT_LABEL: &str = "system_u:object_r:virt_var_lib_t:s0";

/// The labels of virtual machines where the policy's
/// `virtual_domain_context` or `virtual_image_context` lacks them.
pub const DEFAULT_VM_PROCESS_LABEL: &str = "system_u:system_r:svirt_t:s0";
pub const DEFAULT_VM_IMAGE_LABEL: &str = "system_u:object_r:svirt_image_t:s0";
pub const DEFAULT_VM_CONTENT_LABEL: &str = "system_u:object_r:virt_content_t:s0";
/// qemu's process context under TCG, which needs `execmem` (lxvirt's
/// policy module declares it where the policy has none).
pub const DEFAULT_VM_TCG_PROCESS_LABEL: &str = "system_u:system_r:svirt_tcg_t:s0";

impl BaseLabels {
    /// lxvirt's defaults for virtual machines: qemu's process context,
    /// its disks' and files' context, read-only content's (kernels,
    /// readonly disks).
    pub fn vm_defaults() -> BaseLabels {
        BaseLabels {
            process: DEFAULT_VM_PROCESS_LABEL.into(),
            file: DEFAULT_VM_IMAGE_LABEL.into(),
            content: DEFAULT_VM_CONTENT_LABEL.into(),
        }
    }
}

impl Default for BaseLabels {
    fn default() -> Self {
        BaseLabels {
            process: DEFAULT_PROCESS_LABEL.into(),
            file: DEFAULT_FILE_LABEL.into(),
            content: DEFAULT_CONTENT_LABEL.into(),
        }
    }
}

/// The categories the daemon may hand out: those of its own context's high
/// level, `c0.c1023` when its context names none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoryRange {
    /// The sensitivity generated levels use (the low level's, e.g. `s0`).
    pub sensitivity: String,
    /// Category numbers, ascending, no duplicates.
    pub categories: Vec<u16>,
}

/// Fewer categories than this cannot give containers distinct pairs.
pub const MIN_CATEGORIES: usize = 8;
/// The categories of an unconstrained context.
const DEFAULT_MAX_CATEGORY: u16 = 1023;

impl CategoryRange {
    /// `c0.c1023`: every category of an MCS policy.
    pub fn unconstrained() -> CategoryRange {
        CategoryRange {
            sensitivity: "s0".into(),
            categories: (0..=DEFAULT_MAX_CATEGORY).collect(),
        }
    }

    /// The range of a process context `user:role:type[:low[-high]]`.
    pub fn from_context(context: &str) -> Result<CategoryRange, SecurityError> {
        let bad = |why: &str| SecurityError::BadRange {
            context: context.to_owned(),
            why: why.to_owned(),
        };
        let Some(range) = context.splitn(4, ':').nth(3) else {
            return Ok(CategoryRange::unconstrained());
        };
        let (low, high) = range.split_once('-').unwrap_or((range, range));
        let sensitivity = low.split(':').next().unwrap_or("s0");
        if sensitivity.is_empty() {
            return Err(bad("its level has no sensitivity"));
        }
        let Some((_, cats)) = high.split_once(':') else {
            return Ok(CategoryRange {
                sensitivity: sensitivity.to_owned(),
                ..CategoryRange::unconstrained()
            });
        };
        let mut categories = Vec::new();
        for item in cats.split(',') {
            let (first, last) = item.split_once('.').unwrap_or((item, item));
            let number = |c: &str| -> Result<u16, SecurityError> {
                c.strip_prefix('c')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| bad(&format!("'{item}' is not a category or category range")))
            };
            let (first, last) = (number(first)?, number(last)?);
            if first > last {
                return Err(bad(&format!("category range '{item}' is reversed")));
            }
            categories.extend(first..=last);
        }
        categories.sort_unstable();
        categories.dedup();
        if categories.len() < MIN_CATEGORIES {
            return Err(bad(&format!(
                "it has {} categories, containers need at least {MIN_CATEGORIES} for distinct pairs",
                categories.len()
            )));
        }
        Ok(CategoryRange {
            sensitivity: sensitivity.to_owned(),
            categories,
        })
    }

    /// Compact form: `c0.c1023`, `c0.c3,c7`.
    pub fn categories_text(&self) -> String {
        let mut parts = Vec::new();
        let mut i = 0;
        while i < self.categories.len() {
            let start = self.categories[i];
            let mut end = start;
            while i + 1 < self.categories.len() && self.categories[i + 1] == end + 1 {
                i += 1;
                end += 1;
            }
            parts.push(if start == end {
                format!("c{start}")
            } else {
                format!("c{start}.c{end}")
            });
            i += 1;
        }
        parts.join(",")
    }
}

/// An SELinux host, as detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelinuxHost {
    /// Where selinuxfs is mounted.
    pub mount: PathBuf,
    pub mode: Mode,
    /// `SELINUXTYPE` from the config file, if set.
    pub policy_type: Option<String>,
    /// The daemon's own context.
    pub context: String,
    pub range: CategoryRange,
    /// The `lxc_contexts` file the base labels came from, if one was read.
    pub lxc_contexts: Option<PathBuf>,
    /// Containers' base labels.
    pub base: BaseLabels,
    /// Virtual machines' base labels, from the policy's
    /// `virtual_domain_context` and `virtual_image_context` (as libvirt
    /// reads them): qemu's process, its images, read-only content.
    pub vm_base: BaseLabels,
    /// qemu's process context for `type='qemu'` (TCG), from the second
    /// line of `virtual_domain_context`.
    pub vm_tcg_process: String,
}

/// The outcome of detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// No SELinux here, and why (for the capabilities and error messages).
    Absent(String),
    Selinux(Box<SelinuxHost>),
}

/// Detects SELinux; `defaults` fill in what `lxc_contexts` lacks. An error
/// means SELinux is active but lxvirt cannot label containers under it.
pub fn detect(paths: &SelinuxPaths, defaults: &BaseLabels) -> Result<Detected, SecurityError> {
    let mounts = mountinfo::read(&paths.proc_self.join("mountinfo")).unwrap_or_default();
    let Some(mount) = mounts
        .into_iter()
        .find(|m| m.fstype == "selinuxfs")
        .map(|m| m.mount_point)
    else {
        return Ok(Detected::Absent("selinuxfs is not mounted".into()));
    };
    let policy_loaded = fs::read_dir(mount.join("class"))
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if !policy_loaded {
        return Ok(Detected::Absent("no SELinux policy is loaded".into()));
    }
    let mode = match read_trimmed(&mount.join("enforce")).as_deref() {
        Some("1") => Mode::Enforcing,
        Some("0") => Mode::Permissive,
        _ => {
            return Ok(Detected::Absent(format!(
                "{} is unreadable",
                mount.join("enforce").display()
            )));
        }
    };
    let current = paths.proc_self.join("attr/current");
    let context = read_trimmed(&current)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| SecurityError::NoContext {
            path: current.clone(),
        })?;
    let range = CategoryRange::from_context(&context)?;
    let policy_type = policy_type(&paths.etc_selinux.join("config"));
    let (lxc_contexts, base) = match &policy_type {
        Some(policy) => {
            let path = lxc_contexts_path(&paths.etc_selinux, policy);
            match fs::read_to_string(&path) {
                Ok(text) => (Some(path), parse_lxc_contexts(&text, defaults)),
                Err(_) => (None, defaults.clone()),
            }
        }
        None => (None, defaults.clone()),
    };
    let (vm_base, vm_tcg_process) = match &policy_type {
        Some(policy) => {
            let contexts = paths.etc_selinux.join(policy).join("contexts");
            let read = |name: &str| fs::read_to_string(contexts.join(name)).unwrap_or_default();
            parse_virtual_contexts(
                &read("virtual_domain_context"),
                &read("virtual_image_context"),
            )
        }
        None => (
            BaseLabels::vm_defaults(),
            DEFAULT_VM_TCG_PROCESS_LABEL.to_owned(),
        ),
    };
    Ok(Detected::Selinux(Box::new(SelinuxHost {
        mount,
        mode,
        policy_type,
        context,
        range,
        lxc_contexts,
        base,
        vm_base,
        vm_tcg_process,
    })))
}

/// VMs' base labels from a policy's `virtual_domain_context` (the process
/// context on its first line, the TCG one on its second) and
/// `virtual_image_context` (images on the first line, read-only content
/// on the second); what is missing or not a context comes from lxvirt's
/// defaults. Returns the base labels and the TCG process context.
pub fn parse_virtual_contexts(domain: &str, image: &str) -> (BaseLabels, String) {
    let mut base = BaseLabels::vm_defaults();
    let lines = |text: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    let valid = |l: &&String| crate::domain::is_context(l);
    let domain = lines(domain);
    if let Some(process) = domain.first().filter(valid) {
        base.process = process.clone();
    }
    let tcg = domain
        .get(1)
        .filter(valid)
        .cloned()
        .unwrap_or_else(|| DEFAULT_VM_TCG_PROCESS_LABEL.to_owned());
    let image = lines(image);
    if let Some(file) = image.first().filter(valid) {
        base.file = file.clone();
    }
    if let Some(content) = image.get(1).filter(valid) {
        base.content = content.clone();
    }
    (base, tcg)
}

/// `ETC_SELINUX/<policy>/contexts/lxc_contexts`, as libselinux builds it.
pub fn lxc_contexts_path(etc_selinux: &Path, policy_type: &str) -> PathBuf {
    etc_selinux
        .join(policy_type)
        .join("contexts")
        .join("lxc_contexts")
}

/// `SELINUXTYPE` from an `/etc/selinux/config`.
pub fn policy_type(config: &Path) -> Option<String> {
    parse_policy_type(&fs::read_to_string(config).ok()?)
}

/// `SELINUXTYPE` from the text of an `/etc/selinux/config`: a name, not
/// a path.
pub fn parse_policy_type(text: &str) -> Option<String> {
    key_values(text)
        .find(|(k, _)| *k == "SELINUXTYPE")
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty() && !v.contains('/'))
}

/// The base labels of an `lxc_contexts` file (`key = "value"` lines, `#`
/// comments), each missing or invalid key taken from `defaults`.
pub fn parse_lxc_contexts(text: &str, defaults: &BaseLabels) -> BaseLabels {
    let mut base = defaults.clone();
    for (key, value) in key_values(text) {
        if !crate::domain::is_context(value) {
            continue;
        }
        match key {
            "process" => base.process = value.to_owned(),
            "file" => base.file = value.to_owned(),
            "content" => base.content = value.to_owned(),
            _ => {}
        }
    }
    base
}

/// `key = value` pairs of a config file; values may be quoted.
fn key_values(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.starts_with('#') {
            return None;
        }
        let (key, value) = line.split_once('=')?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        Some((key.trim(), value))
    })
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read(path).ok().map(|bytes| {
        String::from_utf8_lossy(&bytes)
            .trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host tree: mountinfo, selinuxfs, /etc/selinux, the daemon context.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            for d in ["proc/attr", "selinuxfs/class/file", "etc"] {
                fs::create_dir_all(dir.path().join(d)).unwrap();
            }
            let f = Fixture { dir };
            f.write(
                "proc/mountinfo",
                &format!(
                    "22 1 0:20 / /sys rw - sysfs sysfs rw\n\
                     23 22 0:21 / {} rw,relatime - selinuxfs selinuxfs rw\n",
                    f.path("selinuxfs").display()
                ),
            );
            f.write("selinuxfs/enforce", "1");
            f.write(
                "proc/attr/current",
                "system_u:system_r:lxvirtd_t:s0-s0:c0.c1023\0",
            );
            f.write(
                "etc/config",
                "# comment\nSELINUX=enforcing\nSELINUXTYPE=default\n",
            );
            f
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn write(&self, rel: &str, text: &str) {
            let path = self.path(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }

        fn paths(&self) -> SelinuxPaths {
            SelinuxPaths {
                proc_self: self.path("proc"),
                etc_selinux: self.path("etc"),
            }
        }

        fn detect(&self) -> Result<Detected, SecurityError> {
            detect(&self.paths(), &BaseLabels::default())
        }

        fn host(&self) -> SelinuxHost {
            match self.detect().unwrap() {
                Detected::Selinux(host) => *host,
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn enforcing_host_with_its_context_and_defaults() {
        let f = Fixture::new();
        let host = f.host();
        assert_eq!(host.mount, f.path("selinuxfs"));
        assert_eq!(host.mode, Mode::Enforcing);
        assert_eq!(host.policy_type.as_deref(), Some("default"));
        assert_eq!(host.context, "system_u:system_r:lxvirtd_t:s0-s0:c0.c1023");
        assert_eq!(host.range, CategoryRange::unconstrained());
        // No lxc_contexts: lxvirt's defaults.
        assert_eq!(host.lxc_contexts, None);
        assert_eq!(host.base, BaseLabels::default());
    }

    #[test]
    fn permissive_and_absent_hosts() {
        let f = Fixture::new();
        f.write("selinuxfs/enforce", "0\n");
        assert_eq!(f.host().mode, Mode::Permissive);

        fs::remove_dir_all(f.path("selinuxfs/class/file")).unwrap();
        assert_eq!(
            f.detect().unwrap(),
            Detected::Absent("no SELinux policy is loaded".into())
        );

        f.write("proc/mountinfo", "22 1 0:20 / /sys rw - sysfs sysfs rw\n");
        assert_eq!(
            f.detect().unwrap(),
            Detected::Absent("selinuxfs is not mounted".into())
        );
        // A missing mountinfo (no /proc) is no SELinux either.
        fs::remove_file(f.path("proc/mountinfo")).unwrap();
        assert!(matches!(f.detect().unwrap(), Detected::Absent(_)));
    }

    #[test]
    fn escaped_selinuxfs_mount_point() {
        let f = Fixture::new();
        fs::create_dir_all(f.path("with space/class/x")).unwrap();
        f.write("with space/enforce", "1");
        let escaped = f
            .path("with space")
            .display()
            .to_string()
            .replace(' ', "\\040");
        f.write(
            "proc/mountinfo",
            &format!("23 22 0:21 / {escaped} rw - selinuxfs selinuxfs rw\n"),
        );
        assert_eq!(f.host().mount, f.path("with space"));
    }

    #[test]
    fn unreadable_context_is_an_error() {
        let f = Fixture::new();
        fs::remove_file(f.path("proc/attr/current")).unwrap();
        let err = f.detect().unwrap_err();
        assert!(err.to_string().contains("attr/current"), "{err}");
    }

    #[test]
    fn lxc_contexts_of_the_policy_type_fill_the_base_labels() {
        let f = Fixture::new();
        f.write(
            "etc/default/contexts/lxc_contexts",
            "# Debian\nprocess = \"system_u:system_r:container_t:s0\"\n\
             file=system_u:object_r:container_file_t:s0\n\
             ro_file = \"system_u:object_r:container_ro_file_t:s0\"\n",
        );
        let host = f.host();
        assert_eq!(
            host.lxc_contexts,
            Some(f.path("etc/default/contexts/lxc_contexts"))
        );
        assert_eq!(host.base.process, "system_u:system_r:container_t:s0");
        assert_eq!(host.base.file, "system_u:object_r:container_file_t:s0");
        // content is missing: the default.
        assert_eq!(host.base.content, DEFAULT_CONTENT_LABEL);
    }

    #[test]
    fn lxc_contexts_parsing() {
        let defaults = BaseLabels {
            process: "u:r:p:s0".into(),
            file: "u:r:f:s0".into(),
            content: "u:r:c:s0".into(),
        };
        assert_eq!(parse_lxc_contexts("", &defaults), defaults);
        // Debian's files, then Fedora's (with a TCG domain), then odd ones.
        let (vm, tcg) = parse_virtual_contexts(
            "system_u:system_r:svirt_t:s0\n",
            "system_u:object_r:svirt_image_t:s0\nsystem_u:object_r:virt_content_t:s0\n",
        );
        assert_eq!(vm, BaseLabels::vm_defaults());
        assert_eq!(tcg, DEFAULT_VM_TCG_PROCESS_LABEL);
        let (_, tcg) = parse_virtual_contexts(
            "system_u:system_r:svirt_t:s0\nsystem_u:system_r:my_tcg_t:s0\n",
            "",
        );
        assert_eq!(tcg, "system_u:system_r:my_tcg_t:s0");
        let (vm, _) = parse_virtual_contexts("u:r:qemu_t:s0\n", "not a context\n");
        assert_eq!(vm.process, "u:r:qemu_t:s0");
        assert_eq!(vm.file, DEFAULT_VM_IMAGE_LABEL);
        assert_eq!(vm.content, DEFAULT_VM_CONTENT_LABEL);
        let base = parse_lxc_contexts(
            "  process = u:r:mine:s0  \n#file = u:r:commented:s0\ncontent=\"bad label\"\nfile =\n",
            &defaults,
        );
        assert_eq!(base.process, "u:r:mine:s0");
        assert_eq!(base.file, "u:r:f:s0");
        assert_eq!(base.content, "u:r:c:s0");
    }

    #[test]
    fn policy_type_from_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        assert_eq!(policy_type(&config), None);
        fs::write(&config, "SELINUXTYPE = \"mls\"\n").unwrap();
        assert_eq!(policy_type(&config).as_deref(), Some("mls"));
        fs::write(&config, "SELINUXTYPE=../escape\n").unwrap();
        assert_eq!(policy_type(&config), None);
        assert_eq!(
            lxc_contexts_path(Path::new("/etc/selinux"), "default"),
            Path::new("/etc/selinux/default/contexts/lxc_contexts")
        );
    }

    #[test]
    fn category_ranges() {
        let range = |c: &str| CategoryRange::from_context(c);
        assert_eq!(range("u:r:t").unwrap(), CategoryRange::unconstrained());
        assert_eq!(range("u:r:t:s0").unwrap(), CategoryRange::unconstrained());
        assert_eq!(
            range("u:r:t:s0-s0").unwrap(),
            CategoryRange::unconstrained()
        );
        let r = range("u:r:t:s0-s0:c0.c1023").unwrap();
        assert_eq!(r.categories.len(), 1024);
        assert_eq!(r.categories_text(), "c0.c1023");
        let r = range("u:r:t:s1-s2:c10.c13,c20,c30.c31,c12,c40").unwrap();
        assert_eq!(r.sensitivity, "s1");
        assert_eq!(r.categories, vec![10, 11, 12, 13, 20, 30, 31, 40]);
        assert_eq!(r.categories_text(), "c10.c13,c20,c30.c31,c40");
        let err = range("u:r:t:s0-s0:c10.c16").unwrap_err();
        assert!(err.to_string().contains("7 categories"), "{err}");
        assert_eq!(range("u:r:t:s0-s0:c10.c17").unwrap().categories.len(), 8);
        assert!(range("u:r:t:s0-s0:c9.c2").is_err());
        assert!(range("u:r:t:s0-s0:x1").is_err());
        assert!(range("u:r:t:s0:c1,c2").is_err());
    }
}
