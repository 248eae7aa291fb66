//! Connections driven against each other (or against a bare session playing a misbehaving
//! peer) in memory, with a clock the tests move by hand.

use super::*;
use crate::frame::ShardRange;
use crate::identity::EntityKeypair;
use bytes::Bytes;

const SECOND: Duration = Duration::from_secs(1);

fn keypair(seed: u8) -> EntityKeypair {
    EntityKeypair::from_secret_bytes([seed; 32])
}

fn settings(stores: bool) -> ConnectionConfig {
    ConnectionConfig {
        capabilities: Capabilities {
            shards: if stores {
                vec![ShardRange::ALL]
            } else {
                vec![]
            },
            tags: vec!["memory".into()],
        },
        handshake_timeout: 5 * SECOND,
        first_message_timeout: Some(2 * SECOND),
        ping_interval: 5 * SECOND,
        idle_timeout: 20 * SECOND,
    }
}

fn connection(seed: u8, role: Role, now: Instant) -> Connection {
    let session = SessionConfig::new(keypair(seed));
    Connection::new(session, settings(role == Role::Responder), role, now).unwrap()
}

/// Moves bytes both ways at `now` until neither side writes. Returns each side's first error.
fn pump(
    a: &mut Connection,
    b: &mut Connection,
    now: Instant,
) -> (Option<ConnectionError>, Option<ConnectionError>) {
    let (mut ea, mut eb) = (None, None);
    for _ in 0..16 {
        let to_b = a.take_output();
        let to_a = b.take_output();
        if to_b.is_empty() && to_a.is_empty() {
            break;
        }
        if !to_b.is_empty() && eb.is_none() {
            eb = b.handle_input(&to_b, now).err();
        }
        if !to_a.is_empty() && ea.is_none() {
            ea = a.handle_input(&to_a, now).err();
        }
    }
    (ea, eb)
}

fn events(c: &mut Connection) -> Vec<ConnectionEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn established(now: Instant) -> (Connection, Connection) {
    let mut a = connection(1, Role::Initiator, now);
    let mut b = connection(2, Role::Responder, now);
    let (ea, eb) = pump(&mut a, &mut b, now);
    assert!(ea.is_none() && eb.is_none(), "{ea:?} {eb:?}");
    assert!(a.is_established() && b.is_established());
    (a, b)
}

/// Frames a bare session decrypts from `bytes`.
fn frames_in(session: &mut Session, bytes: &[u8]) -> Vec<Frame> {
    session.handle_input(bytes).unwrap();
    std::iter::from_fn(|| session.poll_event())
        .filter_map(|e| match e {
            SessionEvent::Frame(f) => Some(f),
            SessionEvent::Connected(_) => None,
        })
        .collect()
}

/// A listening connection against a bare initiator session that finished Noise; the
/// connection's own `Hello` is already decrypted by the bare side.
fn against_bare_session(now: Instant) -> (Session, Connection) {
    let mut bare = Session::new(SessionConfig::new(keypair(1)), Role::Initiator, now).unwrap();
    let mut conn = connection(2, Role::Responder, now);
    conn.handle_input(&bare.take_output(), now).unwrap();
    bare.handle_input(&conn.take_output()).unwrap();
    conn.handle_input(&bare.take_output(), now).unwrap();
    assert_eq!(
        events(&mut conn),
        vec![ConnectionEvent::Authenticated(keypair(1).node_id())]
    );
    let hello = frames_in(&mut bare, &conn.take_output());
    assert!(matches!(
        hello[..],
        [Frame::Hello {
            version: PROTOCOL_VERSION,
            ..
        }]
    ));
    (bare, conn)
}

#[test]
fn both_sides_exchange_hello_and_learn_each_others_capabilities() {
    let now = Instant::now();
    let (mut a, mut b) = established(now);
    assert_eq!(
        events(&mut a),
        vec![
            ConnectionEvent::Authenticated(keypair(2).node_id()),
            ConnectionEvent::Established {
                peer: keypair(2).node_id(),
                capabilities: settings(true).capabilities,
            },
        ]
    );
    assert_eq!(
        events(&mut b),
        vec![
            ConnectionEvent::Authenticated(keypair(1).node_id()),
            ConnectionEvent::Established {
                peer: keypair(1).node_id(),
                capabilities: settings(false).capabilities,
            },
        ]
    );
    a.send(&Frame::Close(CloseReason::Shutdown), now).unwrap();
    let (ea, eb) = pump(&mut a, &mut b, now);
    assert!(ea.is_none() && eb.is_none());
    assert_eq!(
        events(&mut b),
        vec![ConnectionEvent::Frame(Frame::Close(CloseReason::Shutdown))]
    );
}

