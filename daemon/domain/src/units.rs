//! Sizes with units, as libvirt writes them (`<memory unit='MiB'>256</memory>`).
//!
//! Unit names are matched without regard to case: `b`, `byte`, `bytes`; a
//! letter of `KMGTPE` alone or followed by `iB` is a power of 1024 (`k`, `M`,
//! `GiB`); followed by `B` it is a power of 1000 (`KB`, `MB`). A missing unit
//! means KiB. The typed model keeps bytes, rounded up to whole KiB as
//! libvirt does, and the canonical output writes KiB.

/// Names accepted for sizes, for error messages.
pub const UNIT_HINT: &str = "use one of b, KiB, MiB, GiB, TiB, KB, MB, GB, TB (default KiB)";

pub const KIB: u64 = 1024;

/// Bytes per unit, or `None` for an unknown unit name.
pub fn unit_scale(unit: &str) -> Option<u64> {
    let lower = unit.to_ascii_lowercase();
    if matches!(lower.as_str(), "b" | "byte" | "bytes") {
        return Some(1);
    }
    let mut chars = lower.chars();
    let prefix = chars.next()?;
    let exp = "kmgtpe".find(prefix)? + 1;
    let base: u64 = match chars.as_str() {
        "" | "ib" => 1024,
        "b" => 1000,
        _ => return None,
    };
    base.checked_pow(u32::try_from(exp).ok()?)
}

/// Why a size could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeError {
    UnknownUnit(String),
    NotANumber(String),
    Overflow,
}

/// Parses `value` in `unit` (KiB when `None`) into bytes rounded up to whole
/// KiB.
pub fn parse_size(value: &str, unit: Option<&str>) -> Result<u64, SizeError> {
    let scale = match unit {
        None => KIB,
        // White space at the ends as the schema's token loses it: ASCII
        // only.
        Some(u) => unit_scale(crate::xml::trim_space(u))
            .ok_or_else(|| SizeError::UnknownUnit(u.to_owned()))?,
    };
    let t = value.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SizeError::NotANumber(value.to_owned()));
    }
    let n: u64 = t.parse().map_err(|_| SizeError::Overflow)?;
    let bytes = n.checked_mul(scale).ok_or(SizeError::Overflow)?;
    round_up_kib(bytes).ok_or(SizeError::Overflow)
}

/// Rounds up to a whole number of KiB, `None` on overflow.
pub fn round_up_kib(bytes: u64) -> Option<u64> {
    bytes.checked_next_multiple_of(KIB)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn scales_binary_and_decimal_units() {
        assert_eq!(parse_size("1", Some("KiB")), Ok(1024));
        assert_eq!(parse_size("1", Some("k")), Ok(1024));
        assert_eq!(parse_size("1", Some("K")), Ok(1024));
        assert_eq!(parse_size("2", Some("MiB")), Ok(2 << 20));
        assert_eq!(parse_size("2", Some("M")), Ok(2 << 20));
        assert_eq!(parse_size("1", Some("GiB")), Ok(1 << 30));
        assert_eq!(parse_size("1", Some("T")), Ok(1 << 40));
        assert_eq!(parse_size("1", Some("PiB")), Ok(1 << 50));
        assert_eq!(parse_size("1", Some("EiB")), Ok(1 << 60));
        assert_eq!(parse_size("1", Some("MB")), Ok(1_000_448)); // 1e6 rounded up to KiB
        assert_eq!(parse_size("1024", Some("KB")), Ok(1_024_000));
        assert_eq!(parse_size("3", Some("GB")), Ok(3_000_000_512));
        assert_eq!(parse_size("4096", Some("bytes")), Ok(4096));
        assert_eq!(parse_size("4096", Some("b")), Ok(4096));
        assert_eq!(parse_size("1", Some("b")), Ok(1024));
        assert_eq!(parse_size("0", Some("b")), Ok(0));
        assert_eq!(parse_size(" 64 ", None), Ok(64 * 1024));
    }

    /// Unit names in any case, as libvirt reads them; white space at the
    /// ends only as XML's token loses it (ASCII), so that no unit the
    /// schema refuses is read.
    #[test]
    fn units_in_any_case_and_ascii_white_space_at_the_ends() {
        assert_eq!(parse_size("1", Some("miB")), Ok(1 << 20));
        assert_eq!(parse_size("1", Some("KIB")), Ok(1024));
        assert_eq!(parse_size("1", Some("gb")), Ok(1_000_000_512));
        assert_eq!(parse_size("4096", Some("Bytes")), Ok(4096));
        assert_eq!(parse_size("4096", Some("BYTE")), Ok(4096));
        assert_eq!(parse_size("1", Some(" KiB\n\t")), Ok(1024));
        for odd in ["KiB\u{b}", "\u{a0}KiB", "Ki B"] {
            assert_eq!(
                parse_size("1", Some(odd)),
                Err(SizeError::UnknownUnit(odd.into())),
                "{odd:?}"
            );
        }
    }

    #[test]
    fn refuses_bad_units_numbers_and_overflow() {
        assert_eq!(
            parse_size("1", Some("XB")),
            Err(SizeError::UnknownUnit("XB".into()))
        );
        assert_eq!(
            parse_size("1", Some("KiBB")),
            Err(SizeError::UnknownUnit("KiBB".into()))
        );
        assert!(matches!(
            parse_size("-1", None),
            Err(SizeError::NotANumber(_))
        ));
        assert!(matches!(
            parse_size("1.5", None),
            Err(SizeError::NotANumber(_))
        ));
        assert!(matches!(
            parse_size("", None),
            Err(SizeError::NotANumber(_))
        ));
        assert_eq!(parse_size("16", Some("EiB")), Err(SizeError::Overflow));
        assert_eq!(
            parse_size("18446744073709551615", Some("b")),
            Err(SizeError::Overflow)
        );
        assert_eq!(
            parse_size("99999999999999999999999", None),
            Err(SizeError::Overflow)
        );
    }
}
