//! The record `ListDomainSummaries` returns.

use serde::{Deserialize, Serialize};
use zbus::{OwnedObjectPath, Type};

/// One domain as `ListDomainSummaries` returns it: the Domain interface's
/// properties, in one struct per domain. A list of 6,000 costs a fraction
/// of `GetManagedObjects`, which sends every property as a named variant.
/// The struct's signature is part of the contract: a later field comes as
/// a new method, never as a change to this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct DomainSummaryRecord {
    pub path: OwnedObjectPath,
    /// The properties of the same names.
    pub uuid: String,
    pub name: String,
    pub domain_type: String,
    pub state: String,
    pub state_reason: String,
    pub persistent: bool,
    pub autostart: bool,
    pub pid: u32,
    pub start_time: u64,
    pub security_label: String,
    pub user_namespace: String,
    /// (first host id, count); (0, 0) without an allocated block.
    pub host_ids: (u32, u32),
}

/// One step of `PlanApply` or `Apply`: what changes (or would), in order.
/// The struct's signature is part of the contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct ApplyStepRecord {
    /// `domain` or `network`.
    pub kind: String,
    pub name: String,
    /// `define`, `update`, `undefine`, `autostart`, `no-autostart`,
    /// `start` or `stop`.
    pub action: String,
    /// The document it comes from (as the caller named it); empty for an
    /// object no document names (a pruned one).
    pub origin: String,
    /// `planned` (PlanApply), `done`, `failed` or `skipped` (an earlier
    /// step failed).
    pub result: String,
    /// For `define` and `update`: a unified diff of the canonical
    /// definitions; for `failed`: the error.
    pub detail: String,
}