#[test]
fn a_first_frame_other_than_hello_closes_the_connection() {
    let now = Instant::now();
    let (mut bare, mut conn) = against_bare_session(now);
    bare.send(&Frame::Ping(7)).unwrap();
    let error = conn.handle_input(&bare.take_output(), now).unwrap_err();
    assert!(matches!(error, ConnectionError::NotHello), "{error}");
    assert!(conn.is_closed());
    assert_eq!(conn.poll_timeout(), None);
    assert!(events(&mut conn).is_empty());
}

#[test]
fn a_hello_of_another_version_closes_the_connection() {
    let now = Instant::now();
    let (mut bare, mut conn) = against_bare_session(now);
    bare.send(&Frame::Hello {
        version: PROTOCOL_VERSION + 1,
        capabilities: Capabilities::default(),
    })
    .unwrap();
    let error = conn.handle_input(&bare.take_output(), now).unwrap_err();
    assert!(matches!(error, ConnectionError::Version(v) if v == PROTOCOL_VERSION + 1));
    assert!(conn.is_closed() && !conn.is_established());
}

#[test]
fn a_second_hello_closes_the_connection() {
    let now = Instant::now();
    let (mut bare, mut conn) = against_bare_session(now);
    let hello = Frame::Hello {
        version: PROTOCOL_VERSION,
        capabilities: Capabilities::default(),
    };
    bare.send(&hello).unwrap();
    conn.handle_input(&bare.take_output(), now).unwrap();
    assert!(conn.is_established());
    bare.send(&hello).unwrap();
    let error = conn.handle_input(&bare.take_output(), now).unwrap_err();
    assert!(matches!(error, ConnectionError::SecondHello), "{error}");
    assert!(conn.is_closed());
}

#[test]
fn a_peer_that_never_sends_hello_hits_the_handshake_deadline() {
    let t0 = Instant::now();
    let (_bare, mut conn) = against_bare_session(t0);
    // Noise is done, so the first-message deadline no longer applies; the handshake's does.
    assert_eq!(conn.poll_timeout(), Some(t0 + 5 * SECOND));
    conn.handle_timeout(t0 + 4 * SECOND).unwrap();
    let error = conn.handle_timeout(t0 + 5 * SECOND).unwrap_err();
    assert!(
        matches!(error, ConnectionError::HandshakeTimeout),
        "{error}"
    );
    assert!(conn.is_closed());
}

#[test]
fn a_listener_waits_for_the_first_message_only_until_its_deadline() {
    let t0 = Instant::now();
    let mut conn = connection(2, Role::Responder, t0);
    assert_eq!(conn.poll_timeout(), Some(t0 + 2 * SECOND));
    conn.handle_timeout(t0 + SECOND).unwrap();
    // A partial record is no handshake message: the deadline stays.
    conn.handle_input(&[0], t0 + SECOND).unwrap();
    assert_eq!(conn.poll_timeout(), Some(t0 + 2 * SECOND));
    let error = conn.handle_timeout(t0 + 2 * SECOND).unwrap_err();
    assert!(
        matches!(error, ConnectionError::FirstMessageTimeout),
        "{error}"
    );
    assert!(conn.is_closed());
}

#[test]
fn the_first_message_moves_the_listener_to_the_handshake_deadline() {
    let t0 = Instant::now();
    let mut dialer = connection(1, Role::Initiator, t0);
    let mut listener = connection(2, Role::Responder, t0);
    // A dialer has no first-message deadline.
    assert_eq!(dialer.poll_timeout(), Some(t0 + 5 * SECOND));
    listener
        .handle_input(&dialer.take_output(), t0 + SECOND)
        .unwrap();
    assert!(listener.has_output());
    assert_eq!(listener.poll_timeout(), Some(t0 + 5 * SECOND));
    listener.handle_timeout(t0 + 3 * SECOND).unwrap();
    let error = listener.handle_timeout(t0 + 5 * SECOND).unwrap_err();
    assert!(
        matches!(error, ConnectionError::HandshakeTimeout),
        "{error}"
    );
}

