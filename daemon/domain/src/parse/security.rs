//! `<seclabel>` and `<lxc:namespace>`.

use super::super::def::*;
use super::super::error::DomainError;
use super::super::values::{DomainName, check_name};
use super::super::xml::{Element, Node};
use super::helpers::*;

/// Whether `label` looks like an SELinux context `user:role:type[:level]`.
pub fn is_context(label: &str) -> bool {
    let mut parts = label.splitn(4, ':');
    label.len() <= 4096
        && label
            .chars()
            .all(|c| c.is_ascii_graphic() && !"'\"<>&".contains(c))
        && (0..3).all(|_| parts.next().is_some_and(|p| !p.is_empty()))
        && parts.next().is_none_or(|level| !level.is_empty())
}

fn label_text(el: &Element) -> Result<String> {
    let t = plain_text(el)?;
    if !is_context(&t) {
        return Err(DomainError::invalid(
            el.pos,
            &el.qname,
            format!("'{t}' is not a security context"),
            "write user:role:type[:level], e.g. system_u:system_r:svirt_lxc_net_t:s0",
        ));
    }
    Ok(t)
}

pub(super) fn parse_seclabel(el: &Element) -> Result<SecLabel> {
    check_attrs(el, &["type", "model", "relabel"])?;
    check_children(el, &["baselabel", "label", "imagelabel"], &[])?;
    let label_type = attr_keyword(el, "type", SecLabelType::parse, SecLabelType::NAMES)?
        .unwrap_or(SecLabelType::Dynamic);
    let model = attr_keyword(el, "model", SecModel::parse, SecModel::NAMES)?;
    let relabel = attr_yes_no(el, "relabel")?;
    let relabel_pos = el.attribute("relabel").map_or(el.pos, |a| a.pos);
    let model_pos = el.attribute("model").map_or(el.pos, |a| a.pos);
    let baselabel = el.element("baselabel").map(label_text).transpose()?;
    let label = el.element("label").map(label_text).transpose()?;
    let imagelabel = el.element("imagelabel").map(label_text).transpose()?;
    let none_model = |what: &str| {
        DomainError::invalid(
            model_pos,
            "seclabel",
            format!("a {what} label needs a security model"),
            "use model='selinux', or type='none' to run unconfined",
        )
    };
    match label_type {
        SecLabelType::Dynamic => {
            if relabel == Some(false) {
                return Err(DomainError::invalid(
                    relabel_pos,
                    "seclabel",
                    "a dynamic label must relabel the domain's files",
                    "remove relabel='no' (or use type='static' with a <label>)",
                ));
            }
            if model == Some(SecModel::None) {
                return Err(none_model("dynamic"));
            }
            Ok(SecLabel {
                label_type,
                model,
                relabel: true,
                baselabel,
                label: None,
                // A generated label read back from a running domain's XML.
                live: LiveLabels { label, imagelabel },
            })
        }
        SecLabelType::Static => {
            if model == Some(SecModel::None) {
                return Err(none_model("static"));
            }
            if let Some(b) = el.element("baselabel") {
                return Err(DomainError::invalid(
                    b.pos,
                    "baselabel",
                    "<baselabel> applies to dynamic labels only",
                    "remove it, or use type='dynamic'",
                ));
            }
            let label = label.ok_or_else(|| {
                DomainError::missing(
                    el.pos,
                    "seclabel",
                    "<label>, which a static label needs",
                    "add <label>system_u:system_r:svirt_lxc_net_t:s0:c10,c20</label>",
                )
            })?;
            Ok(SecLabel {
                label_type,
                model,
                relabel: relabel.unwrap_or(false),
                baselabel: None,
                label: Some(label),
                live: LiveLabels {
                    label: None,
                    imagelabel,
                },
            })
        }
        SecLabelType::None => {
            if relabel == Some(true) {
                return Err(DomainError::invalid(
                    relabel_pos,
                    "seclabel",
                    "type='none' cannot relabel",
                    "remove relabel='yes'",
                ));
            }
            if let Some(c) = el.elements().next() {
                return Err(DomainError::invalid(
                    c.pos,
                    &c.qname,
                    "a seclabel of type='none' takes no labels",
                    format!("remove <{}>", c.qname),
                ));
            }
            Ok(SecLabel {
                label_type,
                model,
                relabel: false,
                baselabel: None,
                label: None,
                live: LiveLabels::default(),
            })
        }
    }
}

