//! Single-flight with fan-out: concurrent requests with one cache key share one upstream
//! call. The call's chunks are kept in order as they arrive; every subscriber reads them
//! from the start (a late joiner gets the chunks so far at once, then the rest live), so a
//! streaming leader's answer fans out chunk by chunk.
//!
//! The call runs in its own task, owned by no request: when the last subscriber goes away
//! before it ends, its cancellation token fires and the task drops the upstream connection
//! (a client disconnect cancels the upstream call only when nobody else waits for it).
//!
//! Must not import: the network client, the cache, the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::upstream::Failure;

/// How the call's answer began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// A stream: frames are chunk payloads.
    Stream,
    /// A JSON body: one frame, the body.
    Json,
    /// No upstream answered with a success.
    Failed(Failure),
}

/// How the call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Completely: the answer may be cached.
    Complete,
    /// Partway (an upstream error object, an idle timeout, a cut connection): what was
    /// relayed stands, nothing is cached.
    Broken(String),
}

#[derive(Default)]
struct State {
    head: Option<Head>,
    frames: Vec<Bytes>,
    end: Option<End>,
    subscribers: usize,
}

/// One upstream call and its subscribers.
pub struct Flight {
    state: Mutex<State>,
    version: watch::Sender<u64>,
    cancel: CancellationToken,
}

impl Flight {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Fires when every subscriber has gone: the call should stop.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Sets how the answer began (once).
    pub fn begin(&self, head: Head) {
        self.lock().head.get_or_insert(head);
        self.bump();
    }

    /// Appends a frame.
    pub fn push(&self, frame: Bytes) {
        self.lock().frames.push(frame);
        self.bump();
    }

    /// Ends the call (once).
    pub fn end(&self, end: End) {
        self.lock().end.get_or_insert(end);
        self.bump();
    }

    /// The frames so far.
    pub fn frames(&self) -> Vec<Bytes> {
        self.lock().frames.clone()
    }
}

/// The calls in flight, by key.
#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<[u8; 32], Weak<Flight>>>,
}

/// What joining a key gave.
pub enum Joined {
    /// No call was in flight: the caller must start it (and feed the flight).
    Lead(Arc<Flight>, Subscription),
    /// A call is in flight: read it.
    Follow(Subscription),
}

impl Flights {
    /// Joins the call in flight for `key`, or registers a new one for the caller to lead.
    pub fn join(&self, key: [u8; 32]) -> Joined {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = map.get(&key).and_then(Weak::upgrade) {
            let mut st = f.lock();
            if !f.cancel.is_cancelled() && !matches!(st.end, Some(End::Broken(_))) {
                st.subscribers += 1;
                drop(st);
                return Joined::Follow(Subscription::new(f));
            }
        }
        map.retain(|_, w| w.strong_count() > 0);
        let flight = Arc::new(Flight {
            state: Mutex::new(State {
                subscribers: 1,
                ..State::default()
            }),
            version: watch::channel(0).0,
            cancel: CancellationToken::new(),
        });
        map.insert(key, Arc::downgrade(&flight));
        Joined::Lead(flight.clone(), Subscription::new(flight))
    }

    /// Forgets `key`'s call if it is `flight` (once its answer is cached, or it failed).
    pub fn remove(&self, key: &[u8; 32], flight: &Arc<Flight>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(key)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(flight)))
        {
            map.remove(key);
        }
    }

    /// Calls in flight now.
    pub fn len(&self) -> usize {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.values().filter(|w| w.strong_count() > 0).count()
    }

    /// Whether no call is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A reader of one flight, from its first frame.
pub struct Subscription {
    flight: Arc<Flight>,
    rx: watch::Receiver<u64>,
    next: usize,
}

/// What a subscription read next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// A frame.
    Frame(Bytes),
    /// The call ended.
    End(End),
}

impl Subscription {
    fn new(flight: Arc<Flight>) -> Self {
        let rx = flight.version.subscribe();
        Self {
            flight,
            rx,
            next: 0,
        }
    }

    /// Waits for how the answer began.
    pub async fn head(&mut self) -> Head {
        loop {
            if let Some(h) = self.flight.lock().head.clone() {
                return h;
            }
            if self.rx.changed().await.is_err() {
                return Head::Failed(Failure::Unavailable("the upstream call stopped".into()));
            }
        }
    }

    /// Waits for the next frame, or the end.
    pub async fn next(&mut self) -> Next {
        loop {
            {
                let st = self.flight.lock();
                if let Some(f) = st.frames.get(self.next) {
                    self.next += 1;
                    return Next::Frame(f.clone());
                }
                if let Some(e) = &st.end {
                    return Next::End(e.clone());
                }
            }
            if self.rx.changed().await.is_err() {
                return Next::End(End::Broken("the upstream call stopped".into()));
            }
        }
    }

    /// Waits for the end; every frame and how it ended.
    pub async fn collect(&mut self) -> (Vec<Bytes>, End) {
        let mut frames = Vec::new();
        loop {
            match self.next().await {
                Next::Frame(f) => frames.push(f),
                Next::End(e) => return (frames, e),
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut st = self.flight.lock();
        st.subscribers = st.subscribers.saturating_sub(1);
        if st.subscribers == 0 && st.end.is_none() {
            self.flight.cancel.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn late_joiners_get_every_frame_and_the_last_leaver_cancels() {
        let flights = Flights::default();
        let Joined::Lead(flight, mut a) = flights.join([1; 32]) else {
            panic!("first caller leads")
        };
        flight.begin(Head::Stream);
        flight.push(Bytes::from_static(b"1"));
        let Joined::Follow(mut b) = flights.join([1; 32]) else {
            panic!("second caller follows")
        };
        flight.push(Bytes::from_static(b"2"));
        assert_eq!(b.head().await, Head::Stream);
        assert_eq!(b.next().await, Next::Frame(Bytes::from_static(b"1")));
        assert_eq!(b.next().await, Next::Frame(Bytes::from_static(b"2")));
        let waiting = tokio::spawn(async move { b.collect().await });
        flight.push(Bytes::from_static(b"3"));
        flight.end(End::Complete);
        let (rest, end) = waiting.await.unwrap();
        assert_eq!((rest, end), (vec![Bytes::from_static(b"3")], End::Complete));
        assert_eq!(a.collect().await.0.len(), 3);
        drop(a);
        assert!(
            !flight.cancelled().is_cancelled(),
            "an ended call is not cancelled"
        );

        let Joined::Lead(other, lead) = flights.join([2; 32]) else {
            panic!("a new key leads")
        };
        drop(lead);
        assert!(
            other.cancelled().is_cancelled(),
            "nobody waits: the call stops"
        );
        assert!(
            matches!(flights.join([2; 32]), Joined::Lead(..)),
            "a cancelled call is not joined"
        );
    }
}
