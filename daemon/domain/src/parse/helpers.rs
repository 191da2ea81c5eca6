//! Helpers shared by the parsers: strict checks of attributes and children,
//! and value conversions that produce positioned errors.

use std::path::PathBuf;

use uuid::Uuid;

use super::super::error::DomainError;
use super::super::units::{self, SizeError};
use super::super::values::normalize_abs_path;
use super::super::xml::{Attribute, Element, Node, Pos};

pub(super) type Result<T> = std::result::Result<T, DomainError>;

fn is_declaration(a: &Attribute) -> bool {
    a.qname == "xmlns" || a.qname.starts_with("xmlns:")
}

fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => format!("'{one}'"),
        _ => {
            let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
            format!("one of {}", quoted.join(", "))
        }
    }
}

/// Refuses attributes other than `allowed` (namespace declarations pass).
pub(super) fn check_attrs(el: &Element, allowed: &[&str]) -> Result<()> {
    for a in &el.attributes {
        if is_declaration(a) {
            continue;
        }
        if a.namespace.is_some() || !allowed.contains(&a.name.as_str()) {
            let hint = if allowed.is_empty() {
                format!(" (<{}> takes no attributes)", el.qname)
            } else {
                format!(" (known here: {})", allowed.join(", "))
            };
            return Err(DomainError::UnknownAttribute {
                pos: a.pos,
                element: el.qname.clone(),
                attribute: a.qname.clone(),
                hint,
            });
        }
    }
    Ok(())
}

/// Refuses child elements other than `once` (at most one each) and `many`,
/// elements in any namespace, and non-blank text.
pub(super) fn check_children(el: &Element, once: &[&str], many: &[&str]) -> Result<()> {
    let mut seen: Vec<&str> = Vec::new();
    for node in &el.children {
        match node {
            Node::Text(t) => {
                if !t.trim().is_empty() {
                    return Err(unexpected_text(el, t));
                }
            }
            Node::Element(child) => {
                if let Some(ns) = &child.namespace {
                    return Err(foreign(el, child, ns));
                }
                let name = child.name.as_str();
                if once.contains(&name) {
                    if seen.contains(&name) {
                        return Err(DomainError::duplicate(
                            child.pos,
                            &el.qname,
                            format!("<{name}>"),
                        ));
                    }
                    seen.push(name);
                } else if !many.contains(&name) {
                    let known: Vec<&str> = once.iter().chain(many).copied().collect();
                    let hint = if known.is_empty() {
                        format!(" (<{}> has no child elements)", el.qname)
                    } else {
                        format!(" (known here: {})", known.join(", "))
                    };
                    return Err(DomainError::UnknownElement {
                        pos: child.pos,
                        element: el.qname.clone(),
                        child: child.qname.clone(),
                        hint,
                    });
                }
            }
        }
    }
    Ok(())
}

pub(super) fn foreign(parent: &Element, child: &Element, ns: &str) -> DomainError {
    DomainError::UnknownElement {
        pos: child.pos,
        element: parent.qname.clone(),
        child: child.qname.clone(),
        hint: format!(
            " (it is in namespace '{ns}'; elements of other namespaces belong inside <metadata>)"
        ),
    }
}

pub(super) fn unexpected_text(el: &Element, text: &str) -> DomainError {
    let t = text.trim();
    let shown: String = t.chars().take(20).collect();
    let more = if t.chars().count() > 20 { "…" } else { "" };
    DomainError::invalid(
        el.pos,
        &el.qname,
        format!("unexpected text '{shown}{more}'"),
        "remove it; this element holds only child elements",
    )
}

/// An element that takes neither attributes nor content (`<readonly/>`).
pub(super) fn check_flag(el: &Element) -> Result<()> {
    check_attrs(el, &[])?;
    check_children(el, &[], &[])?;
    if !el.is_empty() {
        return Err(unexpected_text(el, &el.text()));
    }
    Ok(())
}

/// The text of an element that has no child elements, verbatim.
pub(super) fn text(el: &Element) -> Result<String> {
    if let Some(child) = el.elements().next() {
        return Err(match &child.namespace {
            Some(ns) => foreign(el, child, ns),
            None => DomainError::UnknownElement {
                pos: child.pos,
                element: el.qname.clone(),
                child: child.qname.clone(),
                hint: format!(" (<{}> holds only text)", el.qname),
            },
        });
    }
    Ok(el.text())
}