pub(super) fn parse_lxc_namespace(el: &Element) -> Result<LxcNamespace> {
    check_attrs(el, &[])?;
    let mut ns = LxcNamespace::default();
    for node in &el.children {
        let c = match node {
            Node::Text(t) if t.trim().is_empty() => continue,
            Node::Text(t) => return Err(unexpected_text(el, t)),
            Node::Element(c) => c,
        };
        if c.namespace.as_deref() != Some(LXC_NAMESPACE_URI) {
            return Err(DomainError::UnknownElement {
                pos: c.pos,
                element: el.qname.clone(),
                child: c.qname.clone(),
                hint: " (known here: lxc:sharenet, lxc:shareipc, lxc:shareuts)".into(),
            });
        }
        let slot = match c.name.as_str() {
            "sharenet" => &mut ns.sharenet,
            "shareipc" => &mut ns.shareipc,
            "shareuts" => &mut ns.shareuts,
            _ => {
                return Err(DomainError::UnknownElement {
                    pos: c.pos,
                    element: el.qname.clone(),
                    child: c.qname.clone(),
                    hint: " (known here: lxc:sharenet, lxc:shareipc, lxc:shareuts)".into(),
                });
            }
        };
        if slot.is_some() {
            return Err(DomainError::duplicate(
                c.pos,
                &el.qname,
                format!("<{}>", c.qname),
            ));
        }
        check_attrs(c, &["type", "value"])?;
        check_children(c, &[], &[])?;
        let t = req_attr(c, "type", "add type='name' (or 'pid', 'netns')")?;
        let share_type = keyword(
            t.pos,
            &c.qname,
            "type",
            &t.value,
            NsShareType::parse,
            NsShareType::NAMES,
        )?;
        if share_type == NsShareType::Netns && c.name != "sharenet" {
            return Err(DomainError::invalid(
                t.pos,
                &c.qname,
                "type 'netns' applies to lxc:sharenet only",
                "use type='name' or type='pid'",
            ));
        }
        let v = req_attr(c, "value", "add value='…'")?;
        let value = v.value.trim();
        let problem = match share_type {
            NsShareType::Pid => match value.parse::<u32>() {
                Ok(n) if n > 0 && value.bytes().all(|b| b.is_ascii_digit()) => None,
                _ => Some((
                    "is not a process id",
                    "give the number of a running process",
                )),
            },
            NsShareType::Name => DomainName::new(value)
                .err()
                .map(|_| ("is not a domain name", "name another lxvirt domain")),
            NsShareType::Netns => check_name(value, 255).err().map(|_| {
                (
                    "is not a network namespace name",
                    "name one listed by 'ip netns'",
                )
            }),
        };
        if let Some((what, fix)) = problem {
            return Err(DomainError::invalid(
                v.pos,
                &c.qname,
                format!("value '{}' {what}", v.value),
                fix,
            ));
        }
        *slot = Some(NsShare {
            share_type,
            value: value.to_owned(),
        });
    }
    Ok(ns)
}

/// `<lxvirt:pids max='N'/>`: the container's task limit, at least 1.
pub(super) fn parse_pids(el: &Element) -> Result<u64> {
    check_attrs(el, &["max"])?;
    check_children(el, &[], &[])?;
    let max = el.attribute("max").ok_or_else(|| {
        DomainError::invalid(
            el.pos,
            &el.qname,
            "missing attribute 'max'",
            "add max='N', the most tasks the container may have (remove the element for the daemon's limit)",
        )
    })?;
    number(max.pos, &el.qname, "max", &max.value, 1u64, MAX_PIDS)
}

/// `<lxvirt:api access='none|read|manage'/>`.
pub(super) fn parse_api(el: &Element) -> Result<ApiAccess> {
    check_attrs(el, &["access"])?;
    check_children(el, &[], &[])?;
    attr_keyword(el, "access", ApiAccess::parse, ApiAccess::NAMES)?.ok_or_else(|| {
        DomainError::invalid(
            el.pos,
            &el.qname,
            "missing attribute 'access'",
            "add access='read' or access='manage' (remove the element to refuse every call from inside)",
        )
    })
}

