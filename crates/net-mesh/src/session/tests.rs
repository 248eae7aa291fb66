//! Two sessions driven against each other in memory.

use super::*;
use crate::frame::{Capabilities, Frame, ShardRange, PROTOCOL_VERSION};
use net_adapter::{Batch, BatchEvent};

fn keypair(seed: u8) -> EntityKeypair {
    EntityKeypair::from_secret_bytes([seed; 32])
}

fn config(seed: u8) -> SessionConfig {
    SessionConfig::new(keypair(seed))
}

/// Moves bytes both ways until neither side has anything to send. Returns the first error
/// of each side.
fn pump(a: &mut Session, b: &mut Session) -> (Option<SessionError>, Option<SessionError>) {
    let (mut ea, mut eb) = (None, None);
    for _ in 0..16 {
        let to_b = a.take_output();
        let to_a = b.take_output();
        if to_b.is_empty() && to_a.is_empty() {
            break;
        }
        if !to_b.is_empty() && eb.is_none() {
            eb = b.handle_input(&to_b).err();
        }
        if !to_a.is_empty() && ea.is_none() {
            ea = a.handle_input(&to_a).err();
        }
    }
    (ea, eb)
}

fn pair(ca: SessionConfig, cb: SessionConfig) -> (Session, Session) {
    let now = Instant::now();
    let a = Session::new(ca, Role::Initiator, now).unwrap();
    let b = Session::new(cb, Role::Responder, now).unwrap();
    (a, b)
}

fn connected() -> (Session, Session) {
    let (mut a, mut b) = pair(config(1), config(2));
    let (ea, eb) = pump(&mut a, &mut b);
    assert!(ea.is_none() && eb.is_none(), "{ea:?} {eb:?}");
    assert_eq!(
        a.poll_event(),
        Some(SessionEvent::Connected(keypair(2).node_id()))
    );
    assert_eq!(
        b.poll_event(),
        Some(SessionEvent::Connected(keypair(1).node_id()))
    );
    (a, b)
}

