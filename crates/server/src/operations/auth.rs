//! Authentication and authorization: API keys with scopes for the HTTP API,
//! JWTs for WebSocket subscribers, and per-topic access from the token's claims.
//!
//! - API keys (`--api-keys key1:publish,admin;key2:publish`) are sent as
//!   `Authorization: Bearer KEY`; `publish` covers events, broadcasts, user
//!   messages and approvals, `admin` covers connections, status and history.
//! - JWTs: HS256 with `--jwt-secret`, or RS256/EdDSA with `--jwt-public-key`
//!   (PEM). `exp` and `sub` are required, `nbf` is enforced when present, with
//!   no leeway; `alg: none` and every algorithm but the configured one are
//!   rejected. `sub` is the user; `topics` lists the patterns the user may
//!   subscribe to (`user:{sub}` is always allowed; `["*"]` makes an admin).

use std::collections::HashMap;
use std::path::Path;

use herald_protocol::{Topic, TopicPattern};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// The longest `sub` a token may carry (OpenID Connect allows 255
/// ASCII characters).
pub const MAX_SUB_BYTES: usize = 255;

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Publish,
    Admin,
}

impl Scope {
    /// As `--api-keys` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::Admin => "admin",
        }
    }
}

/// Why credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "authentication required: send a token (?token=, Authorization: Bearer, or the bearer.<JWT> subprotocol)"
    )]
    MissingToken,
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("authentication required: send an API key as Authorization: Bearer KEY")]
    MissingKey,
    #[error("unknown API key")]
    UnknownKey,
    #[error("this API key lacks the {} scope", .0.as_str())]
    MissingScope(Scope),
}

/// Why a token was refused, in the hub's words (the library's name its
/// internals, such as which algorithms it would have taken).
fn why_refused(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "it has expired (exp)".to_owned(),
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidSignature => "its signature does not verify".to_owned(),
        ErrorKind::InvalidAlgorithm => "it is not signed with the algorithm configured".to_owned(),
        ErrorKind::InvalidAudience => {
            "it is for another audience (aud; see --jwt-audience)".to_owned()
        }
        ErrorKind::InvalidIssuer => "it is from another issuer (iss; see --jwt-issuer)".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("it has no {claim} claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("its {claim} claim is malformed"),
        _ => "it is not a well-formed JWT".to_owned(),
    }
}

/// A problem in the security configuration.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("--api-keys: {0}")]
    Keys(String),
    #[error("--jwt-secret {0}")]
    Secret(String),
    #[error("--jwt-public-key {path}: {reason}")]
    PublicKey { path: String, reason: String },
}

/// The claims Herald reads from a subscriber's token. `exp` and `nbf` are
/// NumericDates (RFC 7519: seconds, fractions allowed), checked here to the
/// millisecond; `jsonwebtoken` takes whole seconds only and would skip a
/// fractional `nbf` and call a fractional `exp` missing.
#[derive(Debug, Clone, Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(default)]
    topics: Vec<String>,
    exp: Option<f64>,
    nbf: Option<f64>,
}

/// A NumericDate in ms since the Unix epoch (0 for one before it or not a
/// number).
fn numeric_date_ms(seconds: f64) -> u64 {
    // `as` saturates: NaN and negatives are 0, past u64 is u64::MAX.
    (seconds * 1000.0).floor() as u64
}

/// A verified subscriber.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user (`sub`).
    pub user: String,
    /// The patterns the user may subscribe to (from `topics`).
    pub allowed: Vec<TopicPattern>,
    /// When the token expires, in ms since the Unix epoch.
    pub expires_at_ms: u64,
}

impl Identity {
    /// Whether the user may subscribe to `pattern`: their own `user:{sub}`,
    /// or anything a claimed pattern covers.
    pub fn may_subscribe(&self, pattern: &TopicPattern) -> bool {
        let own = Topic::user(&self.user).ok();
        if own.is_some() && pattern.as_topic() == own.as_ref() {
            return true;
        }
        self.allowed.iter().any(|allowed| allowed.covers(pattern))
    }
}

/// The configured credentials.
#[derive(Clone, Default)]
pub struct Authenticator {
    jwt: Option<(DecodingKey, Algorithm)>,
    keys: HashMap<String, Vec<Scope>>,
    /// The `aud` values a token must name one of (`--jwt-audience`); none:
    /// a token that names an audience is for someone else.
    audience: Vec<String>,
    /// The `iss` a token must name (`--jwt-issuer`).
    issuer: Option<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("jwt", &self.jwt.as_ref().map(|(_, alg)| alg))
            .field("api_keys", &self.keys.len())
            .finish()
    }
}

