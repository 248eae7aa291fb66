//! The protocol document against the implementation: every handshake message size that
//! `docs/mesh-protocol.md` states (§3.2) is what real sessions write, with and without a
//! pre-shared key. The test reads the document's table, so the document cannot drift.

use net_mesh::{EntityKeypair, Role, Session, SessionConfig};
use std::time::Instant;

const DOC: &str = include_str!("../../../docs/mesh-protocol.md");

/// The size a table cell states: a plain number, or a sum ending in `= total` whose terms
/// must add up to that total.
fn cell_size(cell: &str) -> usize {
    let (terms, total) = match cell.rsplit_once('=') {
        Some((terms, total)) => (Some(terms), total),
        None => (None, cell),
    };
    let total: usize = total
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("size cell {cell:?} does not end in a number"));
    if let Some(terms) = terms {
        let sum: usize = terms
            .split('+')
            .map(|t| t.trim().parse::<usize>().expect("a number in a sum"))
            .sum();
        assert_eq!(sum, total, "the sum in {cell:?} is wrong");
    }
    total
}

/// The rows of the §3.2 size table: (message number, size without psk, size with psk).
fn documented_sizes() -> Vec<(usize, usize, usize)> {
    let section = DOC
        .split("### 3.2 Messages")
        .nth(1)
        .expect("section 3.2 in the protocol document");
    let section = section.split("\n### ").next().unwrap();
    let mut rows = Vec::new();
    for line in section.lines() {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if cells.len() != 3 {
            continue;
        }
        let Ok(message) = cells[0].parse::<usize>() else {
            continue;
        };
        rows.push((message, cell_size(cells[1]), cell_size(cells[2])));
    }
    rows
}

/// Splits a handshake output into its records' body lengths.
fn record_lengths(mut bytes: &[u8]) -> Vec<usize> {
    let mut lengths = Vec::new();
    while bytes.len() >= 2 {
        let n = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
        lengths.push(n);
        bytes = &bytes[2 + n..];
    }
    assert!(bytes.is_empty(), "a partial record in handshake output");
    lengths
}

/// Runs a handshake between two sessions and returns the body size of messages 1, 2 and 3.
fn handshake_sizes(psk: Option<[u8; 32]>) -> Vec<usize> {
    let config = |psk| {
        let mut c = SessionConfig::new(EntityKeypair::generate().unwrap());
        c.psk = psk;
        c
    };
    let now = Instant::now();
    let mut initiator = Session::new(config(psk), Role::Initiator, now).unwrap();
    let mut responder = Session::new(config(psk), Role::Responder, now).unwrap();
    let mut sizes = Vec::new();
    let m1 = initiator.take_output();
    sizes.extend(record_lengths(&m1));
    responder.handle_input(&m1).unwrap();
    let m2 = responder.take_output();
    sizes.extend(record_lengths(&m2));
    initiator.handle_input(&m2).unwrap();
    // Message 3 is the first record the initiator writes after message 2.
    let m3 = initiator.take_output();
    let first = record_lengths(&m3)[0];
    sizes.push(first);
    responder.handle_input(&m3).unwrap();
    assert!(initiator.is_established() && responder.is_established());
    sizes
}

#[test]
fn handshake_message_sizes_match_the_protocol_document() {
    let rows = documented_sizes();
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "the document's table lists messages 1 to 3"
    );
    let plain = handshake_sizes(None);
    let with_psk = handshake_sizes(Some([9; 32]));
    for (i, &(message, without, with)) in rows.iter().enumerate() {
        assert_eq!(
            plain[i], without,
            "message {message} without a psk: the document says {without}, a session writes {}",
            plain[i]
        );
        assert_eq!(
            with_psk[i], with,
            "message {message} with a psk: the document says {with}, a session writes {}",
            with_psk[i]
        );
    }
}

#[test]
fn the_size_cells_are_checked() {
    assert_eq!(cell_size("32"), 32);
    assert_eq!(cell_size("32 + 16 = 48"), 48);
    assert!(std::panic::catch_unwind(|| cell_size("32 + 16 = 32")).is_err());
}