fn frames(s: &mut Session) -> Vec<Frame> {
    let mut out = Vec::new();
    while let Some(event) = s.poll_event() {
        match event {
            SessionEvent::Frame(f) => out.push(f),
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

fn big_batch(events: usize, size: usize) -> Frame {
    Frame::Batch {
        request: 1,
        batch: Arc::new(Batch {
            shard_id: 3,
            events: (0..events)
                .map(|i| BatchEvent {
                    raw: Bytes::from(vec![(i % 251) as u8; size]),
                    insertion_ts: i as u64,
                    shard_id: 3,
                })
                .collect(),
            sequence_start: 0,
            process_nonce: 1,
        }),
    }
}

#[test]
fn handshake_proves_both_identities() {
    let (mut a, mut b) = connected();
    assert_eq!(a.peer(), Some(keypair(2).node_id()));
    assert_eq!(b.peer(), Some(keypair(1).node_id()));
    let hello = Frame::Hello {
        version: PROTOCOL_VERSION,
        capabilities: Capabilities {
            shards: vec![ShardRange::ALL],
            tags: vec!["durable".into()],
        },
    };
    a.send(&hello).unwrap();
    b.send(&Frame::Ping(5)).unwrap();
    pump(&mut a, &mut b);
    assert_eq!(frames(&mut b), vec![hello]);
    assert_eq!(frames(&mut a), vec![Frame::Ping(5)]);
}

#[test]
fn handshake_with_matching_psk_succeeds() {
    let mut ca = config(1);
    let mut cb = config(2);
    ca.psk = Some([9; 32]);
    cb.psk = Some([9; 32]);
    let (mut a, mut b) = pair(ca, cb);
    let (ea, eb) = pump(&mut a, &mut b);
    assert!(ea.is_none() && eb.is_none());
    assert!(a.is_established() && b.is_established());
}

#[test]
fn wrong_psk_is_refused() {
    let mut ca = config(1);
    let mut cb = config(2);
    ca.psk = Some([9; 32]);
    cb.psk = Some([8; 32]);
    let (mut a, mut b) = pair(ca, cb);
    let (_, eb) = pump(&mut a, &mut b);
    assert!(matches!(eb, Some(SessionError::Handshake(_))), "{eb:?}");
    assert!(b.is_closed());
    assert_eq!(b.poll_event(), None);
}

#[test]
fn psk_on_one_side_only_is_refused() {
    let mut cb = config(2);
    cb.psk = Some([8; 32]);
    let (mut a, mut b) = pair(config(1), cb);
    let (ea, eb) = pump(&mut a, &mut b);
    assert!(ea.is_some() || eb.is_some());
    assert!(!(a.is_established() && b.is_established()));
    assert_eq!(b.poll_event(), None);
}

#[test]
fn signature_by_another_key_is_refused_by_the_responder() {
    let (mut a, mut b) = pair(config(1), config(2));
    a.forged_signer = Some(keypair(3));
    let (_, eb) = pump(&mut a, &mut b);
    assert!(
        matches!(
            eb,
            Some(SessionError::Identity("signature does not verify"))
        ),
        "{eb:?}"
    );
    assert!(b.is_closed());
}

#[test]
fn signature_by_another_key_is_refused_by_the_initiator() {
    let (mut a, mut b) = pair(config(1), config(2));
    b.forged_signer = Some(keypair(3));
    let (ea, _) = pump(&mut a, &mut b);
    assert!(
        matches!(
            ea,
            Some(SessionError::Identity("signature does not verify"))
        ),
        "{ea:?}"
    );
    assert!(a.is_closed());
}

#[test]
fn unknown_id_is_refused_with_an_allow_list() {
    let mut cb = config(2);
    cb.allow = Some(Arc::new([keypair(7).node_id()].into_iter().collect()));
    let (mut a, mut b) = pair(config(1), cb);
    let (_, eb) = pump(&mut a, &mut b);
    assert!(matches!(eb, Some(SessionError::NotAllowed(id)) if id == keypair(1).node_id()));

    // Listed ids get through.
    let mut cb = config(2);
    cb.allow = Some(Arc::new([keypair(1).node_id()].into_iter().collect()));
    let (mut a, mut b) = pair(config(1), cb);
    let (ea, eb) = pump(&mut a, &mut b);
    assert!(ea.is_none() && eb.is_none());
    assert!(b.is_established());
}

#[test]
fn initiator_checks_its_allow_list_too() {
    let mut ca = config(1);
    ca.allow = Some(Arc::new(HashSet::new()));
    let (mut a, mut b) = pair(ca, config(2));
    let (ea, _) = pump(&mut a, &mut b);
    assert!(matches!(ea, Some(SessionError::NotAllowed(_))));
}

#[test]
fn stalled_handshake_times_out() {
    let now = Instant::now();
    let mut b = Session::new(config(2), Role::Responder, now).unwrap();
    assert_eq!(b.poll_timeout(), Some(now + Duration::from_secs(10)));
    b.handle_timeout(now + Duration::from_secs(9)).unwrap();
    assert!(!b.is_closed());
    assert!(matches!(
        b.handle_timeout(now + Duration::from_secs(10)),
        Err(SessionError::HandshakeTimeout)
    ));
    assert!(b.is_closed());
    // An established session has no deadline.
    let (a, _) = connected();
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn malformed_handshake_messages_are_refused() {
    let now = Instant::now();
    // Garbage of a plausible length.
    let mut b = Session::new(config(2), Role::Responder, now).unwrap();
    let mut bytes = vec![0, 40];
    bytes.extend_from_slice(&[0xab; 40]);
    // A 40-byte first message has a payload: refused.
    assert!(b.handle_input(&bytes).is_err());
    // Zero length.
    let mut b = Session::new(config(2), Role::Responder, now).unwrap();
    assert!(matches!(
        b.handle_input(&[0, 0]),
        Err(SessionError::Oversize(_))
    ));
    // A length prefix far above any handshake message is refused before buffering.
    let mut b = Session::new(config(2), Role::Responder, now).unwrap();
    assert!(matches!(
        b.handle_input(&[0xff, 0xff, 1, 2, 3]),
        Err(SessionError::Oversize(_))
    ));
    assert!(b.is_closed());
    // Short garbage as the second message.
    let mut a = Session::new(config(1), Role::Initiator, now).unwrap();
    let _ = a.take_output();
    assert!(matches!(
        a.handle_input(&[0, 3, 1, 2, 3]),
        Err(SessionError::Handshake(_))
    ));
    // Transport bytes before the handshake: refused, and the session stays closed.
    assert!(matches!(
        a.handle_input(&[0, 1, 0]),
        Err(SessionError::Closed)
    ));
}

#[test]
fn identity_payload_decoder_checks_its_shape() {
    let good = identity_payload(&keypair(1), &[5; 32], &[6; 32]);
    assert_eq!(
        decode_identity_payload(&good).unwrap().0,
        keypair(1).node_id()
    );
    assert!(decode_identity_payload(&good[..96]).is_err());
    let mut bad = good.clone();
    bad[0] = 2;
    assert!(decode_identity_payload(&bad).is_err());
    assert!(decode_identity_payload(&[]).is_err());
}

#[test]
fn replayed_record_ends_the_session() {
    let (mut a, mut b) = connected();
    a.send(&Frame::Ping(1)).unwrap();
    let record = a.take_output();
    b.handle_input(&record).unwrap();
    assert_eq!(frames(&mut b), vec![Frame::Ping(1)]);
    assert!(matches!(
        b.handle_input(&record),
        Err(SessionError::Decrypt)
    ));
    assert!(b.is_closed());
    assert!(matches!(b.handle_input(&record), Err(SessionError::Closed)));
}

#[test]
fn reordered_records_end_the_session() {
    let (mut a, mut b) = connected();
    a.send(&Frame::Ping(1)).unwrap();
    let first = a.take_output();
    a.send(&Frame::Ping(2)).unwrap();
    let second = a.take_output();
    assert!(matches!(
        b.handle_input(&second),
        Err(SessionError::Decrypt)
    ));
    assert!(b.handle_input(&first).is_err());
    assert_eq!(frames(&mut b), vec![]);
}

#[test]
fn tampered_records_end_the_session() {
    let (a0, _) = connected();
    drop(a0);
    for at in [2usize, 3, 10, 20] {
        let (mut a, mut b) = connected();
        a.send(&Frame::Ping(77)).unwrap();
        let mut record = a.take_output();
        let at = at.min(record.len() - 1);
        record[at] ^= 0x01;
        assert!(
            matches!(b.handle_input(&record), Err(SessionError::Decrypt)),
            "bit at {at}"
        );
        assert!(b.is_closed());
        assert_eq!(frames(&mut b), vec![]);
    }
}

#[test]
fn short_and_empty_records_end_the_session() {
    let (_, mut b) = connected();
    assert!(matches!(
        b.handle_input(&[0, 5, 1, 2, 3, 4, 5]),
        Err(SessionError::Protocol(_))
    ));
    let (_, mut b) = connected();
    assert!(matches!(
        b.handle_input(&[0, 0]),
        Err(SessionError::Oversize(_))
    ));
}

#[test]
fn oversized_fragmented_frame_is_refused_before_allocation() {
    let mut cb = config(2);
    cb.max_frame = 100_000;
    let (mut a, mut b) = pair(config(1), cb);
    pump(&mut a, &mut b);
    a.poll_event();
    a.send(&big_batch(200, 1000)).unwrap();
    let out = a.take_output();
    // The first record alone (2 + 65535 bytes) is enough for the receiver to refuse.
    let first = &out[..2 + MAX_NOISE_MESSAGE];
    assert!(matches!(
        b.handle_input(first),
        Err(SessionError::Oversize(_))
    ));
    assert!(b.is_closed());
    // The sender refuses to send frames above its own limit.
    let mut ca = config(1);
    ca.max_frame = 1000;
    let (mut a, mut b) = pair(ca, config(2));
    pump(&mut a, &mut b);
    assert!(matches!(
        a.send(&big_batch(10, 200)),
        Err(SessionError::TooLarge(_))
    ));
}

#[test]
fn large_frames_are_fragmented_and_reassembled() {
    let (mut a, mut b) = connected();
    let frame = big_batch(3000, 700); // about 2 MB, 33 records
    a.send(&frame).unwrap();
    a.send(&Frame::Ping(9)).unwrap();
    let out = a.take_output();
    assert!(out.len() > 2_000_000);
    // Feed the bytes in uneven pieces, as a socket would.
    let mut rest = &out[..];
    let mut step = 1;
    while !rest.is_empty() {
        let take = step.min(rest.len());
        b.handle_input(&rest[..take]).unwrap();
        rest = &rest[take..];
        step = (step * 7 + 3) % 90_001 + 1;
    }
    assert_eq!(frames(&mut b), vec![frame, Frame::Ping(9)]);
    let (sent, _) = a.record_counts();
    let (_, received) = b.record_counts();
    assert_eq!(sent, received);
    assert!(sent > 30);
}

#[test]
fn frame_of_exactly_one_record_boundary_round_trips() {
    for len in [
        MAX_PLAINTEXT - 2,
        MAX_PLAINTEXT - 1,
        MAX_PLAINTEXT,
        MAX_PLAINTEXT + 1,
    ] {
        let (mut a, mut b) = connected();
        let mut encoded = Frame::Ping(1).to_bytes().unwrap();
        encoded.resize(len, 0);
        // Not a valid frame past its first 9 bytes, so the receiver must reject it as trailing
        // bytes after reassembling exactly `len` bytes.
        a.send_encoded(&encoded).unwrap();
        let out = a.take_output();
        assert!(
            matches!(b.handle_input(&out), Err(SessionError::Frame(_))),
            "{len}"
        );
    }
}

#[test]
fn rekey_after_configured_records() {
    let mut ca = config(1);
    ca.rekey_after = 3;
    let mut cb = config(2);
    cb.rekey_after = 2;
    let (mut a, mut b) = pair(ca, cb);
    pump(&mut a, &mut b);
    a.poll_event();
    b.poll_event();
    let sent: Vec<Frame> = (0..20).map(Frame::Ping).collect();
    for f in &sent {
        a.send(f).unwrap();
        b.send(&Frame::Pong(0)).unwrap();
        pump(&mut a, &mut b);
    }
    a.send(&big_batch(300, 1000)).unwrap();
    pump(&mut a, &mut b);
    let got = frames(&mut b);
    assert_eq!(&got[..20], &sent[..]);
    assert_eq!(got.len(), 21);
    assert_eq!(frames(&mut a).len(), 20);
    // 20 pings, a rekey record after every third, 5 records of the batch and a final rekey.
    let (a_sent, _) = a.record_counts();
    assert_eq!(a_sent, 20 + 6 + 5 + 1);
}

#[test]
fn rekeyed_records_cannot_be_read_with_the_old_key() {
    // Two identical pairs would need identical keys; instead check that a record sent after a
    // rekey, delivered to a receiver that skipped the rekey record, fails.
    let mut ca = config(1);
    ca.rekey_after = 1;
    let (mut a, mut b) = pair(ca, config(2));
    pump(&mut a, &mut b);
    a.send(&Frame::Ping(1)).unwrap();
    let out = a.take_output();
    // Two records: the ping and the rekey. Keep the ping, drop the rekey record.
    let n = u16::from_be_bytes([out[0], out[1]]) as usize;
    b.handle_input(&out[..2 + n]).unwrap();
    a.send(&Frame::Ping(2)).unwrap();
    let after = a.take_output();
    assert!(matches!(b.handle_input(&after), Err(SessionError::Decrypt)));
}

#[test]
fn nothing_is_sent_before_the_handshake_and_payloads_are_never_in_clear() {
    let (mut a, mut b) = pair(config(1), config(2));
    assert!(matches!(a.send(&Frame::Ping(1)), Err(SessionError::Closed)));
    pump(&mut a, &mut b);
    let marker = b"secret-marker-0123456789";
    let frame = Frame::Batch {
        request: 1,
        batch: Arc::new(Batch {
            shard_id: 0,
            events: vec![BatchEvent {
                raw: Bytes::from_static(marker),
                insertion_ts: 0,
                shard_id: 0,
            }],
            sequence_start: 0,
            process_nonce: 0,
        }),
    };
    a.send(&frame).unwrap();
    let wire = a.take_output();
    assert!(!wire.windows(marker.len()).any(|w| w == marker));
    b.handle_input(&wire).unwrap();
}

#[test]
fn closed_session_refuses_everything() {
    let (mut a, _) = connected();
    a.close();
    assert!(a.is_closed());
    assert!(matches!(a.send(&Frame::Ping(1)), Err(SessionError::Closed)));
    assert!(matches!(
        a.handle_input(&[0, 1, 2]),
        Err(SessionError::Closed)
    ));
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Any sequence of frames, cut into any pieces on the way, arrives whole and in order.
        #[test]
        fn frames_survive_any_chunking(
            sizes in proptest::collection::vec(0usize..150_000, 1..6),
            cuts in proptest::collection::vec(1usize..70_000, 1..40),
            rekey_after in 1u64..8,
        ) {
            let mut ca = config(1);
            ca.rekey_after = rekey_after;
            let (mut a, mut b) = pair(ca, config(2));
            pump(&mut a, &mut b);
            a.poll_event();
            b.poll_event();
            let sent: Vec<Frame> = sizes
                .iter()
                .enumerate()
                .map(|(i, &size)| Frame::Batch {
                    request: i as u64,
                    batch: Arc::new(Batch {
                        shard_id: 1,
                        events: vec![BatchEvent {
                            raw: Bytes::from(vec![i as u8; size]),
                            insertion_ts: 0,
                            shard_id: 1,
                        }],
                        sequence_start: i as u64,
                        process_nonce: 9,
                    }),
                })
                .collect();
            for f in &sent {
                a.send(f).unwrap();
            }
            let wire = a.take_output();
            let mut rest = &wire[..];
            let mut i = 0;
            while !rest.is_empty() {
                let take = cuts[i % cuts.len()].min(rest.len());
                b.handle_input(&rest[..take]).unwrap();
                rest = &rest[take..];
                i += 1;
            }
            prop_assert_eq!(frames(&mut b), sent);
        }
    }
}

#[test]
fn rekey_after_configured_bytes() {
    let mut ca = config(1);
    ca.rekey_after_bytes = 100_000;
    let (mut a, mut b) = pair(ca, config(2));
    pump(&mut a, &mut b);
    a.poll_event();
    b.poll_event();
    // Each batch is about 50 KB in one record: a rekey record follows every second one.
    for _ in 0..6 {
        a.send(&big_batch(50, 1000)).unwrap();
    }
    pump(&mut a, &mut b);
    assert_eq!(frames(&mut b).len(), 6);
    assert_eq!(a.record_counts().0, 6 + 3);
}

#[test]
fn a_frame_that_cannot_be_encoded_is_refused_and_the_session_stays_open() {
    let (mut a, mut b) = connected();
    let cursor = "c".repeat(usize::from(u16::MAX) + 1);
    let error = a
        .send(&Frame::PollRequest {
            request: 1,
            shard: 0,
            cursor: Some(cursor),
            limit: 1,
        })
        .unwrap_err();
    assert!(matches!(error, SessionError::Encode(_)), "{error}");
    assert!(a.take_output().is_empty(), "nothing of it was sent");
    a.send(&Frame::Ping(5)).unwrap();
    let (ea, eb) = pump(&mut a, &mut b);
    assert!(ea.is_none() && eb.is_none());
    assert_eq!(frames(&mut b), vec![Frame::Ping(5)]);
}
