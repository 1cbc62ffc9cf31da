//! `oom_score_adj` per QoS class (kubelet's `GetContainerOOMScoreAdjust`).

use super::{Bytes, QosClass};

/// Guaranteed containers' `oom_score_adj`.
pub const GUARANTEED_OOM_SCORE_ADJ: i32 = -997;
/// BestEffort containers' `oom_score_adj`.
pub const BEST_EFFORT_OOM_SCORE_ADJ: i32 = 1000;

/// `oom_score_adj` for a container of a pod in `qos` requesting `memory_request` on a node with
/// `memory_capacity`.
///
/// Burstable: `1000 − (1000 × request) / capacity`, raised to at least `1000 − 997 = 3` and
/// lowered from 1000 to 999. The kubernetes.io table writes the floor as 2; kubelet's code
/// (`if adj < 1000 + guaranteedOOMScoreAdj { return 1000 + guaranteedOOMScoreAdj }`) gives 3,
/// and we follow the code because that is what runs. A zero capacity is treated as 1 byte.
///
/// ```
/// use cgroupfold::math::{Bytes, QosClass, oom_score_adj};
/// assert_eq!(oom_score_adj(QosClass::Burstable, Bytes::gib(1), Bytes::gib(4)), 750);
/// assert_eq!(oom_score_adj(QosClass::Guaranteed, Bytes(0), Bytes::gib(4)), -997);
/// ```
pub fn oom_score_adj(qos: QosClass, memory_request: Bytes, memory_capacity: Bytes) -> i32 {
    match qos {
        QosClass::Guaranteed => GUARANTEED_OOM_SCORE_ADJ,
        QosClass::BestEffort => BEST_EFFORT_OOM_SCORE_ADJ,
        QosClass::Burstable => {
            let capacity = u128::from(memory_capacity.0.max(1));
            let used = (1000 * u128::from(memory_request.0)) / capacity;
            let adj = 1000i128 - used.min(2000) as i128;
            let floor = i128::from(1000 + GUARANTEED_OOM_SCORE_ADJ);
            if adj < floor {
                floor as i32
            } else if adj == i128::from(BEST_EFFORT_OOM_SCORE_ADJ) {
                BEST_EFFORT_OOM_SCORE_ADJ - 1
            } else {
                adj as i32
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_score_adj_table() {
        let cap = Bytes::gib(8);
        for (qos, req, want) in [
            (QosClass::Guaranteed, Bytes(0), -997),
            (QosClass::Guaranteed, cap, -997),
            (QosClass::BestEffort, Bytes(0), 1000),
            (QosClass::Burstable, Bytes(0), 999),
            (QosClass::Burstable, Bytes(1), 999),
            (QosClass::Burstable, Bytes::gib(1), 875),
            (QosClass::Burstable, Bytes::gib(4), 500),
            (QosClass::Burstable, Bytes(cap.0 / 1000 * 997), 4),
            (QosClass::Burstable, Bytes(cap.0 / 1000 * 998), 3),
            (QosClass::Burstable, cap, 3),
            (QosClass::Burstable, Bytes(u64::MAX), 3),
        ] {
            assert_eq!(oom_score_adj(qos, req, cap), want, "{qos} {req:?}");
        }
    }

    #[test]
    fn zero_capacity_does_not_divide_by_zero() {
        assert_eq!(oom_score_adj(QosClass::Burstable, Bytes(5), Bytes(0)), 3);
    }
}
