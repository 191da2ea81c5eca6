//! sVirt: SELinux labels for containers.
//!
//! A [`SecurityDriver`] generates, reserves and releases a domain's labels;
//! `selinux` ([`selinux::SelinuxDriver`]) and `none` ([`NoneDriver`]) are
//! the implementations, and the host decides which one is active
//! ([`detect`]). [`Security`] is what the lifecycle core holds: it applies
//! libvirt's `<seclabel>` semantics ([`plan`]) and turns a domain's
//! definition into the labels of its running instance.
//!
//! Semantics (libvirt's): a `<seclabel>` without `type` is dynamic; a
//! dynamic label always relabels and gets a fresh MCS pair on the base
//! process context (`<baselabel>` or the policy's `lxc_contexts`); a static
//! label is used as given and relabels only with `relabel='yes'`; the image
//! label is the `file` context with the process label's level; `type='none'`
//! runs unconfined. On an SELinux host a domain without `<seclabel>` gets a
//! dynamic label (unless default confinement is turned off); without
//! SELinux it runs unconfined, and a domain that needs SELinux fails with
//! [`SecurityError::Unavailable`].

pub mod detect;
pub mod mcs;
pub mod relabel;
pub mod selinux;
pub mod userns;

use std::path::{Path, PathBuf};

use crate::domain::{DomainDef, LiveLabels, SecLabel, SecLabelType, SecModel};
use crate::lxc::spec::SecuritySpec;

pub use detect::{BaseLabels, CategoryRange, Detected, Mode, SelinuxHost, SelinuxPaths};

/// Sets one file's label; `lsetxattr` of `security.selinux` on a real host.
pub type FileLabeler = fn(&Path, &str) -> std::io::Result<()>;

/// Why labels could not be given or applied.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(
        "domain '{domain}': {asked} needs SELinux, which is not available on this host ({reason}); use <seclabel type='none'/> to run it unconfined"
    )]
    Unavailable {
        domain: String,
        asked: String,
        reason: String,
    },
    #[error(
        "SELinux is enabled but the daemon's own context cannot be read from {path}; check that /proc is mounted"
    )]
    NoContext { path: PathBuf },
    #[error(
        "the default label '{label}' is not a security context; pass user:role:type:level to --default-process-label or --default-file-label"
    )]
    BadDefault { label: String },
    #[error("the daemon's context '{context}' has an unusable category range: {why}")]
    BadRange { context: String, why: String },
    #[error(
        "domain '{domain}': every MCS category pair of {range} is in use; stop a domain or widen the daemon's category range"
    )]
    Exhausted { domain: String, range: String },
    #[error("domain '{domain}': MCS level {level} is already reserved by domain '{other}'")]
    LevelTaken {
        domain: String,
        level: String,
        other: String,
    },
    #[error(
        "domain '{domain}': label '{label}' is not valid in the loaded SELinux policy; load lxvirt's policy module (policy/) or check <seclabel> and lxc_contexts"
    )]
    InvalidContext { domain: String, label: String },
    #[error(
        "domain '{domain}': refusing to relabel {path}: {why}; give the container its own root directory (or a static <seclabel> with relabel='no')"
    )]
    RelabelRefused {
        domain: String,
        path: PathBuf,
        why: &'static str,
    },
    #[error("domain '{domain}': cannot read {path} to relabel it")]
    RelabelRead {
        domain: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("domain '{domain}': cannot set the SELinux label of {path}")]
    RelabelWrite {
        domain: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SecurityError {
    /// Whether this is the host lacking the security driver a domain needs.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, SecurityError::Unavailable { .. })
    }
}

/// What a driver is asked to label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRequest {
    /// A fresh MCS pair on `baselabel` (or the policy's process context).
    Dynamic { baselabel: Option<String> },
    /// Exactly this process label.
    Static { label: String },
}