/// The text of a simple element with no attributes, without the white
/// space at its ends that XML's types strip (ASCII only, as `trim_token`).
pub(super) fn plain_text(el: &Element) -> Result<String> {
    check_attrs(el, &[])?;
    Ok(trim_token(&text(el)?).to_owned())
}

/// A required attribute.
pub(super) fn req_attr<'a>(el: &'a Element, name: &str, fix: &str) -> Result<&'a Attribute> {
    el.attribute(name)
        .ok_or_else(|| DomainError::missing(el.pos, &el.qname, format!("attribute '{name}'"), fix))
}

/// A required child element.
pub(super) fn req_child<'a>(el: &'a Element, name: &str, fix: &str) -> Result<&'a Element> {
    el.element(name)
        .ok_or_else(|| DomainError::missing(el.pos, &el.qname, format!("<{name}>"), fix))
}

/// `value` without the white space at its ends that the schema's `token`
/// type strips: ASCII only (a vertical tab or a no-break space is part of
/// the value), so that the parser accepts no keyword the schema refuses.
pub(super) fn trim_token(value: &str) -> &str {
    crate::xml::trim_space(value)
}

/// Parses a keyword with `parse`, naming the choices in the error.
pub(super) fn keyword<T>(
    pos: Pos,
    element: &str,
    what: &str,
    value: &str,
    parse: fn(&str) -> Option<T>,
    names: &[&str],
) -> Result<T> {
    parse(trim_token(value)).ok_or_else(|| {
        DomainError::invalid(
            pos,
            element,
            // Escaped: a control character in it would be invisible.
            format!("{what} '{}' is not known", value.escape_debug()),
            format!("use {}", one_of(names)),
        )
    })
}

/// A keyword attribute, if present.
pub(super) fn attr_keyword<T>(
    el: &Element,
    name: &str,
    parse: fn(&str) -> Option<T>,
    names: &[&str],
) -> Result<Option<T>> {
    match el.attribute(name) {
        None => Ok(None),
        Some(a) => keyword(a.pos, &el.qname, name, &a.value, parse, names).map(Some),
    }
}

/// A `yes`/`no` attribute, if present.
pub(super) fn attr_yes_no(el: &Element, name: &str) -> Result<Option<bool>> {
    attr_keyword(el, name, parse_yes_no, &["yes", "no"])
}

/// An `on`/`off` attribute, if present.
pub(super) fn attr_on_off(el: &Element, name: &str) -> Result<Option<bool>> {
    attr_keyword(el, name, parse_on_off, &["on", "off"])
}

