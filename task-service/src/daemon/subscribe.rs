//! containerd's Events service on the daemon's socket: `Subscribe` streams the task events (what
//! `shimlessctl events` follows), with containerd's filter syntax for the common cases.

use crate::api::containerd::services::events::v1 as pb;
use crate::events::{EventBus, Received};
use futures_lite::Stream;
use std::pin::Pin;
use tonic::{Request, Response, Status};

/// The Events service: `Subscribe` over the daemon's [`EventBus`]; `Publish` and `Forward`
/// (containerd's own ingestion calls) are not the daemon's to take.
#[derive(Debug, Clone)]
pub(crate) struct Events {
    pub bus: EventBus,
}

/// One filter of a `SubscribeRequest`: `topic==/tasks/exit`, `namespace!=k8s.io`, with or
/// without quotes around the value. Several filters are alternatives (containerd's rule).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Filter {
    field: Field,
    equal: bool,
    value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Topic,
    Namespace,
}

impl Filter {
    fn parse(text: &str) -> Result<Filter, Status> {
        let (field, equal, value) = if let Some((f, v)) = text.split_once("==") {
            (f, true, v)
        } else if let Some((f, v)) = text.split_once("!=") {
            (f, false, v)
        } else {
            return Err(Status::invalid_argument(format!(
                "filter {text:?} is not `field==value` or `field!=value`"
            )));
        };
        let field = match field.trim() {
            "topic" => Field::Topic,
            "namespace" => Field::Namespace,
            other => {
                return Err(Status::invalid_argument(format!(
                    "filter {text:?}: field {other:?} is not `topic` or `namespace`"
                )));
            }
        };
        let value = value.trim().trim_matches('"').to_string();
        Ok(Filter {
            field,
            equal,
            value,
        })
    }

    fn matches(&self, namespace: &str, topic: &str) -> bool {
        let found = match self.field {
            Field::Topic => topic,
            Field::Namespace => namespace,
        };
        (found == self.value) == self.equal
    }
}

type EnvelopeStream = Pin<Box<dyn Stream<Item = Result<pb::Envelope, Status>> + Send>>;

#[tonic::async_trait]
impl pb::events_server::Events for Events {
    async fn publish(&self, _req: Request<pb::PublishRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented(
            "shimless publishes its own task events; Publish is containerd's",
        ))
    }

    async fn forward(&self, _req: Request<pb::ForwardRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented(
            "shimless forwards events to containerd; Forward is containerd's",
        ))
    }

    type SubscribeStream = EnvelopeStream;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<EnvelopeStream>, Status> {
        let filters = req
            .into_inner()
            .filters
            .iter()
            .map(|f| Filter::parse(f))
            .collect::<Result<Vec<_>, _>>()?;
        let subscription = self.bus.subscribe();
        let stream = futures_lite::stream::unfold(
            (subscription, filters),
            |(mut sub, filters)| async move {
                loop {
                    match sub.next().await? {
                        Received::Lagged(n) => {
                            let status = Status::data_loss(format!(
                                "this subscriber fell {n} events behind and lost them; subscribe \
                                 again"
                            ));
                            return Some((Err(status), (sub, filters)));
                        }
                        Received::Event(envelope) => {
                            let topic = envelope.event.topic();
                            let ns = envelope.namespace.as_str();
                            if !filters.is_empty() && !filters.iter().any(|f| f.matches(ns, topic))
                            {
                                continue;
                            }
                            let out = envelope.to_wire();
                            return Some((Ok(out), (sub, filters)));
                        }
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_match_like_containerds() {
        let f = Filter::parse("topic==\"/tasks/exit\"").unwrap();
        assert!(f.matches("default", "/tasks/exit"));
        assert!(!f.matches("default", "/tasks/start"));
        let f = Filter::parse("namespace!=k8s.io").unwrap();
        assert!(f.matches("default", "/tasks/exit"));
        assert!(!f.matches("k8s.io", "/tasks/exit"));
        let err = Filter::parse("topic~=/tasks").unwrap_err();
        assert!(err.message().contains("topic~=/tasks"), "{}", err.message());
        let err = Filter::parse("id==web").unwrap_err();
        assert!(err.message().contains("\"id\""), "{}", err.message());
    }
}