/// What runs under the labels: the policy has base labels for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// A container's processes (`svirt_lxc_net_t`).
    Container,
    /// A virtual machine's qemu under KVM (`svirt_t`).
    Vm,
    /// A virtual machine's qemu under TCG (`svirt_tcg_t`): as `Vm`, and
    /// it may make memory executable (its translated code).
    TcgVm,
}

impl Workload {
    pub fn of(def: &DomainDef) -> Workload {
        match def.domain_type {
            crate::domain::DomainType::Lxc => Workload::Container,
            crate::domain::DomainType::Kvm => Workload::Vm,
            crate::domain::DomainType::Qemu => Workload::TcgVm,
        }
    }
}

/// The labels of a running domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainLabels {
    /// init's (and entered processes') context.
    pub process: String,
    /// The context of the container's files and mounts.
    pub image: String,
    /// Generated (its level is never shared), as opposed to static.
    pub dynamic: bool,
}

/// A security driver: one per host, owned by the lifecycle core.
pub trait SecurityDriver: Send + std::fmt::Debug {
    /// The model it implements.
    fn model(&self) -> SecModel;
    /// Labels for `domain`, which is starting; reserves their level.
    fn generate(
        &mut self,
        domain: &str,
        workload: Workload,
        request: &LabelRequest,
    ) -> Result<DomainLabels, SecurityError>;
    /// Records the labels of a domain found running (daemon restart).
    fn reserve(&mut self, domain: &str, labels: &DomainLabels) -> Result<(), SecurityError>;
    /// Frees whatever `domain` holds (it stopped, or its start failed).
    fn release(&mut self, domain: &str);
    /// How files are relabelled, `None` when this driver cannot.
    fn file_labeler(&self) -> Option<FileLabeler>;
}

/// The driver of a host without a security module: labels nothing.
#[derive(Debug, Clone, Default)]
pub struct NoneDriver;

impl SecurityDriver for NoneDriver {
    fn model(&self) -> SecModel {
        SecModel::None
    }

    fn generate(
        &mut self,
        domain: &str,
        _workload: Workload,
        _request: &LabelRequest,
    ) -> Result<DomainLabels, SecurityError> {
        Err(SecurityError::Unavailable {
            domain: domain.to_owned(),
            asked: "a security label".into(),
            reason: "the active security driver is 'none'".into(),
        })
    }

    fn reserve(&mut self, _domain: &str, _labels: &DomainLabels) -> Result<(), SecurityError> {
        Ok(())
    }

    fn release(&mut self, _domain: &str) {}

    fn file_labeler(&self) -> Option<FileLabeler> {
        None
    }
}

/// SELinux on this host, as far as confinement is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostSelinux {
    /// Usable: domains can be labelled.
    Ready,
    /// Not enabled (no selinuxfs, no policy).
    Absent(String),
    /// Enabled, but lxvirtd cannot label under it (its own context or
    /// range is unusable): domains that would be confined cannot start.
    Unusable(String),
}

/// What a domain's `<seclabel>` comes to on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// No labels; the live `<seclabel type='none'>` shows this model.
    Unconfined {
        model: Option<SecModel>,
    },
    Dynamic {
        baselabel: Option<String>,
    },
    Static {
        label: String,
        relabel: bool,
    },
}

