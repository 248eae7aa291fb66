//! The identity payload of handshake messages two and three: a version byte, the sender's
//! ed25519 public key, and its signature over a fixed context, the sender's Noise static key
//! and the handshake hash.

use crate::identity::{EntityKeypair, NodeId};

/// Length of the identity payload carried in handshake messages two and three.
pub const IDENTITY_PAYLOAD_LEN: usize = 1 + 32 + 64;
/// Domain separation for the identity signature.
const SIGNATURE_CONTEXT: &[u8] = b"net-mesh identity binding v1";

/// The identity payload: version byte, ed25519 public key, signature over the context, the
/// sender's Noise static key and the handshake hash.
pub(super) fn identity_payload(
    keypair: &EntityKeypair,
    static_public: &[u8; 32],
    hash: &[u8],
) -> Vec<u8> {
    let signature = keypair.sign(&signed_message(static_public, hash));
    let mut out = Vec::with_capacity(IDENTITY_PAYLOAD_LEN);
    out.push(1);
    out.extend_from_slice(keypair.node_id().as_bytes());
    out.extend_from_slice(&signature);
    out
}

pub(super) fn signed_message(static_public: &[u8], hash: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNATURE_CONTEXT.len() + static_public.len() + hash.len());
    m.extend_from_slice(SIGNATURE_CONTEXT);
    m.extend_from_slice(static_public);
    m.extend_from_slice(hash);
    m
}

/// Decodes an identity payload into the claimed node id and its signature, checking only its
/// shape; the error says what is wrong with it.
pub(super) fn decode(payload: &[u8]) -> Result<(NodeId, [u8; 64]), &'static str> {
    if payload.len() != IDENTITY_PAYLOAD_LEN {
        return Err("identity payload has the wrong length");
    }
    if payload[0] != 1 {
        return Err("unknown identity payload version");
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&payload[1..33]);
    let mut signature = [0u8; 64];
    signature.copy_from_slice(&payload[33..]);
    let id = NodeId::from_bytes(key);
    id.verifying_key()
        .map_err(|_| "identity key is not a valid point")?;
    Ok((id, signature))
}
