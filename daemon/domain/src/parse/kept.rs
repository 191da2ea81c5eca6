//! Reading kept elements (see [`crate::kept`]) by their vocabulary table.

use super::super::error::DomainError;
use super::super::kept::{self, Body, KeptElement, Spec, Value};
use super::super::xml::{Element, Node, Pos};
use super::Ctx;
use super::helpers::*;

/// Reads `el` as the kept element `spec`: every attribute and child must be
/// in the table, keyword and number values are checked.
pub(super) fn parse_kept(el: &Element, spec: &'static Spec) -> Result<KeptElement> {
    let names: Vec<&str> = spec.attrs.iter().map(|(n, _)| *n).collect();
    check_attrs(el, &names)?;
    let mut attributes = Vec::new();
    for (name, v) in spec.attrs {
        if let Some(a) = el.attribute(name) {
            let value = trim_token(&a.value).to_owned();
            check_value(a.pos, &el.qname, name, &value, *v)?;
            attributes.push(((*name).to_owned(), value));
        }
    }
    let (text, children) = match spec.body {
        Body::Empty => {
            check_children(el, &[], &[])?;
            (None, Vec::new())
        }
        Body::Text(v) => (kept_text(el, v)?, Vec::new()),
        // The child elements decide which form it is.
        Body::TextOrChildren(_, specs) if el.elements().next().is_some() => {
            (None, kept_children(el, specs)?)
        }
        Body::TextOrChildren(v, _) => (kept_text(el, v)?, Vec::new()),
        Body::Children(specs) => (None, kept_children(el, specs)?),
    };
    Ok(KeptElement {
        name: spec.name.to_owned(),
        attributes,
        text,
        children,
    })
}

/// The trimmed text of `el`, checked as `v`; `None` when empty.
fn kept_text(el: &Element, v: Value) -> Result<Option<String>> {
    let t = super::helpers::text(el)?;
    printable(el, &t)?;
    let t = trim_token(&t);
    if t.is_empty() {
        return Ok(None);
    }
    check_value(el.pos, &el.qname, "text", t, v)?;
    Ok(Some(t.to_owned()))
}

/// The children of `el`, each one of `specs`, in document order.
fn kept_children(el: &Element, specs: &'static [&'static Spec]) -> Result<Vec<KeptElement>> {
    let allowed: Vec<&str> = specs.iter().map(|s| s.name).collect();
    check_children(el, &[], &allowed)?;
    let mut children = Vec::new();
    for node in &el.children {
        if let Node::Element(child) = node
            && let Some(s) = kept::find(specs, &child.name)
        {
            children.push(parse_kept(child, s)?);
        }
    }
    Ok(children)
}

/// Removes from `el` the children that `specs` keeps and reads them, in
/// document order; returns what is left for the typed parser. In a
/// container they are refused as VM-only, but for the names in
/// `typed_in_lxc`, which containers have typed (`<filesystem>`).
pub(super) fn split_kept(
    ctx: Ctx,
    el: &Element,
    specs: &'static [&'static Spec],
    typed_in_lxc: &[&str],
) -> Result<(Element, Vec<KeptElement>)> {
    let mut rest = el.clone();
    let mut kept = Vec::new();
    rest.children.clear();
    for node in &el.children {
        match node {
            Node::Element(child) if child.namespace.is_none() => {
                match kept::find(specs, &child.name) {
                    Some(_) if ctx.lxc() && typed_in_lxc.contains(&child.name.as_str()) => {
                        rest.children.push(node.clone());
                    }
                    Some(_) if ctx.lxc() => ctx.vm_only(child)?,
                    Some(spec) => kept.push(parse_kept(child, spec)?),
                    None => rest.children.push(node.clone()),
                }
            }
            other => rest.children.push(other.clone()),
        }
    }
    Ok((rest, kept))
}

fn check_value(pos: Pos, element: &str, what: &str, value: &str, v: Value) -> Result<()> {
    match v {
        Value::Text => Ok(()),
        Value::Uint => number(pos, element, what, value, 0u64, u64::MAX).map(|_| ()),
        Value::Hex(max) => match hex_or_dec(value) {
            Some(n) if n <= max => Ok(()),
            Some(_) => Err(DomainError::invalid(
                pos,
                element,
                format!("{what} '{value}' is out of range"),
                format!("use a number from 0 to {max:#x}"),
            )),
            None => Err(DomainError::invalid(
                pos,
                element,
                format!("{what} '{value}' is not a number"),
                format!("write a number from 0 to {max:#x}, in decimal or as 0x hex"),
            )),
        },
        Value::YesNo => keyword(pos, element, what, value, yes_no, &["yes", "no"]).map(|_| ()),
        Value::OnOff => {
            keyword(pos, element, what, value, parse_on_off, &["on", "off"]).map(|_| ())
        }
        Value::Path => abs_path(pos, element, what, value).map(|_| ()),
        Value::OneOf(names) if names.contains(&value) => Ok(()),
        // Not one of the names: let keyword() word the refusal.
        Value::OneOf(names) => keyword(pos, element, what, value, |_| None::<()>, names),
    }
}

fn yes_no(s: &str) -> Option<bool> {
    match s {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}
