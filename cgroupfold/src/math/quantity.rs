//! Typed quantities: milli-CPU and bytes, and Kubernetes quantity strings.

use std::fmt;
use std::str::FromStr;

/// CPU in thousandths of a core (`"500m"` is `MilliCpu(500)`, `"2"` is `MilliCpu(2000)`).
///
/// ```
/// use cgroupfold::math::MilliCpu;
/// assert_eq!("250m".parse::<MilliCpu>().unwrap(), MilliCpu(250));
/// assert_eq!("1.5".parse::<MilliCpu>().unwrap(), MilliCpu(1500));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MilliCpu(pub u64);

/// Memory in bytes (`"1Gi"` is `Bytes(1 << 30)`, `"128M"` is `Bytes(128_000_000)`).
///
/// ```
/// use cgroupfold::math::Bytes;
/// assert_eq!("1Gi".parse::<Bytes>().unwrap(), Bytes(1 << 30));
/// assert_eq!("128M".parse::<Bytes>().unwrap(), Bytes(128_000_000));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

impl MilliCpu {
    /// Whole cores, as `MilliCpu`.
    ///
    /// ```
    /// assert_eq!(cgroupfold::math::MilliCpu::cores(2).0, 2000);
    /// ```
    pub const fn cores(n: u64) -> Self {
        MilliCpu(n.saturating_mul(1000))
    }
}

impl Bytes {
    /// `n` mebibytes.
    ///
    /// ```
    /// assert_eq!(cgroupfold::math::Bytes::mib(1).0, 1 << 20);
    /// ```
    pub const fn mib(n: u64) -> Self {
        Bytes(n.saturating_mul(1 << 20))
    }
    /// `n` gibibytes.
    ///
    /// ```
    /// assert_eq!(cgroupfold::math::Bytes::gib(1).0, 1 << 30);
    /// ```
    pub const fn gib(n: u64) -> Self {
        Bytes(n.saturating_mul(1 << 30))
    }
}

impl fmt::Display for MilliCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}m", self.0)
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a Kubernetes quantity string was refused.
///
/// ```
/// use cgroupfold::math::{Bytes, QuantityError};
/// assert!(matches!("12Qi".parse::<Bytes>(), Err(QuantityError::UnknownSuffix { .. })));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Empty input.
    #[error("empty quantity: write a number such as \"500m\", \"1\", \"128Mi\" or \"1G\"")]
    Empty,
    /// The numeric part is not a non-negative decimal.
    #[error(
        "{input:?} is not a quantity: the number part must be a non-negative decimal such as \"0.5\" or \"128\""
    )]
    BadNumber {
        /// The whole input.
        input: String,
    },
    /// The suffix is not one Kubernetes knows (or not valid for this resource).
    #[error(
        "{input:?} has unknown suffix {suffix:?}: use m (CPU), k/M/G/T/P/E or Ki/Mi/Gi/Ti/Pi/Ei"
    )]
    UnknownSuffix {
        /// The whole input.
        input: String,
        /// The suffix that was not understood.
        suffix: String,
    },
    /// The value does not fit in 64 bits.
    #[error("{input:?} is too large to represent in 64 bits")]
    Overflow {
        /// The whole input.
        input: String,
    },
    /// The value has a fraction finer than the unit (e.g. `"0.5m"` CPU or `"0.5"` bytes).
    #[error("{input:?} is finer than one {unit}: round it to a whole {unit}")]
    TooPrecise {
        /// The whole input.
        input: String,
        /// The smallest unit ("millicore" or "byte").
        unit: &'static str,
    },
}

/// Parses `input` into an integer count of `scale`-ths of the base unit, with the suffix's factor
/// given as a numerator. Kubernetes rounds sub-unit values up; we refuse them instead so nothing
/// silently changes a limit.
fn parse_scaled(input: &str, allow_milli: bool, unit: &'static str) -> Result<u64, QuantityError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    // (multiplier, divisor) turning the number into the target unit.
    let (mul, div): (u128, u128) = match suffix {
        "" => (1, 1),
        "m" if allow_milli => (1, 1000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        _ => {
            return Err(QuantityError::UnknownSuffix {
                input: input.to_owned(),
                suffix: suffix.to_owned(),
            });
        }
    };
    let bad = || QuantityError::BadNumber {
        input: input.to_owned(),
    };
    let (int_part, frac_part) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return Err(bad());
    }
    if frac_part.len() > 18 {
        return Err(QuantityError::TooPrecise {
            input: input.to_owned(),
            unit,
        });
    }
    let overflow = || QuantityError::Overflow {
        input: input.to_owned(),
    };
    let int: u128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse::<u64>().map_err(|_| overflow())?.into()
    };
    let frac_den: u128 = 10u128.pow(frac_part.len() as u32);
    let frac: u128 = if frac_part.is_empty() {
        0
    } else {
        frac_part.parse().map_err(|_| bad())?
    };
    // value = (int + frac/frac_den) * mul / div, exactly.
    let numer = (int * frac_den + frac)
        .checked_mul(mul)
        .ok_or_else(overflow)?;
    let denom = frac_den * div;
    if numer % denom != 0 {
        return Err(QuantityError::TooPrecise {
            input: input.to_owned(),
            unit,
        });
    }
    u64::try_from(numer / denom).map_err(|_| overflow())
}

