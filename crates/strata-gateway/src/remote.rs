//! Fan-out across instances: with Redis configured, the first instance to call the upstream
//! for a key leads a shared log of the call ([`strata_cache::shared_log`]) and mirrors into
//! it what it gives its own flight (the head, each batch of frames, the end); an identical
//! request on another instance follows that log into a local flight instead of calling the
//! upstream, so its clients get the chunks so far at once and the rest as they arrive.
//!
//! A follower whose leader goes away before the answer began calls the upstream itself; after
//! it began, the answer ends broken, as a cut upstream connection would. A leader whose own
//! clients all left keeps the call going while another instance still reads it.
//!
//! Must not import: HTTP types, SQL.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use strata_cache::shared_log::{LogLeader, LogReader};

use crate::flight::{End, Flight, Head};
use crate::upstream::Failure;

/// How long a lead holds without a renewal (the leader renews it every third of this, and
/// by every append): how long followers wait on a leader that died.
pub(crate) const LEASE: Duration = Duration::from_secs(10);
/// How long a finished call's log stays readable by late followers.
pub(crate) const KEEP: Duration = Duration::from_secs(30);

const HEAD_STREAM: u8 = b'S';
const HEAD_JSON: u8 = b'J';
const HEAD_REJECTED: u8 = b'R';
const HEAD_UNAVAILABLE: u8 = b'U';
const HEAD_TIMEOUT: u8 = b'T';
const HEAD_NO_UPSTREAM: u8 = b'N';
const FRAME: u8 = b'F';
const COMPLETE: u8 = b'C';
const BROKEN: u8 = b'B';

fn tagged(tag: u8, body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + body.len());
    b.put_u8(tag);
    b.put_slice(body);
    b.freeze()
}

fn encode_head(head: &Head) -> Bytes {
    match head {
        Head::Stream => tagged(HEAD_STREAM, b""),
        Head::Json => tagged(HEAD_JSON, b""),
        Head::Failed(Failure::Rejected { status, body }) => {
            let mut b = BytesMut::with_capacity(3 + body.len());
            b.put_u8(HEAD_REJECTED);
            b.put_u16(*status);
            b.put_slice(body);
            b.freeze()
        }
        Head::Failed(Failure::Unavailable(m)) => tagged(HEAD_UNAVAILABLE, m.as_bytes()),
        Head::Failed(Failure::Timeout(m)) => tagged(HEAD_TIMEOUT, m.as_bytes()),
        Head::Failed(Failure::NoUpstream(m)) => tagged(HEAD_NO_UPSTREAM, m.as_bytes()),
    }
}

fn encode_end(end: &End) -> Bytes {
    match end {
        End::Complete => tagged(COMPLETE, b""),
        End::Broken(why) => tagged(BROKEN, why.as_bytes()),
    }
}

/// One decoded log entry.
enum Entry {
    Head(Head),
    Frame(Bytes),
    End(End),
}

fn decode(entry: &Bytes) -> Option<Entry> {
    let (&tag, _) = entry.split_first()?;
    let body = entry.slice(1..);
    let text = || String::from_utf8_lossy(&body).into_owned();
    Some(match tag {
        HEAD_STREAM => Entry::Head(Head::Stream),
        HEAD_JSON => Entry::Head(Head::Json),
        HEAD_REJECTED if body.len() >= 2 => Entry::Head(Head::Failed(Failure::Rejected {
            status: u16::from_be_bytes([body[0], body[1]]),
            body: body.slice(2..),
        })),
        HEAD_UNAVAILABLE => Entry::Head(Head::Failed(Failure::Unavailable(text()))),
        HEAD_TIMEOUT => Entry::Head(Head::Failed(Failure::Timeout(text()))),
        HEAD_NO_UPSTREAM => Entry::Head(Head::Failed(Failure::NoUpstream(text()))),
        FRAME => Entry::Frame(body),
        COMPLETE => Entry::End(End::Complete),
        BROKEN => Entry::End(End::Broken(text())),
        _ => return None,
    })
}