fn parse_yes_no(s: &str) -> Option<bool> {
    match s {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// An `on`/`off` attribute value.
pub(super) fn parse_on_off(s: &str) -> Option<bool> {
    match s {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

/// An unsigned integer in `min..=max`.
pub(super) fn number<T>(
    pos: Pos,
    element: &str,
    what: &str,
    value: &str,
    min: T,
    max: T,
) -> Result<T>
where
    T: TryFrom<u64> + Into<u64> + Copy + std::fmt::Display,
{
    let t = value.trim();
    let range = || format!("use a whole number from {min} to {max}");
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DomainError::invalid(
            pos,
            element,
            format!("{what} '{value}' is not a whole number"),
            range(),
        ));
    }
    let n: Option<T> = t.parse::<u64>().ok().and_then(|n| T::try_from(n).ok());
    match n {
        Some(n) if n.into() >= min.into() && n.into() <= max.into() => Ok(n),
        _ => Err(DomainError::invalid(
            pos,
            element,
            format!("{what} {t} is out of range"),
            range(),
        )),
    }
}

/// A size with an optional `unit` (or `units`) attribute, in bytes.
pub(super) fn size(el: &Element, unit_attr: &str) -> Result<u64> {
    check_attrs(el, &[unit_attr])?;
    let value = text(el)?;
    size_value(el, el.pos, &value, el.attribute(unit_attr))
}

/// A size given as an attribute value plus an optional unit attribute.
pub(super) fn size_value(
    el: &Element,
    value_pos: Pos,
    value: &str,
    unit: Option<&Attribute>,
) -> Result<u64> {
    units::parse_size(value, unit.map(|u| u.value.as_str())).map_err(|e| match e {
        SizeError::UnknownUnit(u) => DomainError::invalid(
            unit.map_or(el.pos, |a| a.pos),
            &el.qname,
            format!("unit '{u}' is not known"),
            units::UNIT_HINT,
        ),
        SizeError::NotANumber(v) => DomainError::invalid(
            value_pos,
            &el.qname,
            format!("size '{}' is not a whole number", v.trim()),
            "write a number such as 512 and put the unit in the unit attribute",
        ),
        SizeError::Overflow => DomainError::invalid(
            value_pos,
            &el.qname,
            format!("size {} is too large", value.trim()),
            "use a smaller value or unit",
        ),
    })
}

/// An absolute, normalised path.
pub(super) fn abs_path(pos: Pos, element: &str, what: &str, value: &str) -> Result<PathBuf> {
    normalize_abs_path(value.trim()).map_err(|e| {
        DomainError::invalid(
            pos,
            element,
            format!("{what}: {e}"),
            "write an absolute path without '..', such as /srv/data",
        )
    })
}

/// An absolute path from an attribute.
pub(super) fn attr_path(el: &Element, a: &Attribute) -> Result<PathBuf> {
    abs_path(a.pos, &el.qname, &a.name, &a.value)
}

/// An absolute path from an element's text.
pub(super) fn text_path(el: &Element) -> Result<PathBuf> {
    let t = plain_text(el)?;
    abs_path(el.pos, &el.qname, "path", &t)
}

/// Refuses control characters (other than tab and newline) in free text.
pub(super) fn printable(el: &Element, value: &str) -> Result<()> {
    if super::super::values::is_printable_text(value) {
        Ok(())
    } else {
        Err(DomainError::invalid(
            el.pos,
            &el.qname,
            "the text contains a control character",
            "remove it",
        ))
    }
}

/// Refuses an element that is meaningful only for another domain type.
pub(super) fn not_for(el: &Element, kind: &str, only: &str) -> DomainError {
    DomainError::invalid(
        el.pos,
        &el.qname,
        format!("<{}> is not supported in a {kind} domain", el.qname),
        format!("remove it; it applies to {only} domains only"),
    )
}

/// The `<name>` child of a document's root: `what` is `domain` or
/// `network`, `new` the name type's checked constructor.
pub(super) fn object_name<T>(
    root: &Element,
    what: &str,
    example: &str,
    new: fn(&str) -> std::result::Result<T, String>,
) -> Result<T> {
    let el = req_child(root, "name", &format!("add <name>{example}</name>"))?;
    let t = plain_text(el)?;
    new(&t).map_err(|e| {
        DomainError::invalid(
            el.pos,
            "name",
            format!("'{t}' is not a valid {what} name: {e}"),
            "use 1 to 64 letters, digits, '_', '.', '+' or '-', not starting with '.' or '-'",
        )
    })
}

/// The `<uuid>` child of a document's root, or a new random UUID.
pub(super) fn uuid_or_new(root: &Element, what: &str) -> Result<Uuid> {
    let Some(el) = root.element("uuid") else {
        return Ok(Uuid::new_v4());
    };
    let t = plain_text(el)?;
    let well_formed =
        (t.len() == 36 || t.len() == 32) && t.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    let uuid = if well_formed {
        Uuid::try_parse(&t).ok()
    } else {
        None
    };
    match uuid {
        Some(u) if !u.is_nil() => Ok(u),
        Some(_) => Err(DomainError::invalid(
            el.pos,
            "uuid",
            format!("the nil UUID is not a {what} UUID"),
            "remove <uuid> to get a generated one",
        )),
        None => Err(DomainError::invalid(
            el.pos,
            "uuid",
            format!("'{t}' is not a UUID"),
            "write one like 6c0a3a52-2c4e-4a8f-9d0e-2b7c1d9f4a11, or remove <uuid> to get a generated one",
        )),
    }
}

/// A whole number written in decimal or as `0x` hex.
pub(super) fn hex_or_dec(v: &str) -> Option<u64> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u64::from_str_radix(hex, 16).ok()
        }
        Some(_) => None,
        None if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => v.parse().ok(),
        None => None,
    }
}
