//! What this host supports, probed once at daemon start and described as
//! XML by `Manager.GetCapabilities`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use crate::cgroup::{Hierarchies, Layout};
use crate::security::{HostSelinux, SecurityReport};
use crate::storage::{Availability, BackendKind};

/// Where the probes look; tests point these at temporary trees.
#[derive(Debug, Clone)]
pub struct HostPaths {
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub dev: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            proc: "/proc".into(),
            sys: "/sys".into(),
            dev: "/dev".into(),
        }
    }
}

/// Everything `GetCapabilities` reports.
#[derive(Debug, Clone)]
pub struct HostCapabilities {
    pub kernel: String,
    pub arch: String,
    pub namespaces: Vec<String>,
    /// The cgroup hierarchies mounted here (their layout, controllers).
    pub cgroups: Hierarchies,
    /// The security layer's findings (SELinux mode, policy, range).
    pub security: SecurityReport,
    /// Every storage backend and whether it works here.
    pub storage: Vec<(BackendKind, Availability)>,
    /// The image store's backend, and why it is unusable if it is.
    pub storage_in_use: (BackendKind, Option<String>),
    pub kvm_device: bool,
    /// Why `/dev/kvm` cannot run a stock guest here; `None` if it can.
    pub kvm_unusable: Option<String>,
    /// The emulator VMs run in, when it is installed.
    pub emulator: Option<PathBuf>,
}

const NAMESPACES: [&str; 8] = ["mnt", "uts", "ipc", "pid", "net", "user", "cgroup", "time"];

impl HostCapabilities {
    pub fn probe(paths: &HostPaths, security: SecurityReport) -> HostCapabilities {
        let kernel = read_trimmed(&paths.proc.join("sys/kernel/osrelease")).unwrap_or_default();
        let namespaces = NAMESPACES
            .iter()
            .filter(|ns| paths.proc.join("self/ns").join(ns).exists())
            .map(|ns| (*ns).to_owned())
            .collect();
        let mountinfo = fs::read(paths.proc.join("self/mountinfo")).unwrap_or_default();
        HostCapabilities {
            kernel,
            arch: std::env::consts::ARCH.to_owned(),
            namespaces,
            cgroups: Hierarchies::from_mountinfo(mountinfo, Path::new("/")),
            security,
            // The backends probe the host's own paths.
            storage: crate::storage::backend::probe_all(),
            storage_in_use: (BackendKind::Overlay, None),
            kvm_device: paths.dev.join("kvm").exists(),
            kvm_unusable: crate::qemu::host::kvm_unavailable(paths),
            emulator: Some(PathBuf::from(
                crate::qemu::instance::QemuConfig::DEFAULT_EMULATOR,
            ))
            .filter(|e| e.exists()),
        }
    }