/// libvirt's `<seclabel>` semantics for a domain on a host.
pub fn plan(
    domain: &str,
    seclabel: Option<&SecLabel>,
    host: &HostSelinux,
    default_confinement: bool,
) -> Result<Plan, SecurityError> {
    let unavailable = |asked: &str| {
        let reason = match host {
            HostSelinux::Ready => String::new(),
            HostSelinux::Absent(reason) | HostSelinux::Unusable(reason) => reason.clone(),
        };
        SecurityError::Unavailable {
            domain: domain.to_owned(),
            asked: asked.to_owned(),
            reason,
        }
    };
    let ready = *host == HostSelinux::Ready;
    let host_model = ready.then_some(SecModel::Selinux);
    let Some(sec) = seclabel else {
        return match host {
            HostSelinux::Ready if default_confinement => Ok(Plan::Dynamic { baselabel: None }),
            HostSelinux::Unusable(_) if default_confinement => Err(unavailable(
                "confinement by default (a domain without <seclabel> on an SELinux host)",
            )),
            _ => Ok(Plan::Unconfined { model: host_model }),
        };
    };
    if sec.model == Some(SecModel::Selinux) && !ready {
        return Err(unavailable(&format!(
            "<seclabel type='{}' model='selinux'>",
            sec.label_type
        )));
    }
    match sec.label_type {
        SecLabelType::None => Ok(Plan::Unconfined {
            model: sec.model.or(host_model),
        }),
        SecLabelType::Dynamic if ready => Ok(Plan::Dynamic {
            baselabel: sec.baselabel.clone(),
        }),
        SecLabelType::Static if ready => Ok(Plan::Static {
            label: sec.label.clone().unwrap_or_default(),
            relabel: sec.relabel,
        }),
        other => Err(unavailable(&format!("<seclabel type='{other}'>"))),
    }
}

/// Daemon settings of the security layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityConfig {
    pub paths: SelinuxPaths,
    /// Base labels where `lxc_contexts` or one of its keys is missing.
    pub defaults: BaseLabels,
    /// Confine domains without `<seclabel>` on an SELinux host.
    pub default_confinement: bool,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            paths: SelinuxPaths::default(),
            defaults: BaseLabels::default(),
            default_confinement: true,
        }
    }
}

/// What `GetCapabilities` says about security.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityReport {
    pub selinux: HostSelinux,
    /// The host as detected, when SELinux is enabled and usable.
    pub host: Option<SelinuxHost>,
    /// Enforcing or permissive, when SELinux is enabled (even unusable).
    pub mode: Option<Mode>,
    pub default_confinement: bool,
}

/// The security layer as the lifecycle core holds it.
#[derive(Debug)]
pub struct Security {
    driver: Box<dyn SecurityDriver>,
    report: SecurityReport,
}

/// The result of labelling a domain for a start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The live `<seclabel>`: model filled in, generated labels included.
    pub seclabel: SecLabel,
    /// What the container setup applies; `None` when unconfined.
    pub spec: Option<SecuritySpec>,
}

impl Security {
    /// Detects the host and picks the driver.
    pub fn detect(config: &SecurityConfig) -> Security {
        let bad_default = [&config.defaults.process, &config.defaults.file]
            .into_iter()
            .find(|label| !crate::domain::is_context(label));
        // Only an SELinux host uses the defaults.
        let detected = match (detect::detect(&config.paths, &config.defaults), bad_default) {
            (Ok(Detected::Selinux(_)), Some(label)) => Err(SecurityError::BadDefault {
                label: label.clone(),
            }),
            (detected, _) => detected,
        };
        let (driver, selinux, host, mode): (Box<dyn SecurityDriver>, _, _, _) = match detected {
            Ok(Detected::Selinux(host)) => {
                let mode = Some(host.mode);
                (
                    Box::new(selinux::SelinuxDriver::new((*host).clone())),
                    HostSelinux::Ready,
                    Some(*host),
                    mode,
                )
            }
            Ok(Detected::Absent(reason)) => (
                Box::new(NoneDriver),
                HostSelinux::Absent(reason),
                None,
                None,
            ),
            Err(error) => {
                let reason = crate::error_chain::error_chain(&error);
                tracing::warn!(error = %reason, "SELinux is enabled but unusable: confined domains cannot start");
                (
                    Box::new(NoneDriver),
                    HostSelinux::Unusable(reason),
                    None,
                    None,
                )
            }
        };
        Security {
            driver,
            report: SecurityReport {
                selinux,
                host,
                mode,
                default_confinement: config.default_confinement,
            },
        }
    }

    /// A layer with a given driver and host state (tests).
    pub fn with_driver(
        driver: Box<dyn SecurityDriver>,
        selinux: HostSelinux,
        default_confinement: bool,
    ) -> Security {
        Security {
            driver,
            report: SecurityReport {
                selinux,
                host: None,
                mode: None,
                default_confinement,
            },
        }
    }

