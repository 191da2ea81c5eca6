//! Rendering of listings and info as text tables or JSON.

use serde::Serialize;

/// One row of `lxvirt list`, and the body of `lxvirt dominfo`.
#[derive(Debug, Clone, Serialize)]
pub struct DomainRow {
    pub name: String,
    pub uuid: String,
    #[serde(rename = "type")]
    pub domain_type: String,
    pub state: String,
    pub state_reason: String,
    pub persistent: bool,
    pub autostart: bool,
}

impl DomainRow {
    pub fn is_active(&self) -> bool {
        self.state != "shutoff"
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// A left-aligned text table; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<&str> = cells.collect();
        let last = cells.len().saturating_sub(1);
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            text.push(' ');
            text.push_str(cell);
            if i != last {
                text.push_str(&" ".repeat(width - cell.chars().count() + 1));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

pub fn list_text(rows: &[DomainRow]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.state.clone(),
                r.domain_type.clone(),
                yes_no(r.autostart).to_owned(),
                yes_no(r.persistent).to_owned(),
            ]
        })
        .collect();
    table(&["Name", "State", "Type", "Autostart", "Persistent"], &body)
}

pub fn info_text(row: &DomainRow) -> String {
    let fields = [
        ("Name", row.name.clone()),
        ("UUID", row.uuid.clone()),
        ("Type", row.domain_type.clone()),
        ("State", row.state.clone()),
        ("State reason", row.state_reason.clone()),
        ("Persistent", yes_no(row.persistent).to_owned()),
        ("Autostart", yes_no(row.autostart).to_owned()),
    ];
    fields
        .iter()
        .map(|(k, v)| format!("{:<15}{v}\n", format!("{k}:")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let text = table(
            &["Name", "State"],
            &[
                vec!["web".into(), "running".into()],
                vec!["database".into(), "shutoff".into()],
            ],
        );
        assert_eq!(
            text,
            " Name     State\n web      running\n database shutoff\n"
        );
    }
}
