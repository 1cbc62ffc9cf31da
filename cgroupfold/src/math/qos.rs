//! The pod QoS class (kubelet's `GetPodQOS`).

use super::Resources;
use std::fmt;

/// A pod's quality-of-service class.
///
/// ```
/// use cgroupfold::math::{QosClass, Resources, qos_class};
/// assert_eq!(qos_class(&[Resources::default()]), QosClass::BestEffort);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QosClass {
    /// Every container has CPU and memory limits equal to its requests.
    Guaranteed,
    /// Anything between.
    Burstable,
    /// No container has any (non-zero) request or limit.
    BestEffort,
}

impl fmt::Display for QosClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        })
    }
}

/// The QoS class of a pod whose containers (app and init alike) have these resources.
///
/// Like kubelet, a zero quantity counts as not set, and requests are defaulted from limits first.
///
/// ```
/// use cgroupfold::math::{Bytes, MilliCpu, QosClass, Resources, qos_class};
/// let g = Resources::guaranteed(MilliCpu(100), Bytes::mib(64));
/// assert_eq!(qos_class(&[g, g]), QosClass::Guaranteed);
/// let b = Resources { cpu_request: Some(MilliCpu(100)), ..Default::default() };
/// assert_eq!(qos_class(&[g, b]), QosClass::Burstable);
/// ```
pub fn qos_class(containers: &[Resources]) -> QosClass {
    let mut any_set = false;
    let mut guaranteed = true;
    for r in containers.iter().map(|r| r.defaulted()) {
        let cpu_req = r.cpu_request.filter(|q| q.0 > 0);
        let cpu_lim = r.cpu_limit.filter(|q| q.0 > 0);
        let mem_req = r.memory_request.filter(|q| q.0 > 0);
        let mem_lim = r.memory_limit.filter(|q| q.0 > 0);
        any_set |= cpu_req.is_some() || cpu_lim.is_some() || mem_req.is_some() || mem_lim.is_some();
        guaranteed &=
            cpu_lim.is_some() && mem_lim.is_some() && cpu_req == cpu_lim && mem_req == mem_lim;
    }
    if !any_set {
        QosClass::BestEffort
    } else if guaranteed {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::{Bytes, MilliCpu};

    #[test]
    fn qos_class_table() {
        let none = Resources::default();
        let g = Resources::guaranteed(MilliCpu(1000), Bytes::gib(1));
        let limits_only = Resources {
            cpu_limit: Some(MilliCpu(1)),
            memory_limit: Some(Bytes(1)),
            ..none
        };
        let zeros = Resources::guaranteed(MilliCpu(0), Bytes(0));
        let cpu_only = Resources {
            cpu_request: Some(MilliCpu(1)),
            cpu_limit: Some(MilliCpu(1)),
            ..none
        };
        let req_below_limit = Resources {
            cpu_request: Some(MilliCpu(500)),
            ..g
        };
        let cases: &[(&str, &[Resources], QosClass)] = &[
            ("no containers", &[], QosClass::BestEffort),
            ("nothing set", &[none, none], QosClass::BestEffort),
            (
                "zero quantities count as unset",
                &[zeros],
                QosClass::BestEffort,
            ),
            ("requests equal limits", &[g, g], QosClass::Guaranteed),
            (
                "limits only default the requests",
                &[limits_only],
                QosClass::Guaranteed,
            ),
            ("cpu only", &[cpu_only], QosClass::Burstable),
            (
                "request below limit",
                &[req_below_limit],
                QosClass::Burstable,
            ),
            ("one guaranteed, one empty", &[g, none], QosClass::Burstable),
        ];
        for (name, containers, want) in cases {
            assert_eq!(qos_class(containers), *want, "{name}");
        }
    }
}