    pub fn report(&self) -> &SecurityReport {
        &self.report
    }

    pub fn model(&self) -> SecModel {
        self.driver.model()
    }

    pub fn file_labeler(&self) -> Option<FileLabeler> {
        self.driver.file_labeler()
    }

    /// Labels `def` for a start: the live seclabel and what to apply. The
    /// level is reserved for `def`'s name until [`Security::release`].
    pub fn prepare(&mut self, def: &DomainDef) -> Result<Prepared, SecurityError> {
        let name = def.name();
        let workload = Workload::of(def);
        let sec = def.seclabel.as_ref();
        let plan = plan(
            name,
            sec,
            &self.report.selinux,
            self.report.default_confinement,
        )?;
        let base = |label_type, relabel| SecLabel {
            label_type,
            model: Some(SecModel::Selinux),
            relabel,
            baselabel: None,
            label: None,
            live: LiveLabels::default(),
        };
        match plan {
            Plan::Unconfined { model } => Ok(Prepared {
                seclabel: SecLabel {
                    model,
                    ..base(SecLabelType::None, false)
                },
                spec: None,
            }),
            Plan::Dynamic { baselabel } => {
                let labels = self.driver.generate(
                    name,
                    workload,
                    &LabelRequest::Dynamic {
                        baselabel: baselabel.clone(),
                    },
                )?;
                Ok(Prepared {
                    seclabel: SecLabel {
                        baselabel,
                        live: LiveLabels {
                            label: Some(labels.process.clone()),
                            imagelabel: Some(labels.image.clone()),
                        },
                        ..base(SecLabelType::Dynamic, true)
                    },
                    spec: Some(SecuritySpec {
                        process_label: labels.process,
                        image_label: labels.image,
                        relabel_root: true,
                    }),
                })
            }
            Plan::Static { label, relabel } => {
                let labels =
                    self.driver
                        .generate(name, workload, &LabelRequest::Static { label })?;
                Ok(Prepared {
                    seclabel: SecLabel {
                        label: Some(labels.process.clone()),
                        live: LiveLabels {
                            label: None,
                            imagelabel: Some(labels.image.clone()),
                        },
                        ..base(SecLabelType::Static, relabel)
                    },
                    spec: Some(SecuritySpec {
                        process_label: labels.process,
                        image_label: labels.image,
                        relabel_root: relabel,
                    }),
                })
            }
        }
    }

    /// Reserves again the labels of a domain found running after a daemon
    /// restart, from its live definition.
    pub fn reserve_running(&mut self, def: &DomainDef) -> Result<(), SecurityError> {
        let Some(labels) = running_labels(def) else {
            return Ok(());
        };
        self.driver.reserve(def.name(), &labels)
    }

    /// Frees a domain's labels (it stopped or failed to start).
    pub fn release(&mut self, name: &str) {
        self.driver.release(name);
    }
}

/// The labels a running domain's live definition records.
pub fn running_labels(def: &DomainDef) -> Option<DomainLabels> {
    let sec = def.seclabel.as_ref()?;
    match sec.label_type {
        SecLabelType::Dynamic => Some(DomainLabels {
            process: sec.live.label.clone()?,
            image: sec.live.imagelabel.clone().unwrap_or_default(),
            dynamic: true,
        }),
        SecLabelType::Static => Some(DomainLabels {
            process: sec.label.clone()?,
            image: sec.live.imagelabel.clone().unwrap_or_default(),
            dynamic: false,
        }),
        SecLabelType::None => None,
    }
}

/// The process label a running domain runs with, if confined.
pub fn process_label(def: &DomainDef) -> Option<&str> {
    let sec = def.seclabel.as_ref()?;
    match sec.label_type {
        SecLabelType::Dynamic => sec.live.label.as_deref(),
        SecLabelType::Static => sec.label.as_deref(),
        SecLabelType::None => None,
    }
}

#[cfg(test)]
mod tests;