    /// Why containers cannot run here, if they cannot.
    pub fn lxc_unavailable(&self) -> Option<&'static str> {
        const NEEDED: [&str; 5] = ["mnt", "uts", "ipc", "pid", "cgroup"];
        if NEEDED
            .iter()
            .any(|ns| !self.namespaces.iter().any(|n| n == ns))
        {
            return Some("the kernel lacks mount, UTS, IPC, PID or cgroup namespaces");
        }
        if self.cgroups.layout() == Layout::None {
            return Some("no cgroup hierarchy is mounted");
        }
        None
    }

    /// The capabilities document.
    pub fn to_xml(&self) -> String {
        let mut x = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_xml(&mut x);
        x
    }

    fn write_xml(&self, x: &mut String) -> std::fmt::Result {
        writeln!(x, "<capabilities>")?;
        writeln!(x, "  <host>")?;
        writeln!(x, "    <arch>{}</arch>", esc(&self.arch))?;
        writeln!(x, "    <kernel>{}</kernel>", esc(&self.kernel))?;
        writeln!(x, "    <namespaces>")?;
        for ns in &self.namespaces {
            writeln!(x, "      <namespace name='{}'/>", esc(ns))?;
        }
        writeln!(x, "    </namespaces>")?;
        self.write_cgroups(x)?;
        self.write_secmodels(x)?;
        let (in_use, unusable) = &self.storage_in_use;
        match unusable {
            None => writeln!(x, "    <storage backend='{in_use}' available='yes'>")?,
            Some(reason) => writeln!(
                x,
                "    <storage backend='{in_use}' available='no' reason='{}'>",
                esc(reason)
            )?,
        }
        for (kind, availability) in &self.storage {
            match availability {
                Availability::Available => {
                    writeln!(x, "      <backend name='{kind}' available='yes'/>")?
                }
                Availability::Unavailable(reason) => writeln!(
                    x,
                    "      <backend name='{kind}' available='no' reason='{}'/>",
                    esc(reason)
                )?,
            }
        }
        writeln!(x, "    </storage>")?;
        writeln!(x, "  </host>")?;
        writeln!(x, "  <guest>")?;
        writeln!(x, "    <os_type>exe</os_type>")?;
        match self.lxc_unavailable() {
            None => writeln!(x, "    <domain type='lxc' available='yes'/>")?,
            Some(reason) => writeln!(
                x,
                "    <domain type='lxc' available='no' reason='{}'/>",
                esc(reason)
            )?,
        }
        writeln!(x, "  </guest>")?;
        writeln!(x, "  <guest>")?;
        writeln!(x, "    <os_type>hvm</os_type>")?;
        let no_emulator = format!(
            "{} is not installed (Debian: apt install qemu-system-x86)",
            crate::qemu::instance::QemuConfig::DEFAULT_EMULATOR
        );
        if let Some(emulator) = &self.emulator {
            writeln!(
                x,
                "    <emulator>{}</emulator>",
                esc(&emulator.display().to_string())
            )?;
        }
        let kvm_reason = match (&self.emulator, &self.kvm_unusable) {
            (None, _) => Some(no_emulator.as_str()),
            (Some(_), Some(why)) => Some(why.as_str()),
            (Some(_), None) => None,
        };
        match kvm_reason {
            None => write!(x, "    <domain type='kvm' available='yes'")?,
            Some(reason) => write!(
                x,
                "    <domain type='kvm' available='no' reason='{}'",
                esc(reason)
            )?,
        }
        write!(x, " device='{}'", yes_no(self.kvm_device))?;
        match &self.kvm_unusable {
            None => writeln!(x, " usable='yes'/>")?,
            Some(why) => writeln!(x, " usable='no' why='{}'/>", esc(why))?,
        }
        match &self.emulator {
            Some(_) => writeln!(x, "    <domain type='qemu' available='yes'/>")?,
            None => writeln!(
                x,
                "    <domain type='qemu' available='no' reason='{}'/>",
                esc(&no_emulator)
            )?,
        }
        writeln!(x, "  </guest>")?;
        writeln!(x, "</capabilities>")
    }
}

impl HostCapabilities {
    /// `<cgroups>`: the layout, the cgroup2 mount, the controllers.
    fn write_cgroups(&self, x: &mut String) -> std::fmt::Result {
        let layout = self.cgroups.layout();
        let unified = self.cgroups.unified.as_ref();
        match (layout, unified) {
            (Layout::Hybrid, Some(unified)) => writeln!(
                x,
                "    <cgroups layout='hybrid' unified='{}'>",
                esc(&unified.mount.display().to_string())
            )?,
            (Layout::V2, Some(unified)) => writeln!(
                x,
                "    <cgroups layout='v2' mount='{}'>",
                esc(&unified.mount.display().to_string())
            )?,
            (Layout::V1, _) => writeln!(x, "    <cgroups layout='v1'>")?,
            _ => return writeln!(x, "    <cgroups layout='none'/>"),
        }
        let controllers = match (layout, unified) {
            (Layout::V2, Some(unified)) => unified.controllers.clone(),
            _ => self.cgroups.v1_controller_names(),
        };
        for c in &controllers {
            writeln!(x, "      <controller name='{}'/>", esc(c))?;
        }
        writeln!(x, "    </cgroups>")
    }

