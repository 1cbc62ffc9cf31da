//! CPU: `cpu.shares`, CFS quota, and their cgroup v2 forms (`cpu.weight`, `cpu.max`).

use super::MilliCpu;
use std::fmt;

/// Smallest `cpu.shares` the kernel accepts; kubelet's `MinShares`.
pub const MIN_SHARES: u64 = 2;
/// Largest `cpu.shares`; kubelet's `MaxShares`.
pub const MAX_SHARES: u64 = 262_144;
/// kubelet's default CFS period, in microseconds.
pub const CFS_PERIOD_US: u64 = 100_000;
/// kubelet's smallest CFS quota, in microseconds (`MinQuotaPeriod`).
pub const MIN_QUOTA_US: u64 = 1_000;

/// `cpu.shares` for a CPU request: `clamp(milli × 1024 / 1000, 2, 262144)`; no request → 2.
///
/// ```
/// use cgroupfold::math::{MilliCpu, cpu_shares};
/// assert_eq!(cpu_shares(Some(MilliCpu(1000))), 1024);
/// assert_eq!(cpu_shares(None), 2);
/// ```
pub fn cpu_shares(request: Option<MilliCpu>) -> u64 {
    let milli = request.map_or(0, |m| m.0);
    if milli == 0 {
        return MIN_SHARES;
    }
    (milli.saturating_mul(1024) / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// A CFS bandwidth limit.
///
/// ```
/// use cgroupfold::math::CpuQuota;
/// assert_eq!(CpuQuota::Unlimited.v1_quota_us(), -1);
/// assert_eq!(CpuQuota::Micros(50_000).v2_max(), "50000 100000");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CpuQuota {
    /// No limit (`cpu.cfs_quota_us = -1`, `cpu.max = "max 100000"`).
    Unlimited,
    /// At most this many microseconds per [`CFS_PERIOD_US`].
    Micros(u64),
}

impl CpuQuota {
    /// The value for v1 `cpu.cfs_quota_us`.
    ///
    /// ```
    /// assert_eq!(cgroupfold::math::CpuQuota::Micros(1000).v1_quota_us(), 1000);
    /// ```
    pub fn v1_quota_us(self) -> i64 {
        match self {
            CpuQuota::Unlimited => -1,
            CpuQuota::Micros(us) => i64::try_from(us).unwrap_or(i64::MAX),
        }
    }

    /// The line for v2 `cpu.max`: `"<quota> <period>"` or `"max <period>"`.
    ///
    /// ```
    /// assert_eq!(cgroupfold::math::CpuQuota::Unlimited.v2_max(), "max 100000");
    /// ```
    pub fn v2_max(self) -> String {
        match self {
            CpuQuota::Unlimited => format!("max {CFS_PERIOD_US}"),
            CpuQuota::Micros(us) => format!("{us} {CFS_PERIOD_US}"),
        }
    }
}

impl fmt::Display for CpuQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.v2_max())
    }
}

/// CFS quota for a CPU limit: `milli × 100000 / 1000` µs, at least 1000 µs; no (or zero) limit
/// → unlimited, as kubelet's `MilliCPUToQuota` returns 0 ("do not set") then.
///
/// ```
/// use cgroupfold::math::{CpuQuota, MilliCpu, cfs_quota};
/// assert_eq!(cfs_quota(Some(MilliCpu(250))), CpuQuota::Micros(25_000));
/// assert_eq!(cfs_quota(Some(MilliCpu(1))), CpuQuota::Micros(1_000));
/// ```
pub fn cfs_quota(limit: Option<MilliCpu>) -> CpuQuota {
    match limit {
        None | Some(MilliCpu(0)) => CpuQuota::Unlimited,
        Some(MilliCpu(milli)) => {
            CpuQuota::Micros((milli.saturating_mul(CFS_PERIOD_US) / 1000).max(MIN_QUOTA_US))
        }
    }
}

/// cgroup v2 `cpu.weight` for v1 shares: `1 + ((shares − 2) × 9999) / 262142` (runc's and
/// kubelet's conversion); shares outside [2, 262144] are clamped first.
///
/// ```
/// assert_eq!(cgroupfold::math::cpu_weight(1024), 39);
/// ```
pub fn cpu_weight(shares: u64) -> u64 {
    let shares = shares.clamp(MIN_SHARES, MAX_SHARES);
    1 + ((shares - 2) * 9999) / 262_142
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_shares_table() {
        for (req, want) in [
            (None, 2),
            (Some(0), 2),
            (Some(1), 2),
            (Some(2), 2),
            (Some(3), 3),
            (Some(100), 102),
            (Some(1000), 1024),
            (Some(256_000), 262_144),
            (Some(1_000_000), 262_144),
            (Some(u64::MAX), 262_144),
        ] {
            assert_eq!(cpu_shares(req.map(MilliCpu)), want, "{req:?}");
        }
    }

    #[test]
    fn cfs_quota_table() {
        for (limit, want) in [
            (None, CpuQuota::Unlimited),
            (Some(0), CpuQuota::Unlimited),
            (Some(1), CpuQuota::Micros(1_000)),
            (Some(10), CpuQuota::Micros(1_000)),
            (Some(11), CpuQuota::Micros(1_100)),
            (Some(1000), CpuQuota::Micros(100_000)),
            (Some(64_000), CpuQuota::Micros(6_400_000)),
            (Some(u64::MAX), CpuQuota::Micros(u64::MAX / 1000)),
        ] {
            assert_eq!(cfs_quota(limit.map(MilliCpu)), want, "{limit:?}");
        }
    }

    #[test]
    fn v1_and_v2_quota_renderings() {
        assert_eq!(CpuQuota::Unlimited.v1_quota_us(), -1);
        assert_eq!(CpuQuota::Micros(100_000).v1_quota_us(), 100_000);
        assert_eq!(CpuQuota::Micros(u64::MAX).v1_quota_us(), i64::MAX);
        assert_eq!(CpuQuota::Unlimited.v2_max(), "max 100000");
        assert_eq!(CpuQuota::Micros(1_000).v2_max(), "1000 100000");
    }

    #[test]
    fn cpu_weight_table() {
        for (shares, want) in [
            (0, 1),
            (2, 1),
            (3, 1),
            (102, 4),
            (1024, 39),
            (262_144, 10_000),
            (u64::MAX, 10_000),
        ] {
            assert_eq!(cpu_weight(shares), want, "{shares}");
        }
    }
}