/// `<lxvirt:userns mode='auto|host' [target='N' count='N']/>`; the block
/// attributes appear in live definitions, with mode='auto' only.
pub(super) fn parse_userns(el: &Element) -> Result<Userns> {
    check_attrs(el, &["mode", "target", "count"])?;
    check_children(el, &[], &[])?;
    let mode = attr_keyword(el, "mode", UsernsMode::parse, UsernsMode::NAMES)?
        .ok_or_else(|| {
            DomainError::invalid(
                el.pos,
                &el.qname,
                "missing attribute 'mode'",
                "add mode='auto' (a user namespace with ids lxvirt allocates) or mode='host' (none)",
            )
        })?;
    let number = |name: &str| -> Result<Option<u32>> {
        el.attribute(name)
            .map(|a| number(a.pos, &el.qname, name, &a.value, 0u32, u32::MAX))
            .transpose()
    };
    let allocated = match (number("target")?, number("count")?) {
        (None, None) => None,
        (Some(target), Some(count)) if mode == UsernsMode::Auto && count > 0 => {
            Some((target, count))
        }
        _ => {
            return Err(DomainError::invalid(
                el.pos,
                &el.qname,
                "target and count describe the ids a running container was given",
                "remove them (lxvirt allocates the ids), or give both with mode='auto'",
            ));
        }
    };
    Ok(Userns { mode, allocated })
}

/// `<lxvirt:seccomp mode='default|off' mount='auto|allow|deny'>` with
/// `<lxvirt:deny syscall='NAME'/>` children.
pub(super) fn parse_seccomp(el: &Element) -> Result<Seccomp> {
    check_attrs(el, &["mode", "mount"])?;
    let mode = attr_keyword(el, "mode", SeccompMode::parse, SeccompMode::NAMES)?
        .unwrap_or(SeccompMode::Default);
    let mount = attr_keyword(el, "mount", SeccompMount::parse, SeccompMount::NAMES)?
        .unwrap_or(SeccompMount::Auto);
    let mut deny: Vec<String> = Vec::new();
    let mut unknown = Vec::new();
    let mut first_unknown = None;
    for node in &el.children {
        let c = match node {
            Node::Text(t) if t.trim().is_empty() => continue,
            Node::Text(t) => return Err(unexpected_text(el, t)),
            Node::Element(c) => c,
        };
        if c.namespace.as_deref() != Some(LXVIRT_NAMESPACE_URI) || c.name != "deny" {
            return Err(DomainError::UnknownElement {
                pos: c.pos,
                element: el.qname.clone(),
                child: c.qname.clone(),
                hint: " (known here: lxvirt:deny)".into(),
            });
        }
        check_attrs(c, &["syscall"])?;
        check_children(c, &[], &[])?;
        let a = req_attr(c, "syscall", "add syscall='NAME', such as syscall='uname'")?;
        let name = a.value.trim();
        if deny.iter().any(|d| d == name) {
            return Err(DomainError::duplicate(
                c.pos,
                &el.qname,
                format!("<{} syscall='{name}'>", c.qname),
            ));
        }
        if deny.len() == MAX_SECCOMP_DENY {
            return Err(DomainError::invalid(
                c.pos,
                &el.qname,
                format!("more than {MAX_SECCOMP_DENY} <{}> elements", c.qname),
                "block fewer syscalls, or turn the default filter off with mode='off'",
            ));
        }
        if crate::syscalls::number(name).is_none() {
            first_unknown.get_or_insert(a.pos);
            unknown.push(format!("'{name}'"));
        }
        deny.push(name.to_owned());
    }
    if let Some(pos) = first_unknown {
        return Err(DomainError::invalid(
            pos,
            &el.qname,
            format!(
                "unknown syscall {} on {}",
                unknown.join(", "),
                std::env::consts::ARCH
            ),
            "use the kernel's names, as in 'man 2 syscalls'",
        ));
    }
    if mode == SeccompMode::Off && (!deny.is_empty() || mount != SeccompMount::Auto) {
        return Err(DomainError::invalid(
            el.pos,
            &el.qname,
            "mode='off' turns the filter off, so its mount attribute and deny elements do nothing",
            "remove them, or use mode='default'",
        ));
    }
    Ok(Seccomp { mode, mount, deny })
}
