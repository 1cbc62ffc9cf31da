//! A pod as the layout sees it: ids and resources.

use crate::math::PodResources;

/// A pod as the layout needs it: identity, container ids and resources.
///
/// ```
/// use cgroupfold::layout::Pod;
/// let pod = Pod::new("uid-1", "sandbox-1", vec![("c1".into(), Default::default())]);
/// assert_eq!(pod.resources.containers.len(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// The pod's uid.
    pub uid: String,
    /// The sandbox (pause) container's id.
    pub sandbox_id: String,
    /// App container ids, in the order of `resources.containers`.
    pub container_ids: Vec<String>,
    /// Init container ids, in the order of `resources.init_containers`.
    pub init_container_ids: Vec<String>,
    /// Requests, limits, overhead and pids limit.
    pub resources: PodResources,
}

impl Pod {
    /// A pod with these app containers and nothing else.
    ///
    /// ```
    /// let pod = cgroupfold::layout::Pod::new("u", "s", vec![]);
    /// assert!(pod.container_ids.is_empty());
    /// ```
    pub fn new(
        uid: &str,
        sandbox_id: &str,
        containers: Vec<(String, crate::math::Resources)>,
    ) -> Self {
        let (ids, res) = containers.into_iter().unzip();
        Pod {
            uid: uid.to_owned(),
            sandbox_id: sandbox_id.to_owned(),
            container_ids: ids,
            init_container_ids: Vec::new(),
            resources: PodResources {
                containers: res,
                ..Default::default()
            },
        }
    }
}
