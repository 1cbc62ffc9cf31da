//! Memory: `memory.limit_in_bytes` (v1) and `memory.max` (v2).

use super::Bytes;
use std::fmt;

/// What v1 reads back as "no limit": 0x7FFFFFFFFFFFF000, the largest signed 64-bit value that
/// is a multiple of the 4 KiB page (the kernel rounds `-1` down to it).
pub const V1_UNLIMITED: u64 = 9_223_372_036_854_771_712;

/// A memory limit.
///
/// ```
/// use cgroupfold::math::{Bytes, MemoryLimit};
/// assert_eq!(MemoryLimit::Unlimited.v2_max(), "max");
/// assert_eq!(MemoryLimit::Bytes(Bytes(4096)).v1_limit_in_bytes(), 4096);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemoryLimit {
    /// No limit.
    Unlimited,
    /// At most this many bytes.
    Bytes(Bytes),
}

impl MemoryLimit {
    /// The value v1 `memory.limit_in_bytes` holds for this limit; unlimited (and anything larger
    /// than it) is [`V1_UNLIMITED`].
    ///
    /// ```
    /// use cgroupfold::math::{MemoryLimit, V1_UNLIMITED};
    /// assert_eq!(MemoryLimit::Unlimited.v1_limit_in_bytes(), V1_UNLIMITED);
    /// ```
    pub fn v1_limit_in_bytes(self) -> u64 {
        match self {
            MemoryLimit::Unlimited => V1_UNLIMITED,
            MemoryLimit::Bytes(b) => b.0.min(V1_UNLIMITED),
        }
    }

    /// The string v1 accepts when writing: `-1` for unlimited, else the byte count.
    ///
    /// ```
    /// assert_eq!(cgroupfold::math::MemoryLimit::Unlimited.v1_write(), "-1");
    /// ```
    pub fn v1_write(self) -> String {
        match self {
            MemoryLimit::Unlimited => "-1".to_owned(),
            MemoryLimit::Bytes(b) => b.0.to_string(),
        }
    }

    /// The line for v2 `memory.max`.
    ///
    /// ```
    /// use cgroupfold::math::{Bytes, MemoryLimit};
    /// assert_eq!(MemoryLimit::Bytes(Bytes(1 << 20)).v2_max(), "1048576");
    /// ```
    pub fn v2_max(self) -> String {
        match self {
            MemoryLimit::Unlimited => "max".to_owned(),
            MemoryLimit::Bytes(b) => b.0.to_string(),
        }
    }

    /// Reads v1 `memory.limit_in_bytes` back: [`V1_UNLIMITED`] and above mean unlimited.
    ///
    /// ```
    /// use cgroupfold::math::{MemoryLimit, V1_UNLIMITED};
    /// assert_eq!(MemoryLimit::from_v1(V1_UNLIMITED), MemoryLimit::Unlimited);
    /// ```
    pub fn from_v1(value: u64) -> Self {
        if value >= V1_UNLIMITED {
            MemoryLimit::Unlimited
        } else {
            MemoryLimit::Bytes(Bytes(value))
        }
    }
}

impl fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.v2_max())
    }
}

/// A container's memory cgroup limit: its `limits.memory`, or unlimited (zero counts as unset,
/// as kubelet never writes a zero limit).
///
/// ```
/// use cgroupfold::math::{Bytes, MemoryLimit, memory_limit};
/// assert_eq!(memory_limit(None), MemoryLimit::Unlimited);
/// assert_eq!(memory_limit(Some(Bytes::mib(128))), MemoryLimit::Bytes(Bytes(128 << 20)));
/// ```
pub fn memory_limit(limit: Option<Bytes>) -> MemoryLimit {
    match limit {
        None | Some(Bytes(0)) => MemoryLimit::Unlimited,
        Some(b) => MemoryLimit::Bytes(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_is_the_largest_page_aligned_i64() {
        assert_eq!(V1_UNLIMITED, 0x7FFF_FFFF_FFFF_F000);
        assert_eq!(V1_UNLIMITED % 4096, 0);
        assert_eq!(V1_UNLIMITED, (i64::MAX as u64) & !4095);
    }

    #[test]
    fn memory_limit_table() {
        for (limit, v1, v2) in [
            (None, V1_UNLIMITED, "max".to_owned()),
            (Some(0), V1_UNLIMITED, "max".to_owned()),
            (Some(1), 1, "1".to_owned()),
            (Some(1 << 30), 1 << 30, (1u64 << 30).to_string()),
            (Some(u64::MAX), V1_UNLIMITED, u64::MAX.to_string()),
        ] {
            let m = memory_limit(limit.map(Bytes));
            assert_eq!(m.v1_limit_in_bytes(), v1, "{limit:?}");
            assert_eq!(m.v2_max(), v2, "{limit:?}");
        }
    }

    #[test]
    fn v1_readback_maps_unlimited() {
        assert_eq!(MemoryLimit::from_v1(V1_UNLIMITED), MemoryLimit::Unlimited);
        assert_eq!(MemoryLimit::from_v1(u64::MAX), MemoryLimit::Unlimited);
        assert_eq!(MemoryLimit::from_v1(4096), MemoryLimit::Bytes(Bytes(4096)));
        assert_eq!(MemoryLimit::Unlimited.v1_write(), "-1");
    }
}
