//! The opening handshake's key arithmetic (RFC 6455 §4).
//!
//! HTTP parsing and the `101 Switching Protocols` response are the HTTP
//! layer's business; this module only computes the keys.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::digest::{Context, SHA1_FOR_LEGACY_USE_ONLY};
use ring::rand::{SecureRandom, SystemRandom};

/// The GUID appended to the client's key (RFC 6455 §1.3).
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value answering a `Sec-WebSocket-Key`:
/// `base64(SHA-1(key ++ GUID))`.
///
/// The key is used as given (the caller trims surrounding whitespace from the
/// header value); it is not checked to be 16 base64-encoded bytes.
pub fn accept_key(sec_websocket_key: &[u8]) -> String {
    let mut ctx = Context::new(&SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(sec_websocket_key);
    ctx.update(WS_GUID);
    STANDARD.encode(ctx.finish().as_ref())
}

/// A fresh `Sec-WebSocket-Key` for a client: 16 random bytes, base64-encoded.
pub fn client_key() -> String {
    let mut nonce = [0u8; 16];
    // SystemRandom only fails when the OS has no entropy source at all; the
    // process cannot run safely then (same policy as `crate::random`).
    SystemRandom::new()
        .fill(&mut nonce)
        .expect("operating system random source unavailable");
    STANDARD.encode(nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn client_keys_are_16_random_bytes() {
        let a = client_key();
        let b = client_key();
        assert_eq!(a.len(), 24);
        assert_eq!(STANDARD.decode(&a).unwrap().len(), 16);
        assert_ne!(a, b);
        assert_eq!(accept_key(a.as_bytes()).len(), 28);
    }
}