impl FromStr for MilliCpu {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() {
            return Err(QuantityError::Empty);
        }
        if let Some(milli) = t.strip_suffix('m') {
            return parse_scaled(milli, false, "millicore")
                .map(MilliCpu)
                .map_err(|e| rename(e, s));
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, suffix) = t.split_at(split);
        if !suffix.is_empty() {
            return Err(QuantityError::UnknownSuffix {
                input: s.to_owned(),
                suffix: suffix.to_owned(),
            });
        }
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(QuantityError::BadNumber {
                input: s.to_owned(),
            });
        }
        parse_scaled_milli(num, s).map(MilliCpu)
    }
}

/// `num` cores → millicores, exactly.
fn parse_scaled_milli(num: &str, input: &str) -> Result<u64, QuantityError> {
    let (i, f) = num.split_once('.').unwrap_or((num, ""));
    if f.len() > 3 {
        return Err(QuantityError::TooPrecise {
            input: input.to_owned(),
            unit: "millicore",
        });
    }
    let padded = format!("{i}{f:0<3}");
    parse_scaled(&padded, false, "millicore").map_err(|e| rename(e, input))
}

fn rename(e: QuantityError, input: &str) -> QuantityError {
    let input = input.to_owned();
    match e {
        QuantityError::Empty => QuantityError::Empty,
        QuantityError::BadNumber { .. } => QuantityError::BadNumber { input },
        QuantityError::UnknownSuffix { suffix, .. } => {
            QuantityError::UnknownSuffix { input, suffix }
        }
        QuantityError::Overflow { .. } => QuantityError::Overflow { input },
        QuantityError::TooPrecise { unit, .. } => QuantityError::TooPrecise { input, unit },
    }
}

impl FromStr for Bytes {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_scaled(s, true, "byte").map(Bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_parse_to_millicores() {
        for (s, m) in [
            ("0", 0),
            ("1m", 1),
            ("500m", 500),
            ("1", 1000),
            ("0.1", 100),
            ("2.5", 2500),
            (".5", 500),
            ("64", 64000),
        ] {
            assert_eq!(s.parse::<MilliCpu>(), Ok(MilliCpu(m)), "{s}");
        }
    }

    #[test]
    fn bad_cpu_quantities_are_typed_errors() {
        assert_eq!("".parse::<MilliCpu>(), Err(QuantityError::Empty));
        assert!(matches!(
            "0.0005".parse::<MilliCpu>(),
            Err(QuantityError::TooPrecise { .. })
        ));
        assert!(matches!(
            "1Gi".parse::<MilliCpu>(),
            Err(QuantityError::UnknownSuffix { .. })
        ));
        assert!(matches!(
            "abc".parse::<MilliCpu>(),
            Err(QuantityError::UnknownSuffix { .. })
        ));
        assert!(matches!(
            "1.2.3".parse::<MilliCpu>(),
            Err(QuantityError::BadNumber { .. })
        ));
        assert!(matches!(
            "99999999999999999999".parse::<MilliCpu>(),
            Err(QuantityError::Overflow { .. })
        ));
    }

    #[test]
    fn memory_quantities_parse_to_bytes() {
        for (s, b) in [
            ("0", 0u64),
            ("1", 1),
            ("128M", 128_000_000),
            ("128Mi", 128 << 20),
            ("1Gi", 1 << 30),
            ("1.5Gi", 3 << 29),
            ("1k", 1000),
            ("1Ki", 1024),
            ("8Ei", 1 << 63),
            ("1000m", 1),
        ] {
            assert_eq!(s.parse::<Bytes>(), Ok(Bytes(b)), "{s}");
        }
    }

    #[test]
    fn bad_memory_quantities_are_typed_errors() {
        assert!(matches!(
            "16Ei".parse::<Bytes>(),
            Err(QuantityError::Overflow { .. })
        ));
        assert!(matches!(
            "1.5".parse::<Bytes>(),
            Err(QuantityError::TooPrecise { .. })
        ));
        assert!(matches!(
            "1Xi".parse::<Bytes>(),
            Err(QuantityError::UnknownSuffix { .. })
        ));
        assert!(matches!(
            "Gi".parse::<Bytes>(),
            Err(QuantityError::BadNumber { .. })
        ));
        let err = "1Xi".parse::<Bytes>().unwrap_err().to_string();
        assert!(err.contains("\"1Xi\"") && err.contains("Ki/Mi/Gi"), "{err}");
    }
}