/// The leader's side: mirrors a flight into the shared log and keeps the lease while the
/// upstream has not answered yet.
pub(crate) struct Mirror {
    leader: Arc<LogLeader>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Mirror {
    pub(crate) fn new(leader: LogLeader) -> Self {
        let leader = Arc::new(leader);
        let beat = leader.clone();
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE / 3).await;
                if !beat.append(Vec::new()).await {
                    break;
                }
            }
        });
        Self { leader, heartbeat }
    }

    pub(crate) async fn head(&self, head: &Head) {
        self.leader.append(vec![encode_head(head)]).await;
    }

    pub(crate) async fn frames(&self, frames: &[Bytes]) {
        if !frames.is_empty() {
            let entries = frames.iter().map(|f| tagged(FRAME, f)).collect();
            self.leader.append(entries).await;
        }
    }

    /// Appends the end and gives up the lead in one step: no instance sees this call ended
    /// and can still follow it.
    pub(crate) async fn end(&self, end: &End) {
        self.heartbeat.abort();
        self.leader.close(vec![encode_end(end)]).await;
    }

    /// Whether another instance still reads the call.
    pub(crate) async fn read_elsewhere(&self) -> bool {
        self.leader.readers().await > 0
    }

    /// Stops renewing and gives up the lead (the log stays readable for [`KEEP`]); again is
    /// a no-op.
    pub(crate) async fn finish(&self) {
        self.heartbeat.abort();
        // Released now, not when the heartbeat's task lets go of its handle: a request
        // arriving after this call ended must lead a call of its own.
        self.leader.release().await;
    }
}

/// How following another instance's call ended.
pub(crate) enum Followed {
    /// The answer ended (completely or not); the flight has it all.
    Ended,
    /// The leader failed before any answer: the flight has the failure as its head.
    Failed,
    /// The leader went away before the answer began: the caller should call the upstream.
    Lost,
}

/// Feeds `flight` from another instance's log until the answer ends. Waits at most `wait`
/// for the answer to begin and `idle` between entries after that.
pub(crate) async fn follow(
    mut reader: LogReader,
    flight: &Flight,
    wait: Duration,
    idle: Duration,
) -> Followed {
    let mut began = false;
    let mut last = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let Some(read) = reader.read().await else {
            return lost(
                flight,
                began,
                "Redis stopped answering while following another instance",
            );
        };
        if read.entries.is_empty() {
            let limit = if began { idle } else { wait };
            if !read.led || last.elapsed() > limit {
                return lost(flight, began, "the instance that led this call went away");
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
            continue;
        }
        last = tokio::time::Instant::now();
        pause = Duration::from_millis(1);
        for entry in &read.entries {
            match decode(entry) {
                Some(Entry::Head(h)) => {
                    let failed = matches!(h, Head::Failed(_));
                    flight.begin(h);
                    began = true;
                    if failed {
                        flight.end(End::Broken("no upstream answered".into()));
                        return Followed::Failed;
                    }
                }
                Some(Entry::Frame(f)) => flight.push(f),
                Some(Entry::End(end)) => {
                    flight.end(end);
                    return Followed::Ended;
                }
                None => {}
            }
        }
    }
}

fn lost(flight: &Flight, began: bool, why: &str) -> Followed {
    if began {
        flight.end(End::Broken(why.to_owned()));
        Followed::Ended
    } else {
        Followed::Lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let heads = [
            Head::Stream,
            Head::Json,
            Head::Failed(Failure::Rejected {
                status: 429,
                body: Bytes::from_static(b"{\"error\":{}}"),
            }),
            Head::Failed(Failure::Timeout("slow".into())),
            Head::Failed(Failure::Unavailable("down".into())),
            Head::Failed(Failure::NoUpstream("m".into())),
        ];
        for h in heads {
            match decode(&encode_head(&h)) {
                Some(Entry::Head(back)) => assert_eq!(back, h),
                _ => panic!("{h:?}"),
            }
        }
        for e in [End::Complete, End::Broken("cut".into())] {
            match decode(&encode_end(&e)) {
                Some(Entry::End(back)) => assert_eq!(back, e),
                _ => panic!("{e:?}"),
            }
        }
        match decode(&tagged(FRAME, b"{\"x\":1}")) {
            Some(Entry::Frame(f)) => assert_eq!(f.as_ref(), b"{\"x\":1}"),
            _ => panic!("frame"),
        }
        assert!(decode(&Bytes::new()).is_none());
    }
}
