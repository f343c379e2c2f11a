//! Tokens: who a connection is, and what it may subscribe to.
//!
//! A connection token is a JWT whose `sub` is the user id, with optional
//! `exp`, `info` (JSON shown to others in presence and join/leave) and
//! `channels` (patterns the user may subscribe to in private namespaces). A
//! subscription token grants one `channel` to one `sub`. HS256 tokens are
//! checked with the HMAC secret; RS256 and ES256 tokens with the configured
//! PEM public keys. The key is chosen by the token's algorithm, and an
//! algorithm with no configured key is refused, so `none` and HS/RS
//! confusion cannot pass.

pub mod mint;

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::stream::RawJson;

pub use mint::mint_hs256;

/// The claims of a connection token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionClaims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Public information about the connection (name, avatar…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<RawJson>,
    /// Channel patterns (`orders:*`) this user may subscribe to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// Present only in subscription tokens: refused here so a subscription
    /// token cannot be used to connect.
    #[serde(default, skip_serializing)]
    pub channel: Option<String>,
}

/// The claims of a subscription token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionClaims {
    /// The user id; must equal the connection's.
    pub sub: String,
    /// The one channel granted.
    pub channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Why the verifier could not be built.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid {kind} public key in PEM: {source}")]
    Pem {
        path: String,
        kind: &'static str,
        source: jsonwebtoken::errors::Error,
    },
    #[error(
        "no token key configured (auth.hmac_secret, auth.rsa_public_key or auth.ecdsa_public_key)"
    )]
    NoKey,
}

/// Checks tokens against the node's keys.
pub struct Verifier {
    hmac: Option<DecodingKey>,
    rsa: Option<DecodingKey>,
    ecdsa: Option<DecodingKey>,
}

impl Verifier {
    /// A verifier from an HMAC secret and PEM public key files.
    pub fn new(
        hmac_secret: Option<&str>,
        rsa_pem: Option<&std::path::Path>,
        ecdsa_pem: Option<&std::path::Path>,
    ) -> Result<Self, KeyError> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|source| KeyError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        let rsa =
            match rsa_pem {
                Some(path) => Some(DecodingKey::from_rsa_pem(&read(path)?).map_err(|source| {
                    KeyError::Pem {
                        path: path.display().to_string(),
                        kind: "RSA",
                        source,
                    }
                })?),
                None => None,
            };
        let ecdsa =
            match ecdsa_pem {
                Some(path) => Some(DecodingKey::from_ec_pem(&read(path)?).map_err(|source| {
                    KeyError::Pem {
                        path: path.display().to_string(),
                        kind: "ECDSA",
                        source,
                    }
                })?),
                None => None,
            };
        let hmac = hmac_secret.map(|s| DecodingKey::from_secret(s.as_bytes()));
        if hmac.is_none() && rsa.is_none() && ecdsa.is_none() {
            return Err(KeyError::NoKey);
        }
        Ok(Verifier { hmac, rsa, ecdsa })
    }

    /// Checks a connection token.
    pub fn connection(&self, token: &str) -> Result<ConnectionClaims, TokenError> {
        let claims: ConnectionClaims = self.verify(token)?;
        if claims.channel.is_some() {
            return Err(TokenError::Invalid(
                "a subscription token cannot be used to connect".into(),
            ));
        }
        Ok(claims)
    }

    /// Checks a subscription token.
    pub fn subscription(&self, token: &str) -> Result<SubscriptionClaims, TokenError> {
        self.verify(token)
    }

    fn verify<T: serde::de::DeserializeOwned>(&self, token: &str) -> Result<T, TokenError> {
        let header =
            decode_header(token).map_err(|e| TokenError::Invalid(format!("malformed: {e}")))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hmac.as_ref(),
            Algorithm::RS256 => self.rsa.as_ref(),
            Algorithm::ES256 => self.ecdsa.as_ref(),
            _ => None,
        }
        .ok_or_else(|| {
            TokenError::Invalid(format!("algorithm {:?} is not accepted", header.alg))
        })?;
        let mut validation = Validation::new(header.alg);
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        validation.validate_aud = false;
        decode::<T>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })
    }
}
