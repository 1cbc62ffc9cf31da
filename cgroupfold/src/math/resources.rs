//! A container's requests and limits, as the API server stores them after defaulting.

use super::{Bytes, MilliCpu};

/// Requests and limits of one container (or a pod's overhead).
///
/// `None` means "not set". As the API server does, [`Resources::defaulted`] copies a limit into
/// a missing request; kubelet only ever sees defaulted values.
///
/// ```
/// use cgroupfold::math::{Bytes, MilliCpu, Resources};
/// let r = Resources { cpu_limit: Some(MilliCpu(500)), ..Resources::default() }.defaulted();
/// assert_eq!(r.cpu_request, Some(MilliCpu(500)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    /// `requests.cpu`.
    pub cpu_request: Option<MilliCpu>,
    /// `limits.cpu`.
    pub cpu_limit: Option<MilliCpu>,
    /// `requests.memory`.
    pub memory_request: Option<Bytes>,
    /// `limits.memory`.
    pub memory_limit: Option<Bytes>,
}

impl Resources {
    /// Requests equal to limits for both CPU and memory (a Guaranteed container).
    ///
    /// ```
    /// use cgroupfold::math::{Bytes, MilliCpu, Resources};
    /// let r = Resources::guaranteed(MilliCpu(1000), Bytes::mib(256));
    /// assert_eq!(r.memory_request, r.memory_limit);
    /// ```
    pub fn guaranteed(cpu: MilliCpu, memory: Bytes) -> Self {
        Resources {
            cpu_request: Some(cpu),
            cpu_limit: Some(cpu),
            memory_request: Some(memory),
            memory_limit: Some(memory),
        }
    }

    /// The API server's defaulting: a missing request takes the limit's value.
    ///
    /// ```
    /// use cgroupfold::math::{Bytes, Resources};
    /// let r = Resources { memory_limit: Some(Bytes(7)), ..Default::default() }.defaulted();
    /// assert_eq!(r.memory_request, Some(Bytes(7)));
    /// ```
    pub fn defaulted(self) -> Self {
        Resources {
            cpu_request: self.cpu_request.or(self.cpu_limit),
            memory_request: self.memory_request.or(self.memory_limit),
            ..self
        }
    }
}
