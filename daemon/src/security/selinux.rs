//! The `selinux` driver: MCS-separated labels on the policy's base
//! contexts.

use std::io::Write;
use std::path::Path;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::detect::SelinuxHost;
use super::mcs::{McsAllocator, level_of_context, with_level};
use super::{DomainLabels, FileLabeler, LabelRequest, SecurityDriver, SecurityError, Workload};
use crate::domain::SecModel;

#[derive(Debug)]
pub struct SelinuxDriver {
    host: SelinuxHost,
    mcs: McsAllocator,
    rng: StdRng,
}

impl SelinuxDriver {
    pub fn new(host: SelinuxHost) -> SelinuxDriver {
        Self::with_rng(host, StdRng::from_os_rng())
    }

    /// With a given random source (tests).
    pub fn with_rng(host: SelinuxHost, rng: StdRng) -> SelinuxDriver {
        let mcs = McsAllocator::new(host.range.clone());
        SelinuxDriver { host, mcs, rng }
    }

    pub fn host(&self) -> &SelinuxHost {
        &self.host
    }

    pub fn allocator(&self) -> &McsAllocator {
        &self.mcs
    }

    /// Asks the kernel whether `label` is valid in the loaded policy
    /// (libselinux's `security_check_context`: a write to selinuxfs's
    /// `context`). Only a definite "invalid" is an error: a policy that
    /// denies the check itself leaves the answer to the kernel at exec.
    fn check(&self, domain: &str, label: &str) -> Result<(), SecurityError> {
        let path = self.host.mount.join("context");
        let result = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(label.as_bytes()));
        match result {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                Err(SecurityError::InvalidContext {
                    domain: domain.to_owned(),
                    label: label.to_owned(),
                })
            }
            Err(e) => {
                tracing::debug!(domain, label, error = %e, "cannot check a label against the policy");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }
}

impl SecurityDriver for SelinuxDriver {
    fn model(&self) -> SecModel {
        SecModel::Selinux
    }

    fn generate(
        &mut self,
        domain: &str,
        workload: Workload,
        request: &LabelRequest,
    ) -> Result<DomainLabels, SecurityError> {
        // One allocator for containers and VMs: no two share a pair.
        let (base, process) = match workload {
            Workload::Container => (&self.host.base, &self.host.base.process),
            Workload::Vm => (&self.host.vm_base, &self.host.vm_base.process),
            Workload::TcgVm => (&self.host.vm_base, &self.host.vm_tcg_process),
        };
        let labels = match request {
            LabelRequest::Dynamic { baselabel } => {
                let process = baselabel.as_deref().unwrap_or(process);
                let level = self.mcs.allocate(domain, &mut self.rng)?;
                DomainLabels {
                    process: with_level(process, &level),
                    image: with_level(&base.file, &level),
                    dynamic: true,
                }
            }
            LabelRequest::Static { label } => {
                let image = match level_of_context(label) {
                    Some(level) => {
                        self.mcs.reserve(domain, level, false)?;
                        with_level(&base.file, level)
                    }
                    None => base.file.clone(),
                };
                DomainLabels {
                    process: label.clone(),
                    image,
                    dynamic: false,
                }
            }
        };
        let checked = self
            .check(domain, &labels.process)
            .and_then(|()| self.check(domain, &labels.image));
        if let Err(error) = checked {
            self.mcs.release(domain);
            return Err(error);
        }
        Ok(labels)
    }

    fn reserve(&mut self, domain: &str, labels: &DomainLabels) -> Result<(), SecurityError> {
        match level_of_context(&labels.process) {
            Some(level) => self.mcs.reserve(domain, level, labels.dynamic),
            None => Ok(()),
        }
    }

    fn release(&mut self, domain: &str) {
        self.mcs.release(domain);
    }

    fn file_labeler(&self) -> Option<FileLabeler> {
        Some(set_label)
    }
}

fn set_label(path: &Path, label: &str) -> std::io::Result<()> {
    crate::sys::linux::set_file_label(path, label)
}
