//! Kubernetes resource quantities (`500m`, `8`, `32Gi`, `1e3`) as exact
//! integers in thousandths, so allocatable CPU and memory of many nodes sum
//! without rounding, and back to a canonical string.

/// The value of `q` times 1000, rounded up (as Kubernetes rounds a
/// quantity's milli-value).
pub fn parse_milli(q: &str) -> Result<i128, String> {
    let bad = || format!("{q:?} is not a Kubernetes quantity (e.g. 500m, 8, 32Gi)");
    let s = q.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (negative, digits) = match number.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part
            .chars()
            .chain(frac_part.chars())
            .all(|c| c.is_ascii_digit())
        || frac_part.len() > 9
    {
        return Err(bad());
    }
    let mantissa: i128 = format!("{int_part}{frac_part}")
        .parse()
        .map_err(|_| bad())?;
    // value = mantissa / 10^frac * num / den; milli = value * 1000.
    let mut num: i128 = 1000;
    let mut den: i128 = 10i128.pow(frac_part.len() as u32);
    let binary = |p: u32| 1024i128.pow(p);
    match suffix {
        "" => {}
        "n" => den *= 1_000_000_000,
        "u" => den *= 1_000_000,
        "m" => den *= 1000,
        "k" => num *= 1000,
        "M" => num *= 1_000_000,
        "G" => num *= 1_000_000_000,
        "T" => num *= 1_000_000_000_000,
        "P" => num *= 1_000_000_000_000_000,
        "E" => num *= 1_000_000_000_000_000_000,
        "Ki" => num *= binary(1),
        "Mi" => num *= binary(2),
        "Gi" => num *= binary(3),
        "Ti" => num *= binary(4),
        "Pi" => num *= binary(5),
        "Ei" => num *= binary(6),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().map_err(|_| bad())?;
            if e.unsigned_abs() > 18 {
                return Err(bad());
            }
            if e >= 0 {
                num *= 10i128.pow(e as u32);
            } else {
                den *= 10i128.pow(e.unsigned_abs());
            }
        }
        _ => return Err(bad()),
    }
    let product = mantissa.checked_mul(num).ok_or_else(bad)?;
    let milli = (product + den - 1) / den;
    Ok(if negative { -milli } else { milli })
}

/// CPU in thousandths of a core as a quantity: whole cores (`8`) or
/// millicores (`7500m`).
pub fn cpu_quantity(milli: i128) -> String {
    if milli % 1000 == 0 {
        format!("{}", milli / 1000)
    } else {
        format!("{milli}m")
    }
}

/// Memory in thousandths of a byte as a quantity in the largest binary
/// unit that divides it (`64Gi`, `1536Mi`, bytes otherwise).
pub fn memory_quantity(milli: i128) -> String {
    let bytes = (milli + 999) / 1000;
    for (unit, size) in [
        ("Ti", 1i128 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes != 0 && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_suffix_exactly() {
        let cases = [
            ("8", 8000),
            ("500m", 500),
            ("0.5", 500),
            ("1.5k", 1_500_000),
            ("2Ki", 2_048_000),
            ("16Gi", 16 * (1 << 30) * 1000),
            ("1e3", 1_000_000),
            ("1E-3", 1),
            ("100n", 1),
            ("-1", -1000),
            ("+2", 2000),
        ];
        for (q, want) in cases {
            assert_eq!(parse_milli(q), Ok(want), "{q}");
        }
        for bad in ["", "abc", "1.2.3", "5X", "Gi", "1e", "."] {
            assert!(parse_milli(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn formats_canonically() {
        assert_eq!(cpu_quantity(8000), "8");
        assert_eq!(cpu_quantity(7500), "7500m");
        assert_eq!(memory_quantity(parse_milli("64Gi").unwrap()), "64Gi");
        assert_eq!(memory_quantity(parse_milli("1536Mi").unwrap()), "1536Mi");
        assert_eq!(memory_quantity(parse_milli("1000").unwrap()), "1000");
        assert_eq!(memory_quantity(0), "0");
    }
}
