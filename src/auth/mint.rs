//! Minting HS256 tokens (the `switchboard token` command, dev-mode demo).

use jsonwebtoken::{encode, EncodingKey, Header};
use serde::Serialize;

/// Signs `claims` with HS256 and `secret`.
pub fn mint_hs256(
    secret: &str,
    claims: &impl Serialize,
) -> Result<String, jsonwebtoken::errors::Error> {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;

    fn claims(exp: Option<u64>) -> ConnectionClaims {
        ConnectionClaims {
            sub: "42".into(),
            exp,
            info: None,
            channels: Some(vec!["orders:*".into()]),
            channel: None,
        }
    }

    #[test]
    fn minted_token_verifies() {
        let token = mint_hs256("s3cret", &claims(None)).unwrap();
        let v = Verifier::new(Some("s3cret"), None, None).unwrap();
        let c = v.connection(&token).unwrap();
        assert_eq!(c.sub, "42");
        assert_eq!(c.channels.unwrap(), vec!["orders:*"]);
    }

    #[test]
    fn wrong_secret_expired_and_none_are_refused() {
        let v = Verifier::new(Some("s3cret"), None, None).unwrap();
        let forged = mint_hs256("other", &claims(None)).unwrap();
        assert!(matches!(v.connection(&forged), Err(TokenError::Invalid(_))));
        let expired = mint_hs256("s3cret", &claims(Some(1))).unwrap();
        assert_eq!(v.connection(&expired).unwrap_err(), TokenError::Expired);
        // alg "none": header {"alg":"none","typ":"JWT"}, empty signature.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiI0MiJ9.";
        assert!(matches!(v.connection(none), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn subscription_token_cannot_connect() {
        let v = Verifier::new(Some("k"), None, None).unwrap();
        let sub = SubscriptionClaims {
            sub: "42".into(),
            channel: "chat:x".into(),
            exp: None,
        };
        let token = mint_hs256("k", &sub).unwrap();
        assert!(v.connection(&token).is_err());
        assert_eq!(v.subscription(&token).unwrap().channel, "chat:x");
    }
}