impl Authenticator {
    /// Builds the authenticator from the flags' values.
    pub fn new(
        jwt_secret: Option<&str>,
        jwt_public_key: Option<&Path>,
        api_keys: Option<&str>,
    ) -> Result<Authenticator, AuthConfigError> {
        let jwt = match (jwt_secret, jwt_public_key) {
            (Some(_), Some(path)) => {
                return Err(AuthConfigError::Secret(format!(
                    "and --jwt-public-key {} are both set: tokens are verified one way; leave one out",
                    path.display()
                )));
            }
            (Some(secret), None) => Some((
                DecodingKey::from_secret(check_secret(secret)?.as_bytes()),
                Algorithm::HS256,
            )),
            (None, Some(path)) => Some(read_public_key(path)?),
            (None, None) => None,
        };
        let keys = match api_keys {
            Some(spec) => parse_api_keys(spec)?,
            None => HashMap::new(),
        };
        Ok(Authenticator {
            jwt,
            keys,
            audience: Vec::new(),
            issuer: None,
        })
    }

    /// Tokens must name one of `audience` in `aud` (`--jwt-audience`; empty:
    /// tokens with an `aud` are refused, as RFC 7519 asks of a recipient
    /// the claim does not name) and `issuer` in `iss` (`--jwt-issuer`).
    pub fn expecting(mut self, audience: Vec<String>, issuer: Option<String>) -> Authenticator {
        self.audience = audience;
        self.issuer = issuer;
        self
    }

    /// Whether subscribers need a token.
    pub fn requires_token(&self) -> bool {
        self.jwt.is_some()
    }

    /// Whether the HTTP API needs a key.
    pub fn requires_key(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Verifies a subscriber's token (see [`MAX_SUB_BYTES`]).
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let Some((key, algorithm)) = &self.jwt else {
            return Err(AuthError::InvalidToken(
                "no token verification is configured".into(),
            ));
        };
        let mut validation = Validation::new(*algorithm);
        validation.leeway = 0;
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let mut required: Vec<&str> = Vec::new();
        if !self.audience.is_empty() {
            validation.set_audience(&self.audience);
            required.push("aud");
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        // RFC 7515 §4.1.11: a token naming critical extensions must be
        // refused by a recipient that does not understand them (this one
        // understands none).
        if jsonwebtoken::decode_header(token).is_ok_and(|header| header.crit.is_some()) {
            return Err(AuthError::InvalidToken(
                "the token names critical header extensions (crit), which this hub does not understand".into(),
            ));
        }
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| AuthError::InvalidToken(why_refused(e.kind())))?;
        let claims = data.claims;
        let refused = |kind| Err(AuthError::InvalidToken(why_refused(&kind)));
        // An empty `sub` names no user: as good as none.
        let sub = claims.sub.filter(|sub| !sub.is_empty());
        let (Some(sub), Some(exp)) = (sub, claims.exp) else {
            let missing = if claims.exp.is_none() { "exp" } else { "sub" };
            return refused(ErrorKind::MissingRequiredClaim(missing.to_owned()));
        };
        // OpenID Connect's bound: a user id is logged and shown, not a payload.
        if sub.len() > MAX_SUB_BYTES {
            return Err(AuthError::InvalidToken(format!(
                "the token's sub is longer than {MAX_SUB_BYTES} bytes"
            )));
        }
        // To the millisecond, as the connection's expiry timer closes it.
        let now = crate::core::clock::now_ms();
        let expires_at_ms = numeric_date_ms(exp);
        if expires_at_ms <= now {
            return refused(ErrorKind::ExpiredSignature);
        }
        if claims.nbf.is_some_and(|nbf| numeric_date_ms(nbf) > now) {
            return refused(ErrorKind::ImmatureSignature);
        }
        // The user's messages and approvals go to `user:{sub}`: a `sub` that
        // makes no topic is admitted, but nothing can be addressed to it.
        if let Err(error) = Topic::user(&sub) {
            tracing::warn!(%error, "a token's sub is no user id: messages and approvals cannot reach this user");
        }
        let allowed = claims
            .topics
            .iter()
            .filter_map(|pattern| TopicPattern::parse(pattern).ok())
            .collect();
        Ok(Identity {
            user: sub,
            allowed,
            expires_at_ms,
        })
    }

