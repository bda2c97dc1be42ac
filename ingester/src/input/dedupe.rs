//! Logplex retries a frame with the same `Logplex-Frame-Id` when it got no
//! 2xx in time; a frame we already made durable must not be stored twice.
//!
//! The set remembers the last `capacity` acknowledged (drain token, frame id)
//! pairs, and which pairs are in flight right now: a retry that arrives while
//! the first attempt is still being written waits for its outcome instead of
//! writing a second copy.

use std::collections::hash_map::Entry as Slot;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

type Key = (String, String);

enum State {
    /// Being written; the sender reports `true` when acknowledged.
    InFlight(watch::Sender<bool>),
    Acked,
}

struct Inner {
    map: HashMap<Key, State>,
    /// Acknowledged keys, oldest first, for eviction.
    order: VecDeque<Key>,
}

/// The set of recently acknowledged and in-flight frames.
pub struct Dedupe {
    inner: Mutex<Inner>,
    capacity: usize,
}

/// What to do with a request.
pub enum Claim {
    /// First time seen: store it, then `ack` the guard.
    New(ClaimGuard),
    /// Already acknowledged: answer 200 without storing.
    Duplicate,
    /// The same frame is being stored by another request: wait for it.
    Wait(watch::Receiver<bool>),
}

/// Held while a frame is being stored; dropping it without `ack` lets a
/// retry store the frame.
pub struct ClaimGuard {
    dedupe: Arc<Dedupe>,
    key: Option<Key>,
}

impl Dedupe {
    pub fn new(capacity: usize) -> Arc<Dedupe> {
        Arc::new(Dedupe {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
            capacity,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remember frames already durable (found in the write-ahead log at
    /// start-up).
    pub fn seed(&self, frames: impl IntoIterator<Item = Key>) {
        let mut inner = self.lock();
        for key in frames {
            if let Slot::Vacant(v) = inner.map.entry(key.clone()) {
                v.insert(State::Acked);
                inner.order.push_back(key);
            }
        }
        self.evict(&mut inner);
    }

    fn evict(&self, inner: &mut Inner) {
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.map.remove(&old);
            }
        }
    }

    /// Decide about a request; `None` key (no token or no frame id) is
    /// always new.
    pub fn claim(self: &Arc<Self>, key: Option<Key>) -> Claim {
        let Some(key) = key else {
            return Claim::New(ClaimGuard {
                dedupe: Arc::clone(self),
                key: None,
            });
        };
        if self.capacity == 0 {
            return Claim::New(ClaimGuard {
                dedupe: Arc::clone(self),
                key: None,
            });
        }
        let mut inner = self.lock();
        match inner.map.entry(key) {
            Slot::Occupied(o) => match o.get() {
                State::Acked => Claim::Duplicate,
                State::InFlight(tx) => Claim::Wait(tx.subscribe()),
            },
            Slot::Vacant(v) => {
                let key = v.key().clone();
                v.insert(State::InFlight(watch::channel(false).0));
                Claim::New(ClaimGuard {
                    dedupe: Arc::clone(self),
                    key: Some(key),
                })
            }
        }
    }

    /// `claim`, waiting out an in-flight attempt of the same frame.
    pub async fn claim_waiting(self: &Arc<Self>, key: Option<Key>) -> Claim {
        loop {
            match self.claim(key.clone()) {
                Claim::Wait(mut rx) => {
                    // Either it is acknowledged (true) or the attempt ended
                    // without it (sender dropped): claim again to find out.
                    let _ = rx.wait_for(|acked| *acked).await;
                }
                other => return other,
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ClaimGuard {
    /// The frame is durable: remember it and release waiting retries.
    pub fn ack(mut self) {
        let Some(key) = self.key.take() else { return };
        let mut inner = self.dedupe.lock();
        if let Some(State::InFlight(tx)) = inner.map.insert(key.clone(), State::Acked) {
            tx.send_replace(true);
        }
        inner.order.push_back(key);
        self.dedupe.evict(&mut inner);
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            // Not acknowledged: forget the attempt (dropping the sender
            // wakes waiting retries, which then store the frame themselves).
            let mut inner = self.dedupe.lock();
            if matches!(inner.map.get(&key), Some(State::InFlight(_))) {
                inner.map.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(frame: &str) -> Option<Key> {
        Some(("d.token".to_owned(), frame.to_owned()))
    }

    #[test]
    fn acked_frames_are_duplicates_until_evicted() {
        let d = Dedupe::new(2);
        for f in ["a", "b", "c"] {
            match d.claim(key(f)) {
                Claim::New(g) => g.ack(),
                _ => panic!("{f} is new"),
            }
        }
        assert!(matches!(d.claim(key("c")), Claim::Duplicate));
        assert!(matches!(d.claim(key("b")), Claim::Duplicate));
        // "a" fell out of the window.
        assert!(matches!(d.claim(key("a")), Claim::New(_)));
        // Without a token or frame id there is nothing to compare.
        assert!(matches!(d.claim(None), Claim::New(_)));
        assert!(matches!(d.claim(None), Claim::New(_)));
    }

    #[test]
    fn a_failed_attempt_lets_the_retry_store() {
        let d = Dedupe::new(10);
        let Claim::New(g) = d.claim(key("x")) else {
            panic!("new")
        };
        assert!(matches!(d.claim(key("x")), Claim::Wait(_)));
        drop(g);
        assert!(matches!(d.claim(key("x")), Claim::New(_)));
        assert!(d.is_empty());
    }

    #[test]
    fn seeded_frames_are_duplicates() {
        let d = Dedupe::new(10);
        d.seed([("d.token".to_owned(), "s".to_owned())]);
        assert!(matches!(d.claim(key("s")), Claim::Duplicate));
    }

    #[tokio::test]
    async fn a_retry_waits_for_the_attempt_in_flight() {
        let d = Dedupe::new(10);
        let Claim::New(g) = d.claim(key("x")) else {
            panic!("new")
        };
        let d2 = Arc::clone(&d);
        let retry =
            tokio::spawn(
                async move { matches!(d2.claim_waiting(key("x")).await, Claim::Duplicate) },
            );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!retry.is_finished());
        g.ack();
        assert!(retry.await.expect("join"), "the retry must see the ack");

        let Claim::New(g) = d.claim(key("y")) else {
            panic!("new")
        };
        let d2 = Arc::clone(&d);
        let retry =
            tokio::spawn(async move { matches!(d2.claim_waiting(key("y")).await, Claim::New(_)) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(g);
        assert!(retry.await.expect("join"), "the retry must take over");
    }
}