    /// `<secmodels>`: SELinux's availability, mode, policy type, the
    /// daemon's context and category range, and the base labels; `none`.
    fn write_secmodels(&self, x: &mut String) -> std::fmt::Result {
        let sec = &self.security;
        let confined = if sec.default_confinement { "yes" } else { "no" };
        writeln!(x, "    <secmodels>")?;
        match (&sec.selinux, &sec.host) {
            (HostSelinux::Ready, Some(host)) => {
                write!(
                    x,
                    "      <secmodel model='selinux' available='yes' default='yes' mode='{}'",
                    host.mode.as_str()
                )?;
                if let Some(policy) = &host.policy_type {
                    write!(x, " policytype='{}'", esc(policy))?;
                }
                writeln!(x, " confine_by_default='{confined}'>")?;
                writeln!(x, "        <context>{}</context>", esc(&host.context))?;
                writeln!(
                    x,
                    "        <categories sensitivity='{}'>{}</categories>",
                    esc(&host.range.sensitivity),
                    host.range.categories_text()
                )?;
                // As libvirt's capabilities, by the domain type they are for.
                let kinds =
                    |base: &crate::security::BaseLabels, process: &String| -> [(&str, String); 3] {
                        [
                            ("process", process.clone()),
                            ("file", base.file.clone()),
                            ("content", base.content.clone()),
                        ]
                    };
                for (domain_type, labels) in [
                    ("lxc", kinds(&host.base, &host.base.process)),
                    ("kvm", kinds(&host.vm_base, &host.vm_base.process)),
                    ("qemu", kinds(&host.vm_base, &host.vm_tcg_process)),
                ] {
                    for (kind, label) in labels {
                        writeln!(
                            x,
                            "        <baselabel type='{domain_type}' kind='{kind}'>{}</baselabel>",
                            esc(&label)
                        )?;
                    }
                }
                if let Some(path) = &host.lxc_contexts {
                    writeln!(
                        x,
                        "        <lxc_contexts>{}</lxc_contexts>",
                        esc(&path.display().to_string())
                    )?;
                }
                writeln!(x, "      </secmodel>")?;
            }
            (HostSelinux::Absent(reason), _) => writeln!(
                x,
                "      <secmodel model='selinux' available='no' mode='disabled' reason='{}'/>",
                esc(reason)
            )?,
            (HostSelinux::Unusable(_), _) | (HostSelinux::Ready, None) => {
                let mode = sec.mode.map_or("enabled", |m| m.as_str());
                let reason = match &sec.selinux {
                    HostSelinux::Unusable(reason) => reason.as_str(),
                    _ => "unknown",
                };
                writeln!(
                    x,
                    "      <secmodel model='selinux' available='no' mode='{mode}' reason='{}'/>",
                    esc(reason)
                )?;
            }
        }
        let none_default = if matches!(sec.selinux, HostSelinux::Ready) {
            "no"
        } else {
            "yes"
        };
        writeln!(
            x,
            "      <secmodel model='none' available='yes' default='{none_default}'/>"
        )?;
        writeln!(x, "    </secmodels>")
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
36 33 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
37 33 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
";

    fn caps(cgroups: Hierarchies) -> HostCapabilities {
        HostCapabilities {
            kernel: "6.18 <test>".into(),
            arch: "x86_64".into(),
            namespaces: vec!["mnt".into(), "pid".into()],
            cgroups,
            security: SecurityReport {
                selinux: HostSelinux::Absent("selinuxfs is not mounted".into()),
                host: None,
                mode: None,
                default_confinement: true,
            },
            storage: vec![
                (BackendKind::Overlay, Availability::Available),
                (
                    BackendKind::DeviceMapper,
                    Availability::Unavailable("no <device-mapper>".into()),
                ),
            ],
            storage_in_use: (BackendKind::Overlay, None),
            kvm_device: true,
            kvm_unusable: Some("this host's /dev/kvm is PVM".into()),
            emulator: Some("/usr/bin/qemu-system-x86_64".into()),
        }
    }

    /// The `<cgroups>` element of the capabilities of a host with this
    /// mountinfo (and no controllers in a cgroup2 root).
    fn cgroups_xml(mountinfo: &str) -> String {
        let xml = caps(Hierarchies::parse(mountinfo, Path::new("/"))).to_xml();
        let mut lines = xml.lines().skip_while(|l| !l.starts_with("    <cgroups"));
        let first = lines.next().unwrap();
        let mut element = format!("{first}\n");
        if !first.ends_with("/>") {
            for line in lines {
                element.push_str(line);
                element.push('\n');
                if line == "    </cgroups>" {
                    break;
                }
            }
        }
        element
    }

    #[test]
    fn cgroups_name_the_layout_mounts_and_controllers() {
        assert_eq!(
            cgroups_xml(HYBRID),
            "    <cgroups layout='hybrid' unified='/sys/fs/cgroup/unified'>
      <controller name='cpu'/>
      <controller name='cpuacct'/>
      <controller name='memory'/>
    </cgroups>
"
        );
        let v1: String = HYBRID
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(
            cgroups_xml(&v1)
                .starts_with("    <cgroups layout='v1'>\n      <controller name='cpu'/>"),
            "{}",
            cgroups_xml(&v1)
        );
        assert_eq!(
            cgroups_xml("34 33 0:29 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"),
            "    <cgroups layout='v2' mount='/sys/fs/cgroup'>
    </cgroups>
"
        );
        assert_eq!(cgroups_xml(""), "    <cgroups layout='none'/>\n");
        let mut none = caps(Hierarchies::default());
        none.namespaces = ["mnt", "uts", "ipc", "pid", "cgroup"]
            .map(String::from)
            .into();
        assert_eq!(
            none.lxc_unavailable(),
            Some("no cgroup hierarchy is mounted")
        );
    }

    #[test]
    fn capabilities_document_is_well_formed_and_names_the_layout() {
        let caps = caps(Hierarchies::parse(HYBRID, Path::new("/")));
        let xml = caps.to_xml();
        let root = crate::domain::xml::parse_str(&xml).unwrap();
        let host = root.element("host").unwrap();
        assert_eq!(host.element("kernel").unwrap().text(), "6.18 <test>");
        assert_eq!(
            host.element("cgroups").unwrap().attr("layout"),
            Some("hybrid")
        );
        let secmodel = host
            .element("secmodels")
            .unwrap()
            .element("secmodel")
            .unwrap();
        assert_eq!(secmodel.attr("available"), Some("no"));
        assert_eq!(secmodel.attr("reason"), Some("selinuxfs is not mounted"));
        let storage = host.element("storage").unwrap();
        assert_eq!(storage.attr("backend"), Some("overlay"));
        assert_eq!(storage.attr("available"), Some("yes"));
        let backends: Vec<_> = storage.elements().collect();
        assert_eq!(backends.len(), 2);
        assert_eq!(backends[1].attr("name"), Some("devicemapper"));
        assert_eq!(backends[1].attr("available"), Some("no"));
        assert_eq!(backends[1].attr("reason"), Some("no <device-mapper>"));
        let kvm = root
            .elements()
            .flat_map(|guest| guest.elements())
            .find(|d| d.attr("type") == Some("kvm"))
            .unwrap();
        assert_eq!(kvm.attr("usable"), Some("no"));
        assert_eq!(kvm.attr("why"), Some("this host's /dev/kvm is PVM"));
    }

    /// On a kernel without device-mapper (these machines), the real probe
    /// lists the backend as unavailable with the reason and the fix; where
    /// device-mapper works (the nested VM), it says nothing false either.
    /// The hvm guest: kvm unavailable with the probe's reason, qemu
    /// available; without the emulator neither, saying what to install.
    #[test]
    fn vm_domain_types_say_whether_they_can_run() {
        let mut caps = caps(Hierarchies::parse(HYBRID, Path::new("/")));
        let xml = caps.to_xml();
        assert!(
            xml.contains("<emulator>/usr/bin/qemu-system-x86_64</emulator>"),
            "{xml}"
        );
        assert!(
            xml.contains(
                "<domain type='kvm' available='no' reason='this host&apos;s /dev/kvm is PVM' device='yes' usable='no'"
            ),
            "{xml}"
        );
        assert!(
            xml.contains("<domain type='qemu' available='yes'/>"),
            "{xml}"
        );
        caps.emulator = None;
        let xml = caps.to_xml();
        assert!(
            xml.contains("<domain type='qemu' available='no' reason='/usr/bin/qemu-system-x86_64 is not installed (Debian: apt install qemu-system-x86)'/>"),
            "{xml}"
        );
        caps.emulator = Some("/usr/bin/qemu-system-x86_64".into());
        caps.kvm_unusable = None;
        assert!(
            caps.to_xml()
                .contains("<domain type='kvm' available='yes' device='yes' usable='yes'/>")
        );
    }

    #[test]
    fn real_probe_lists_devicemapper_with_its_reason() {
        let caps = HostCapabilities::probe(
            &HostPaths::default(),
            SecurityReport {
                selinux: HostSelinux::Absent("not probed".into()),
                host: None,
                mode: None,
                default_confinement: true,
            },
        );
        let xml = caps.to_xml();
        let root = crate::domain::xml::parse_str(&xml).unwrap();
        let storage = root.element("host").unwrap().element("storage").unwrap();
        let dm = storage
            .elements()
            .find(|b| b.attr("name") == Some("devicemapper"))
            .unwrap();
        let works = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/mapper/control")
            .is_ok();
        if works {
            eprintln!("device-mapper works here: {:?}", dm.attr("available"));
            return;
        }
        assert_eq!(dm.attr("available"), Some("no"));
        let reason = dm.attr("reason").unwrap();
        assert!(
            reason.contains("device-mapper is absent from this kernel")
                && reason.contains("use the overlay backend"),
            "{reason}"
        );
    }

    #[test]
    fn selinux_capabilities_name_mode_policy_and_range() {
        use crate::security::{BaseLabels, CategoryRange, Mode, SelinuxHost};
        let context = "system_u:system_r:lxvirtd_t:s0-s0:c0.c1023";
        let mut caps = HostCapabilities::probe(
            &HostPaths::default(),
            SecurityReport {
                selinux: HostSelinux::Ready,
                host: Some(SelinuxHost {
                    mount: "/sys/fs/selinux".into(),
                    mode: Mode::Enforcing,
                    policy_type: Some("default".into()),
                    context: context.into(),
                    range: CategoryRange::from_context(context).unwrap(),
                    lxc_contexts: Some("/etc/selinux/default/contexts/lxc_contexts".into()),
                    base: BaseLabels::default(),
                    vm_base: BaseLabels::vm_defaults(),
                    vm_tcg_process: crate::security::detect::DEFAULT_VM_TCG_PROCESS_LABEL.into(),
                }),
                mode: Some(Mode::Enforcing),
                default_confinement: true,
            },
        );
        caps.kernel = "6.1".into();
        let xml = caps.to_xml();
        let root = crate::domain::xml::parse_str(&xml).unwrap();
        let models = root.element("host").unwrap().element("secmodels").unwrap();
        let selinux = models.element("secmodel").unwrap();
        assert_eq!(selinux.attr("available"), Some("yes"));
        assert_eq!(selinux.attr("mode"), Some("enforcing"));
        assert_eq!(selinux.attr("policytype"), Some("default"));
        assert_eq!(selinux.element("context").unwrap().text(), context);
        assert_eq!(selinux.element("categories").unwrap().text(), "c0.c1023");
        assert!(xml.contains(
            "<baselabel type='lxc' kind='process'>system_u:system_r:svirt_lxc_net_t:s0</baselabel>"
        ));
        assert!(xml.contains("<secmodel model='none' available='yes' default='no'/>"));
    }
}