    /// Checks an `Authorization` header value against the API keys; returns the key.
    pub fn check_key(
        &self,
        authorization: Option<&str>,
        scope: Scope,
    ) -> Result<String, AuthError> {
        let key = authorization
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .ok_or(AuthError::MissingKey)?;
        let scopes = self.keys.get(key).ok_or(AuthError::UnknownKey)?;
        if !scopes.contains(&scope) {
            return Err(AuthError::MissingScope(scope));
        }
        Ok(key.to_owned())
    }
}

fn read_public_key(path: &Path) -> Result<(DecodingKey, Algorithm), AuthConfigError> {
    let error = |reason: String| AuthConfigError::PublicKey {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        return Ok((key, Algorithm::EdDSA));
    }
    DecodingKey::from_rsa_pem(&pem)
        .map(|key| (key, Algorithm::RS256))
        .map_err(|_| error("not an RSA or Ed25519 public key in PEM".into()))
}

/// What `herald config print` writes in place of a secret. Refused as one:
/// a printed configuration read back must not run with it.
pub const MASKED_SECRET: &str = "********";

/// Shorter HS256 secrets are warned about: RFC 7518 asks for a key at
/// least as long as the hash (256 bits).
const SHORTEST_SAFE_SECRET: usize = 32;

/// `secret` if it can sign tokens: an empty one (an unset variable passed
/// on, `HERALD_JWT_SECRET=`) would let anyone sign them, and the mask is
/// not a secret.
fn check_secret(secret: &str) -> Result<&str, AuthConfigError> {
    if secret.trim().is_empty() {
        return Err(AuthConfigError::Secret(
            "is empty: anyone could sign tokens with it; give the secret, or leave it out".into(),
        ));
    }
    if secret == MASKED_SECRET {
        return Err(AuthConfigError::Secret(format!(
            "is {MASKED_SECRET:?}, what `herald config print` writes in place of the secret: give the real one"
        )));
    }
    if secret.len() < SHORTEST_SAFE_SECRET {
        tracing::warn!(
            length = secret.len(),
            "a --jwt-secret shorter than 32 bytes is easy to guess (HS256 wants at least 256 bits)"
        );
    }
    Ok(secret)
}

