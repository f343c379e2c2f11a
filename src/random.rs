//! Random identifiers and secrets from the operating system's CSPRNG.

use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

/// `bytes` random bytes, base64url-encoded without padding.
pub fn token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // SystemRandom only fails when the OS has no entropy source at all; a
    // server cannot run safely then, so this is the one place we abort.
    SystemRandom::new()
        .fill(&mut buf)
        .expect("operating system random source unavailable");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// A random u64.
pub fn u64() -> u64 {
    let mut buf = [0u8; 8];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("operating system random source unavailable");
    u64::from_le_bytes(buf)
}