#[test]
fn poll_timeout_of_an_established_connection_is_the_next_ping_or_the_idle_deadline() {
    let t0 = Instant::now();
    let (mut a, mut b) = established(t0);
    assert_eq!(a.poll_timeout(), Some(t0 + 5 * SECOND));
    // Sending pushes the ping back; receiving pushes the idle deadline back.
    a.send(&Frame::Pong(1), t0 + 3 * SECOND).unwrap();
    assert_eq!(a.poll_timeout(), Some(t0 + 8 * SECOND));
    b.handle_input(&a.take_output(), t0 + 3 * SECOND).unwrap();
    b.send(&Frame::Pong(2), t0 + 19 * SECOND).unwrap();
    assert_eq!(b.poll_timeout(), Some(t0 + 23 * SECOND));
    // Nothing is due before the deadline.
    a.handle_timeout(t0 + 7 * SECOND).unwrap();
    assert!(!a.has_output());
}

#[test]
fn an_idle_connection_pings_then_closes_past_the_idle_deadline() {
    let t0 = Instant::now();
    let (mut a, mut b) = established(t0);
    let _ = (events(&mut a), events(&mut b));
    let mut t = t0;
    let mut pings = 0;
    loop {
        let next = a.poll_timeout().expect("open connection has a timer");
        assert!(next > t, "timer does not move forward");
        t = next;
        match a.handle_timeout(t) {
            Ok(()) => {
                // A ping went out; the peer answers it without surfacing it.
                pings += 1;
                b.handle_input(&a.take_output(), t).unwrap();
                assert!(events(&mut b).is_empty());
                assert!(b.has_output(), "pong expected");
                let _ = b.take_output(); // lost on the way
            }
            Err(error) => {
                assert!(matches!(error, ConnectionError::Idle), "{error}");
                break;
            }
        }
    }
    assert_eq!(t, t0 + 20 * SECOND);
    assert_eq!(pings, 3, "pings at 5, 10 and 15 s");
    assert!(a.is_closed());
    assert_eq!(a.poll_timeout(), None);
    // The peer is told, coarsely, before the connection drops.
    b.handle_input(&a.take_output(), t).unwrap();
    assert_eq!(
        events(&mut b),
        vec![ConnectionEvent::Frame(Frame::Close(CloseReason::Timeout))]
    );
}

#[test]
fn pongs_keep_an_idle_connection_alive() {
    let t0 = Instant::now();
    let (mut a, mut b) = established(t0);
    let _ = (events(&mut a), events(&mut b));
    for round in 1..=10u32 {
        let t = t0 + 5 * SECOND * round;
        a.handle_timeout(t).unwrap();
        let (ea, eb) = pump(&mut a, &mut b, t);
        assert!(ea.is_none() && eb.is_none());
        assert!(events(&mut a).is_empty() && events(&mut b).is_empty());
    }
    assert!(a.is_established() && b.is_established());
}

#[test]
fn frames_before_establishment_are_refused_and_after_it_delivered() {
    let now = Instant::now();
    let mut a = connection(1, Role::Initiator, now);
    assert!(matches!(
        a.send(&Frame::Ping(1), now),
        Err(SessionError::Closed)
    ));
    let (mut a, mut b) = established(now);
    let _ = (events(&mut a), events(&mut b));
    let frame = Frame::Batch {
        request: 3,
        batch: std::sync::Arc::new(net_adapter::Batch {
            shard_id: 1,
            events: vec![net_adapter::BatchEvent {
                raw: Bytes::from_static(b"{}"),
                insertion_ts: 1,
                shard_id: 1,
            }],
            sequence_start: 0,
            process_nonce: 9,
        }),
    };
    a.send(&frame, now).unwrap();
    pump(&mut a, &mut b, now);
    assert_eq!(events(&mut b), vec![ConnectionEvent::Frame(frame)]);
}