/// Parses `key1:publish,admin;key2:publish`.
pub fn parse_api_keys(spec: &str) -> Result<HashMap<String, Vec<Scope>>, AuthConfigError> {
    let mut keys = HashMap::new();
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        if entry == MASKED_SECRET {
            return Err(AuthConfigError::Keys(format!(
                "{MASKED_SECRET:?} is what `herald config print` writes in place of the keys: give the real ones"
            )));
        }
        let (key, scopes) = entry.split_once(':').ok_or_else(|| {
            AuthConfigError::Keys(format!("{entry:?} has no scopes (write KEY:publish,admin)"))
        })?;
        if key.trim().is_empty() {
            return Err(AuthConfigError::Keys(format!("{entry:?} has an empty key")));
        }
        // Short keys work (the contract's own example is `key1`), but say so:
        // a key is all that stands between the network and publishing.
        if key.len() < 16 {
            tracing::warn!(
                length = key.len(),
                "an API key shorter than 16 characters is easy to guess"
            );
        }
        let scopes = scopes
            .split(',')
            .map(|scope| match scope.trim() {
                "publish" => Ok(Scope::Publish),
                "admin" => Ok(Scope::Admin),
                other => Err(AuthConfigError::Keys(format!(
                    "unknown scope {other:?} (use publish or admin)"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        keys.insert(key.to_owned(), scopes);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    fn now_s() -> u64 {
        crate::core::clock::now_ms() / 1000
    }

    fn token(claims: &serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn hs256() -> Authenticator {
        Authenticator::new(Some("s3cret-s3cret"), None, None).unwrap()
    }

    #[test]
    fn a_secret_and_a_public_key_together_are_refused_not_one_silently_ignored() {
        let refused = Authenticator::new(
            Some("a-secret-of-thirty-two-bytes-or-more"),
            Some(Path::new("/nonexistent.pem")),
            None,
        );
        assert!(
            matches!(&refused, Err(AuthConfigError::Secret(why)) if why.contains("both")),
            "{refused:?}"
        );
    }

    #[test]
    fn an_empty_or_masked_secret_is_refused() {
        for secret in ["", "  ", MASKED_SECRET] {
            assert!(matches!(
                Authenticator::new(Some(secret), None, None),
                Err(AuthConfigError::Secret(_))
            ));
        }
    }

    #[test]
    fn a_valid_token_names_the_user_and_their_patterns() {
        let t = token(
            &json!({"sub": "u1", "topics": ["execution:*"], "exp": now_s() + 60}),
            "s3cret-s3cret",
        );
        let identity = hs256().verify(&t).unwrap();
        assert_eq!(identity.user, "u1");
        assert!(identity.may_subscribe(&TopicPattern::parse("execution:e1").unwrap()));
        assert!(identity.may_subscribe(&TopicPattern::parse("execution:*").unwrap()));
        assert!(identity.may_subscribe(&TopicPattern::parse("user:u1").unwrap()));
        assert!(!identity.may_subscribe(&TopicPattern::parse("user:u2").unwrap()));
        assert!(!identity.may_subscribe(&TopicPattern::All));
    }

    #[test]
    fn forged_expired_early_and_unsigned_tokens_are_rejected() {
        let auth = hs256();
        let forged = token(&json!({"sub": "u1", "exp": now_s() + 60}), "another-secret");
        let expired = token(&json!({"sub": "u1", "exp": now_s() - 10}), "s3cret-s3cret");
        let early = token(
            &json!({"sub": "u1", "exp": now_s() + 60, "nbf": now_s() + 30}),
            "s3cret-s3cret",
        );
        let header = base64url(r#"{"alg":"none","typ":"JWT"}"#);
        let body = base64url(&format!(r#"{{"sub":"u1","exp":{}}}"#, now_s() + 60));
        let unsigned = format!("{header}.{body}.");
        // A fractional NumericDate is a date like any other.
        let fractional = token(
            &json!({"sub": "u1", "exp": now_s() as f64 + 600.5, "nbf": now_s() as f64 - 0.5}),
            "s3cret-s3cret",
        );
        assert!(auth.verify(&fractional).is_ok());
        let early_by_a_fraction = token(
            &json!({"sub": "u1", "exp": now_s() + 600, "nbf": now_s() as f64 + 30.5}),
            "s3cret-s3cret",
        );
        let no_exp = token(&json!({"sub": "u1"}), "s3cret-s3cret");
        let refusal = |bad: &str| match auth.verify(bad) {
            Err(AuthError::InvalidToken(why)) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(refusal(&early_by_a_fraction), "it is not valid yet (nbf)");
        assert_eq!(refusal(&no_exp), "it has no exp claim");
        // Within the second of its `exp`, a token has expired too.
        let this_second = token(&json!({"sub": "u1", "exp": now_s()}), "s3cret-s3cret");
        for bad in [
            forged,
            expired,
            this_second,
            early,
            unsigned,
            "garbage".to_owned(),
        ] {
            assert!(auth.verify(&bad).is_err(), "{bad} was accepted");
        }
    }

    fn base64url(text: &str) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = text.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn api_keys_need_the_right_scope() {
        let auth = Authenticator::new(
            None,
            None,
            Some("pubkey-123:publish;admin-key-1:publish,admin"),
        )
        .unwrap();
        assert_eq!(
            auth.check_key(None, Scope::Publish),
            Err(AuthError::MissingKey)
        );
        assert_eq!(
            auth.check_key(Some("Bearer nope-nope"), Scope::Publish),
            Err(AuthError::UnknownKey)
        );
        assert!(
            auth.check_key(Some("Bearer pubkey-123"), Scope::Publish)
                .is_ok()
        );
        assert_eq!(
            auth.check_key(Some("Bearer pubkey-123"), Scope::Admin),
            Err(AuthError::MissingScope(Scope::Admin))
        );
        assert!(
            auth.check_key(Some("Bearer admin-key-1"), Scope::Admin)
                .is_ok()
        );
        assert!(parse_api_keys("k:root").is_err());
        assert!(parse_api_keys(" :publish").is_err());
    }

    #[test]
    fn the_contracts_own_api_keys_example_is_accepted() {
        let keys = parse_api_keys("key1:publish,admin;key2:publish").unwrap();
        assert_eq!(keys["key1"], [Scope::Publish, Scope::Admin]);
        assert_eq!(keys["key2"], [Scope::Publish]);
    }
}
