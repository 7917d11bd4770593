//! What starts a reconcile cycle: the poll timer, the webhook and the file watcher feed one
//! slot holding at most one pending request. A burst of triggers while a cycle runs leaves a
//! single request behind, so it costs one more cycle, never one per trigger; and since the
//! daemon takes requests one at a time, cycles never overlap.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::reconcile::Trigger;

/// One request for a cycle: what asked for it and why (recorded in the cycle's span).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: Trigger,
    pub reason: String,
    /// How many more requests arrived while this one was pending (coalesced into it).
    pub coalesced: u32,
}

#[derive(Default)]
struct Slot {
    pending: Mutex<Option<Request>>,
    notify: Notify,
}

/// The sending side, cloned into the webhook handler and the watcher.
#[derive(Clone)]
pub struct Triggers {
    slot: Arc<Slot>,
}

/// The receiving side, owned by the daemon loop.
pub struct Pending {
    slot: Arc<Slot>,
}

pub fn channel() -> (Triggers, Pending) {
    let slot = Arc::new(Slot::default());
    (Triggers { slot: slot.clone() }, Pending { slot })
}

impl Triggers {
    /// Asks for a cycle. When one is already pending, this one joins it (the first reason is
    /// kept: it is the one that waited longest).
    pub fn request(&self, kind: Trigger, reason: impl Into<String>) {
        let Ok(mut pending) = self.slot.pending.lock() else {
            return;
        };
        match pending.as_mut() {
            Some(existing) => existing.coalesced = existing.coalesced.saturating_add(1),
            None => {
                *pending = Some(Request {
                    kind,
                    reason: reason.into(),
                    coalesced: 0,
                });
            }
        }
        drop(pending);
        // notify_one stores a permit when nobody waits, so a request made while a cycle runs
        // is seen right after it.
        self.slot.notify.notify_one();
    }
}

impl Pending {
    /// The pending request, if any, without waiting.
    pub fn take(&self) -> Option<Request> {
        self.slot.pending.lock().ok().and_then(|mut p| p.take())
    }

    /// Waits for a request.
    pub async fn next(&self) -> Request {
        loop {
            if let Some(request) = self.take() {
                return request;
            }
            self.slot.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_coalesces_into_one_request() {
        let (tx, rx) = channel();
        for i in 0..50 {
            tx.request(Trigger::Webhook, format!("push {i}"));
        }
        let first = rx.next().await;
        assert_eq!(first.reason, "push 0");
        assert_eq!(first.coalesced, 49);
        assert_eq!(rx.take(), None);
    }

    #[tokio::test]
    async fn a_request_made_before_waiting_is_not_lost() {
        let (tx, rx) = channel();
        tx.request(Trigger::Watch, "ref moved");
        let got = tokio::time::timeout(std::time::Duration::from_secs(1), rx.next())
            .await
            .expect("the request is delivered");
        assert_eq!(got.kind, Trigger::Watch);
    }

    #[tokio::test]
    async fn a_request_from_another_task_wakes_the_waiter() {
        let (tx, rx) = channel();
        let waiter = tokio::spawn(async move { rx.next().await });
        tokio::task::yield_now().await;
        tx.request(Trigger::Webhook, "push");
        let got = tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!(got.reason, "push");
    }
}
