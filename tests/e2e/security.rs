//! Security (H8): every attack the contract names, made by a real client
//! against the real binary. Tokens are signed here with `jsonwebtoken` and
//! the test-only keys in `tests/fixtures/keys/`; unsigned and hand-built
//! frames and requests go over raw TCP where a library client would refuse
//! to send them.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_tests::{
    DEFAULT_TIMEOUT, Hub, Redis, START_TIMEOUT, WsClient, frame_type, metric, raw_ws_upgrade,
    workspace_root,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, header};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{herald, str_field};

/// The HS256 secret the hubs in this module verify with.
pub(crate) const SECRET: &str = "e2e-hs256-secret-0123456789abcdef";
/// API keys: one that may publish, one that may also administer.
pub(crate) const API_KEYS: &str = "pubkey123:publish;adminkey1:publish,admin";
pub(crate) const PUBLISH_KEY: &str = "pubkey123";
pub(crate) const ADMIN_KEY: &str = "adminkey1";

// ---------------------------------------------------------------------------
// Tokens

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Claims for `sub` allowed `topics`, expiring `exp`.
fn claims(sub: &str, topics: &[&str], exp: u64) -> Value {
    json!({"sub": sub, "topics": topics, "exp": exp})
}

/// Claims valid for a minute.
pub(crate) fn fresh(sub: &str, topics: &[&str]) -> Value {
    claims(sub, topics, now_s() + 60)
}

fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> Result<String> {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).context("signing a token")
}

/// An HS256 token signed with [`SECRET`].
pub(crate) fn hs256(claims: &Value) -> Result<String> {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

/// A hand-built `alg: none` token: header and claims, no signature.
fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{body}.")
}

/// A test-only key from `tests/fixtures/keys/`.
fn key_path(name: &str) -> PathBuf {
    workspace_root()
        .join("tests")
        .join("fixtures")
        .join("keys")
        .join(name)
}

fn key_bytes(name: &str) -> Result<Vec<u8>> {
    let path = key_path(name);
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

fn key_arg(name: &str) -> Result<String> {
    key_path(name)
        .to_str()
        .map(str::to_owned)
        .context("key path is not UTF-8")
}

/// `/ws?token=T` (JWTs are URL-safe as they are).
pub(crate) fn with_token(path: &str, token: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}token={token}")
}

/// Starts a hub that verifies HS256 tokens with [`SECRET`], plus `extra` flags.
async fn hs256_hub(extra: &[&str]) -> Result<Hub> {
    let mut args = vec!["--jwt-secret", SECRET];
    args.extend_from_slice(extra);
    herald().start(&args).await
}

/// Connects to `path` with `token` in the query and reads the `welcome`.
async fn ws_as(hub: &Hub, path: &str, token: &str) -> Result<WsClient> {
    hub.ws(&with_token(path, token)).await
}

// ---------------------------------------------------------------------------
// Upgrades with chosen headers

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a WebSocket upgrade went.
enum Upgrade {
    /// `101`: the stream and the response headers.
    Accepted(Box<Socket>, tungstenite::handshake::client::Response),
    /// Any other answer: its status and body.
    Refused { status: u16, body: String },
}

/// Attempts an upgrade to `url` with extra request `headers`.
async fn upgrade(url: &str, headers: &[(&str, &str)]) -> Result<Upgrade> {
    let mut request = url.into_client_request()?;
    for (name, value) in headers {
        request
            .headers_mut()
            .append(HeaderName::try_from(*name)?, HeaderValue::try_from(*value)?);
    }
    let connect = timeout(DEFAULT_TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .with_context(|| format!("upgrading {url} timed out"))?;
    match connect {
        Ok((stream, response)) => Ok(Upgrade::Accepted(Box::new(stream), response)),
        Err(tungstenite::Error::Http(response)) => Ok(Upgrade::Refused {
            status: response.status().as_u16(),
            body: response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        }),
        Err(e) => Err(e).with_context(|| format!("upgrading {url}")),
    }
}

/// The first text frame of an accepted upgrade, as JSON.
async fn first_frame(stream: &mut Socket) -> Result<Value> {
    use futures::StreamExt;
    loop {
        let message = timeout(DEFAULT_TIMEOUT, stream.next())
            .await
            .context("no frame after the upgrade")?
            .context("the connection ended after the upgrade")??;
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).context("frame is not JSON");
        }
    }
}

/// The upgrade must be accepted and start with `welcome`; returns the response.
async fn expect_welcome(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<tungstenite::handshake::client::Response> {
    match upgrade(url, headers).await? {
        Upgrade::Accepted(mut stream, response) => {
            let frame = first_frame(&mut stream).await?;
            ensure!(frame_type(&frame) == "welcome", "first frame: {frame}");
            let _ = timeout(Duration::from_secs(1), stream.close(None)).await;
            Ok(response)
        }
        Upgrade::Refused { status, body } => {
            bail!("upgrade with {headers:?} refused: {status} {body}")
        }
    }
}

/// An upgrade of `/ws` with `token` in the query must be refused 401.
async fn token_refused(hub: &Hub, token: &str) -> Result<()> {
    expect_refused(
        &hub.ws_url(&with_token("/ws", token)),
        &[],
        401,
        "unauthorized",
    )
    .await
}

/// The upgrade must be refused with `status` (and, as JSON, `code`).
pub(crate) async fn expect_refused(
    url: &str,
    headers: &[(&str, &str)],
    status: u16,
    code: &str,
) -> Result<()> {
    match upgrade(url, headers).await? {
        Upgrade::Accepted(..) => bail!("upgrade of {url} with {headers:?} was accepted"),
        Upgrade::Refused { status: got, body } => {
            ensure!(
                got == status,
                "{url} with {headers:?}: status {got}, expected {status}: {body}"
            );
            let json: Value = serde_json::from_str(&body)
                .with_context(|| format!("refusal body is not JSON: {body}"))?;
            ensure!(str_field(&json, "code") == code, "refusal body: {body}");
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP with an API key

/// `METHOD path` with an optional `Authorization: Bearer KEY` and JSON body;
/// returns status and body (JSON, or a JSON string when it does not parse).
pub(crate) async fn api(
    hub: &Hub,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value)> {
    let client = reqwest::Client::builder()
        .timeout(DEFAULT_TIMEOUT)
        .build()?;
    let mut request = client.request(method, format!("{}{path}", hub.http_url()));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.context("HTTP request")?;
    let status = response.status().as_u16();
    let text = response.text().await.context("reading the body")?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, body))
}

fn one_event(topic: &str) -> Value {
    json!({"topic": topic, "event_type": "execution.progress", "data": {"n": 1}})
}

// ---------------------------------------------------------------------------
// Frames

fn is_error(frame: &Value, code: &str, reference: &str) -> bool {
    frame_type(frame) == "error"
        && str_field(frame, "code") == code
        && str_field(frame, "ref") == reference
}

fn is_ack(frame: &Value, reference: &str) -> bool {
    frame_type(frame) == "ack" && str_field(frame, "ref") == reference
}

/// Sends `frame` with request id `id` and waits for the error `code` with that `ref`.
async fn expect_error(client: &mut WsClient, frame: Value, id: &str, code: &str) -> Result<Value> {
    let mut frame = frame;
    frame["id"] = json!(id);
    client.send_json(&frame).await?;
    client
        .recv_until(|f| is_error(f, code, id) || is_ack(f, id) || frame_type(f) == "subscribed")
        .await
        .and_then(|f| {
            ensure!(
                is_error(&f, code, id),
                "expected error {code} ref {id}, got {f}"
            );
            Ok(f)
        })
}

#[tokio::test]
async fn a_token_for_another_audience_or_issuer_is_refused_and_one_for_the_hubs_admitted()
-> Result<()> {
    let with = |mut claims: Value, field: &str, value: &str| {
        claims[field] = json!(value);
        claims
    };
    // Without --jwt-audience, a token naming any audience is for someone else.
    let hub = hs256_hub(&[]).await?;
    let elsewhere = hs256(&with(fresh("u1", &[]), "aud", "billing"))?;
    token_refused(&hub, &elsewhere)
        .await
        .context("aud without --jwt-audience")?;
    expect_welcome(
        &hub.ws_url(&with_token("/ws", &hs256(&fresh("u1", &[]))?)),
        &[],
    )
    .await?;

    let hub = hs256_hub(&[
        "--jwt-audience",
        "herald,events",
        "--jwt-issuer",
        "https://id.example",
    ])
    .await?;
    let ours = with(
        with(fresh("u1", &[]), "aud", "events"),
        "iss",
        "https://id.example",
    );
    expect_welcome(&hub.ws_url(&with_token("/ws", &hs256(&ours)?)), &[])
        .await
        .context("the hub's audience and issuer")?;
    for (what, claims) in [
        ("another audience", with(ours.clone(), "aud", "billing")),
        (
            "another issuer",
            with(ours.clone(), "iss", "https://other.example"),
        ),
        (
            "no audience",
            with(fresh("u1", &[]), "iss", "https://id.example"),
        ),
    ] {
        token_refused(&hub, &hs256(&claims)?)
            .await
            .with_context(|| what.to_owned())?;
    }
    Ok(())
}

// ===========================================================================
// Tokens at the upgrade

#[tokio::test]
async fn hs256_token_in_query_is_admitted_with_welcome() -> Result<()> {
    let hub = hs256_hub(&[]).await?;
    let token = hs256(&fresh("u1", &[]))?;
    let client = ws_as(&hub, "/ws", &token).await?;
    ensure!(!client.session_id().is_empty(), "{}", client.welcome);
    Ok(())
}

#[tokio::test]
async fn hs256_token_in_authorization_header_is_admitted_with_welcome() -> Result<()> {
    let hub = hs256_hub(&[]).await?;
    let bearer = format!("Bearer {}", hs256(&fresh("u1", &[]))?);
    expect_welcome(&hub.ws_url("/ws"), &[("authorization", &bearer)]).await?;
    Ok(())
}

#[tokio::test]
async fn hs256_token_in_subprotocol_is_admitted_and_answered_with_herald_v1() -> Result<()> {
    let hub = hs256_hub(&[]).await?;
    let protocols = format!("herald.v1, bearer.{}", hs256(&fresh("u1", &[]))?);
    let response = expect_welcome(
        &hub.ws_url("/ws"),
        &[("sec-websocket-protocol", &protocols)],
    )
    .await?;
    let chosen = response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok());
    ensure!(
        chosen == Some("herald.v1"),
        "the hub selected {chosen:?}, expected herald.v1"
    );
    Ok(())
}

#[tokio::test]
async fn a_refused_upgrade_is_counted_once() -> Result<()> {
    let hub = hs256_hub(&[]).await?;
    for _ in 0..3 {
        token_refused(&hub, "not-a-token").await?;
    }
    let text = hub.http().get("/metrics").await?.text;
    let counted = metric(&text, "herald_errors_total{code=\"unauthorized\"}");
    ensure!(counted == Some(3.0), "{counted:?} for 3 refusals");
    Ok(())
}

#[tokio::test]
async fn forged_expired_early_unsigned_and_missing_tokens_get_401_before_the_upgrade() -> Result<()>
{
    let hub = hs256_hub(&[]).await?;
    let now = now_s();
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"not-the-hub-secret-0123456789"),
        &fresh("u1", &["*"]),
    )?;
    let expired = hs256(&claims("u1", &[], now - 30))?;
    let mut early = fresh("u1", &[]);
    early["nbf"] = json!(now + 60);
    let early = hs256(&early)?;
    let none = unsigned(&fresh("u1", &["*"]));
    let url = hub.ws_url("/ws");
    for (what, token) in [
        ("forged", &forged),
        ("expired", &expired),
        ("not yet valid", &early),
        ("alg none", &none),
    ] {
        token_refused(&hub, token)
            .await
            .with_context(|| format!("{what} token in the query"))?;
        let bearer = format!("Bearer {token}");
        expect_refused(&url, &[("authorization", &bearer)], 401, "unauthorized")
            .await
            .with_context(|| format!("{what} token in Authorization"))?;
        let protocols = format!("herald.v1, bearer.{token}");
        expect_refused(
            &url,
            &[("sec-websocket-protocol", &protocols)],
            401,
            "unauthorized",
        )
        .await
        .with_context(|| format!("{what} token in the subprotocol"))?;
    }
    expect_refused(&url, &[], 401, "unauthorized")
        .await
        .context("no token")?;
    expect_refused(&hub.ws_url("/ws/events"), &[], 401, "unauthorized")
        .await
        .context("no token on /ws/events")?;
    // The refusal says why in the hub's words.
    for (token, why) in [
        (&expired, "expired (exp)"),
        (&early, "not valid yet (nbf)"),
        (&forged, "signature does not verify"),
    ] {
        match upgrade(&hub.ws_url(&with_token("/ws", token)), &[]).await? {
            Upgrade::Refused { body, .. } => ensure!(body.contains(why), "{why}: {body}"),
            Upgrade::Accepted(..) => bail!("{why}: admitted"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn rs256_token_is_admitted_and_hs256_signed_with_the_public_pem_is_refused() -> Result<()> {
    let hub = herald()
        .start(&["--jwt-public-key", &key_arg("rsa_public.pem")?])
        .await?;
    let private = EncodingKey::from_rsa_pem(&key_bytes("rsa_private.pem")?)?;
    let good = sign(Algorithm::RS256, &private, &fresh("u1", &[]))?;
    ws_as(&hub, "/ws", &good).await.context("RS256 token")?;
    // Algorithm confusion: the public key's PEM bytes used as an HMAC secret.
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&key_bytes("rsa_public.pem")?),
        &fresh("u1", &["*"]),
    )?;
    token_refused(&hub, &confused)
        .await
        .context("HS256 token keyed with the RSA public PEM")?;
    token_refused(&hub, &unsigned(&fresh("u1", &["*"])))
        .await
        .context("alg none against an RSA key")?;
    Ok(())
}

#[tokio::test]
async fn eddsa_token_is_admitted_and_one_from_another_ed25519_key_is_refused() -> Result<()> {
    let hub = herald()
        .start(&["--jwt-public-key", &key_arg("ed25519_public.pem")?])
        .await?;
    let private = EncodingKey::from_ed_pem(&key_bytes("ed25519_private.pem")?)?;
    let good = sign(Algorithm::EdDSA, &private, &fresh("u1", &[]))?;
    ws_as(&hub, "/ws", &good).await.context("EdDSA token")?;
    let other = EncodingKey::from_ed_pem(&key_bytes("ed25519_other_private.pem")?)?;
    let foreign = sign(Algorithm::EdDSA, &other, &fresh("u1", &[]))?;
    token_refused(&hub, &foreign)
        .await
        .context("EdDSA token from another key")?;
    Ok(())
}

// ===========================================================================
// Claims

#[tokio::test]
async fn subscription_outside_the_token_topics_is_forbidden_with_ref() -> Result<()> {
    let hub = hs256_hub(&[]).await?;
    let mut client = ws_as(&hub, "/ws", &hs256(&fresh("u1", &["execution:*"]))?).await?;
    client.subscribe(&["execution:e1"]).await?;
    expect_error(
        &mut client,
        json!({"action": "subscribe", "topics": ["crew:c1"]}),
        "s1",
        "forbidden",
    )
    .await?;
    expect_error(
        &mut client,
        json!({"action": "subscribe", "topics": ["*"]}),
        "s2",
        "forbidden",
    )
    .await?;
    // Refused subscriptions deliver nothing.
    let seq = hub
        .http()
        .publish_simple("crew:c1", "crew.updated", json!({}))
        .await?;
    ensure!(seq == 1, "seq {seq}");
    let before = client.barrier().await?;
    ensure!(
        before.iter().all(|f| frame_type(f) != "event"),
        "events on a forbidden topic: {before:?}"
    );
    Ok(())
}

#[tokio::test]
async fn own_user_topic_is_allowed_without_claims_and_another_users_is_forbidden() -> Result<()> {
    let hub = hs256_hub(&[]).await?;
    let mut client = ws_as(&hub, "/ws", &hs256(&fresh("u1", &[]))?).await?;
    client.subscribe(&["user:u1"]).await?;
    expect_error(
        &mut client,
        json!({"action": "subscribe", "topics": ["user:u2"]}),
        "other",
        "forbidden",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn star_token_may_subscribe_to_star_and_the_events_stream() -> Result<()> {
    let hub = hs256_hub(&[]).await?;
    let token = hs256(&fresh("admin", &["*"]))?;
    let mut client = ws_as(&hub, "/ws", &token).await?;
    client.subscribe(&["*"]).await?;
    let mut events = ws_as(&hub, "/ws/events", &token).await?;
    events.expect_subscribed(&["*"]).await?;
    Ok(())
}

#[tokio::test]
async fn events_stream_without_admin_claims_gets_forbidden() -> Result<()> {
    let hub = hs256_hub(&[]).await?;
    let token = hs256(&fresh("u1", &["execution:*"]))?;
    let mut client = ws_as(&hub, "/ws/events", &token).await?;
    let frame = client
        .recv_until(|f| matches!(frame_type(f), "error" | "subscribed"))
        .await?;
    ensure!(
        frame_type(&frame) == "error" && str_field(&frame, "code") == "forbidden",
        "expected error forbidden, got {frame}"
    );
    Ok(())
}

// ===========================================================================
// Token expiry and the `auth` frame

/// Waits until the wall clock passes `exp` (seconds since the epoch) plus `margin`.
fn until_past(exp: u64, margin: Duration) -> Duration {
    let at = UNIX_EPOCH + Duration::from_secs(exp) + margin;
    at.duration_since(SystemTime::now()).unwrap_or_default()
}

#[tokio::test]
async fn expired_token_closes_the_connection_with_4001() -> Result<()> {
    let hub = hs256_hub(&[]).await?;
    let exp = now_s() + 3;
    let mut client = ws_as(&hub, "/ws", &hs256(&claims("u1", &[], exp))?).await?;
    client.subscribe(&["user:u1"]).await?;
    closes_with_4001_at(&mut client, exp).await
}

/// Waits until `exp` (s) has passed by 1.5 s, then checks the connection
/// still answers.
async fn still_open_past(client: &mut WsClient, exp: u64) -> Result<()> {
    let quiet = until_past(exp, Duration::from_millis(1500));
    client.timeout = quiet + Duration::from_secs(1);
    if let Ok(end) = timeout(quiet, client.expect_end()).await {
        bail!("the connection ended before exp {exp} had passed by 1.5 s: {end:?}");
    }
    client.timeout = DEFAULT_TIMEOUT;
    client.barrier().await.context("after the expiry")?;
    Ok(())
}

/// Expects a 4001 close, not before `exp` (s).
async fn closes_with_4001_at(client: &mut WsClient, exp: u64) -> Result<()> {
    client.timeout = until_past(exp, Duration::from_secs(3));
    let (code, reason) = client.expect_close().await?;
    ensure!(code == 4001, "close {code} {reason:?}");
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    ensure!(
        now >= Duration::from_secs(exp),
        "closed at {now:?}, before exp {exp}"
    );
    Ok(())
}

#[tokio::test]
async fn auth_frame_with_a_fresh_token_keeps_the_connection_past_the_first_expiry() -> Result<()> {
    let hub = hs256_hub(&[]).await?;
    let first = now_s() + 3;
    let mut client = ws_as(&hub, "/ws", &hs256(&claims("u1", &[], first))?).await?;
    let second = now_s() + 6;
    let token = hs256(&claims("u1", &["execution:*"], second))?;
    client
        .send_json(&json!({"action": "auth", "token": token, "id": "a1"}))
        .await?;
    client.recv_until(|f| is_ack(f, "a1")).await?;
    still_open_past(&mut client, first).await?;
    // The new claims are in force.
    client.subscribe(&["execution:e9"]).await?;
    // And the second expiry closes it.
    closes_with_4001_at(&mut client, second).await
}

#[tokio::test]
async fn auth_frame_without_an_id_refreshes_the_token_though_nothing_is_sent_back() -> Result<()> {
    // No `id`: no ack is queued, so nothing but the expiry timer wakes the
    // connection's writer before the first expiry; it must see the new token.
    let hub = hs256_hub(&[]).await?;
    let first = now_s() + 3;
    let mut client = ws_as(&hub, "/ws", &hs256(&claims("u1", &[], first))?).await?;
    let second = now_s() + 6;
    let token = hs256(&claims("u1", &[], second))?;
    client
        .send_json(&json!({"action": "auth", "token": token}))
        .await?;
    still_open_past(&mut client, first).await?;
    closes_with_4001_at(&mut client, second).await
}

#[tokio::test]
async fn auth_frame_for_another_user_is_forbidden_and_keeps_the_old_identity() -> Result<()> {
    let hub = hs256_hub(&[]).await?;
    let mut client = ws_as(&hub, "/ws", &hs256(&fresh("u1", &[]))?).await?;
    let other = hs256(&fresh("u2", &["*"]))?;
    expect_error(
        &mut client,
        json!({"action": "auth", "token": other}),
        "a2",
        "forbidden",
    )
    .await?;
    // u2's `*` claim did not take effect.
    expect_error(
        &mut client,
        json!({"action": "subscribe", "topics": ["user:u2"]}),
        "s1",
        "forbidden",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_narrower_token_ends_the_subscriptions_it_no_longer_allows_and_keeps_the_rest()
-> Result<()> {
    let hub = hs256_hub(&[]).await?;
    let mut client = ws_as(&hub, "/ws", &hs256(&fresh("u1", &["run:*", "task:*"]))?).await?;
    client.subscribe(&["run:r1", "task:t1"]).await?;
    let narrower = hs256(&fresh("u1", &["task:*"]))?;
    client
        .send_json(&json!({"action": "auth", "token": narrower, "id": "a1"}))
        .await?;
    // The token is taken: the request is acknowledged, and the subscription
    // it no longer allows is named by an error that answers no request.
    let (ack, before) = client.recv_collect_until(|f| is_ack(f, "a1")).await?;
    let ended = before
        .iter()
        .find(|f| frame_type(f) == "error")
        .with_context(|| format!("no error before {ack}: {before:?}"))?;
    ensure!(
        ended["code"] == "forbidden"
            && ended["ref"].is_null()
            && str_field(ended, "message").contains("run:r1"),
        "{ended}"
    );
    let http = hub.http();
    http.publish_simple("run:r1", "step.progress", json!({}))
        .await?;
    http.publish_simple("task:t1", "step.progress", json!({}))
        .await?;
    let next = client.recv_until(|f| frame_type(f) == "event").await?;
    ensure!(next["topic"] == "task:t1", "{next}");
    let after = client.barrier().await?;
    ensure!(!after.iter().any(|f| f["topic"] == "run:r1"), "{after:?}");
    Ok(())
}

// ===========================================================================
// Approvals

/// The approval `id` as `GET /api/v1/approvals/{id}` answers it.
async fn approval(hub: &Hub, id: &str) -> Result<Value> {
    let (status, body) = api(
        hub,
        reqwest::Method::GET,
        &format!("/api/v1/approvals/{id}"),
        Some(PUBLISH_KEY),
        None,
    )
    .await?;
    ensure!(status == 200, "{status} {body}");
    Ok(body)
}

/// Asks u1 an approval on task t1 over the API; its callback id.
async fn ask_u1_about_t1(hub: &Hub) -> Result<String> {
    let request = json!({
        "user_id": "u1",
        "task_id": "t1",
        "step": 1,
        "step_result": {"step": "deploy", "message": "about to deploy", "status": "waiting"},
    });
    let (status, record) = api(
        hub,
        reqwest::Method::POST,
        "/api/v1/approvals",
        Some(PUBLISH_KEY),
        Some(&request),
    )
    .await?;
    ensure!(status == 201, "{status} {record}");
    let id = str_field(&record, "callback_id").to_owned();
    ensure!(!id.is_empty(), "{record}");
    Ok(id)
}

#[tokio::test]
async fn only_the_approvals_user_may_confirm_it() -> Result<()> {
    only_the_approvals_user_may_confirm_it_on(&[]).await
}

#[tokio::test]
async fn only_the_approvals_user_may_confirm_it_on_redis() -> Result<()> {
    let redis = Redis::start().await?;
    only_the_approvals_user_may_confirm_it_on(&["--store", &redis.store_arg()]).await
}

/// Another user's `confirm` is `forbidden`, before the decision and after it
/// (when saying `conflict` would tell them the outcome).
async fn only_the_approvals_user_may_confirm_it_on(store: &[&str]) -> Result<()> {
    let mut args = vec!["--api-keys", API_KEYS];
    args.extend_from_slice(store);
    let hub = hs256_hub(&args).await?;
    let mut u1 = ws_as(&hub, "/ws", &hs256(&fresh("u1", &[]))?).await?;
    let mut u2 = ws_as(&hub, "/ws", &hs256(&fresh("u2", &[]))?).await?;
    let id = ask_u1_about_t1(&hub).await?;
    let confirm = json!({"action": "confirm", "callback_id": id, "proceed": true});
    expect_error(&mut u2, confirm.clone(), "c2", "forbidden").await?;
    let decision = approval(&hub, &id).await?;
    ensure!(
        str_field(&decision, "status") == "pending",
        "u2's refused confirm changed the approval: {decision}"
    );
    let mut confirm = confirm;
    confirm["id"] = json!("c1");
    u1.send_json(&confirm).await?;
    let frame = u1
        .recv_until(|f| is_ack(f, "c1") || str_field(f, "ref") == "c1")
        .await?;
    ensure!(is_ack(&frame, "c1"), "u1's confirm: {frame}");
    let decision = approval(&hub, &id).await?;
    ensure!(
        str_field(&decision, "status") == "approved",
        "after u1's confirm: {decision}"
    );
    expect_error(&mut u2, confirm, "c3", "forbidden").await?;
    Ok(())
}

/// With authentication a client steers (`cancel`, `pause`, `resume`) only a
/// task or run its token lets it watch, or a task it was asked an approval
/// on; anyone else is told `forbidden`, and nothing is cancelled or
/// published.
#[tokio::test]
async fn only_a_user_who_may_watch_a_task_or_was_asked_on_it_may_steer_it() -> Result<()> {
    Box::pin(only_a_user_who_may_watch_a_task_or_was_asked_on_it_may_steer_it_on(&[])).await
}

#[tokio::test]
async fn only_a_user_who_may_watch_a_task_or_was_asked_on_it_may_steer_it_on_redis() -> Result<()> {
    let redis = Redis::start().await?;
    let store = redis.store_arg();
    Box::pin(
        only_a_user_who_may_watch_a_task_or_was_asked_on_it_may_steer_it_on(&["--store", &store]),
    )
    .await
}

async fn only_a_user_who_may_watch_a_task_or_was_asked_on_it_may_steer_it_on(
    store: &[&str],
) -> Result<()> {
    let mut args = vec!["--api-keys", API_KEYS];
    args.extend_from_slice(store);
    let hub = hs256_hub(&args).await?;
    let mut asked = ws_as(&hub, "/ws", &hs256(&fresh("u1", &[]))?).await?;
    let mut stranger = ws_as(&hub, "/ws", &hs256(&fresh("u2", &["task:other"]))?).await?;
    let watching = ["task:t1", "run:r1"];
    let mut watcher = ws_as(&hub, "/ws", &hs256(&fresh("u3", &watching))?).await?;
    watcher.subscribe(&watching).await?;
    // Steers as the watcher's user, so the watcher reads only events.
    let mut steerer = ws_as(&hub, "/ws", &hs256(&fresh("u3", &watching))?).await?;
    let id = ask_u1_about_t1(&hub).await?;

    for action in ["cancel", "pause", "resume"] {
        let frame = json!({"action": action, "task_id": "t1"});
        expect_error(&mut stranger, frame, &format!("task-{action}"), "forbidden").await?;
    }
    let frame = json!({"action": "pause", "run_id": "r1"});
    expect_error(&mut stranger, frame, "run-pause", "forbidden").await?;
    let pending = approval(&hub, &id).await?;
    ensure!(
        str_field(&pending, "status") == "pending",
        "a refused cancel resolved the approval: {pending}"
    );

    // A user may steer what they may watch; the asked user their task.
    steerer
        .send_json(&json!({"action": "pause", "id": "w", "run_id": "r1"}))
        .await?;
    let reply = steerer
        .recv_until(|f| is_ack(f, "w") || str_field(f, "ref") == "w")
        .await?;
    ensure!(is_ack(&reply, "w"), "the watching user's pause: {reply}");
    asked
        .send_json(&json!({"action": "cancel", "id": "a", "task_id": "t1"}))
        .await?;
    let reply = asked
        .recv_until(|f| is_ack(f, "a") || str_field(f, "ref") == "a")
        .await?;
    ensure!(is_ack(&reply, "a"), "the asked user's cancel: {reply}");

    // What the watcher saw on both topics, up to the cancel: the only
    // control requests are the watcher's pause and the asked user's cancel.
    let mut controls = Vec::new();
    while controls.last().map(|c: &(String, Value)| c.0.as_str()) != Some("control.cancel") {
        let frame = watcher.recv_frame().await?;
        let kind = str_field(&frame, "event_type");
        if frame_type(&frame) == "event" && kind.starts_with("control.") {
            controls.push((kind.to_owned(), frame["data"]["requested_by"].clone()));
        }
    }
    ensure!(
        controls
            == [
                ("control.pause".to_owned(), json!("u3")),
                ("control.cancel".to_owned(), json!("u1")),
            ],
        "control requests seen: {controls:?}"
    );
    let cancelled = approval(&hub, &id).await?;
    ensure!(
        str_field(&cancelled, "status") == "cancelled",
        "the asked user's cancel: {cancelled}"
    );
    Ok(())
}

/// A WebSocket URL's query is read as the HTTP API's are: a malformed one
/// is refused with the API's JSON error (400 `invalid_request`), whatever
/// the endpoint, and a switch takes `1` as well as `true`.
#[tokio::test]
async fn a_malformed_websocket_query_is_refused_as_json_and_switches_take_1() -> Result<()> {
    let hub = herald().start(&[]).await?;
    for path in [
        "/ws?snapshot=maybe",
        "/ws/executions/exec_1?snapshot=2",
        "/compat/cmbagent/ws/run_1?since=abc",
    ] {
        expect_refused(&hub.ws_url(path), &[], 400, "invalid_request")
            .await
            .with_context(|| path.to_owned())?;
    }
    expect_welcome(&hub.ws_url("/ws?topics=run:r1&snapshot=1"), &[]).await?;
    Ok(())
}

// ===========================================================================
// Origins

#[tokio::test]
async fn foreign_origin_gets_403_and_allowed_or_absent_origin_is_admitted() -> Result<()> {
    let hub = herald()
        .start(&["--allowed-origins", "https://app.example"])
        .await?;
    let url = hub.ws_url("/ws");
    expect_refused(
        &url,
        &[("origin", "https://evil.example")],
        403,
        "forbidden",
    )
    .await?;
    expect_refused(
        &url,
        &[("origin", "https://app.example.evil.example")],
        403,
        "forbidden",
    )
    .await?;
    expect_welcome(&url, &[("origin", "https://app.example")])
        .await
        .context("allowed origin")?;
    expect_welcome(&url, &[])
        .await
        .context("no Origin header")?;
    Ok(())
}

#[tokio::test]
async fn browser_apps_on_allowed_origins_may_call_the_http_api_and_others_may_not() -> Result<()> {
    let hub = herald()
        .start(&[
            "--allowed-origins",
            "https://app.example",
            "--api-keys",
            API_KEYS,
        ])
        .await?;
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/events", hub.http_url());
    for (origin, allowed) in [
        ("https://app.example", true),
        ("https://evil.example", false),
    ] {
        // The preflight a browser sends before a keyed JSON POST: answered
        // before authentication, naming the origin only if it is allowed.
        let preflight = client
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .timeout(DEFAULT_TIMEOUT)
            .send()
            .await?;
        let named = preflight
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        ensure!(
            named.as_deref() == allowed.then_some(origin),
            "{origin}: {} {named:?}",
            preflight.status()
        );
        // The request itself: done and readable for the allowed origin,
        // refused for any other, whatever the browser would have let through.
        let publish = client
            .post(&url)
            .header("origin", origin)
            .bearer_auth(PUBLISH_KEY)
            .json(&one_event("execution:cors"))
            .timeout(DEFAULT_TIMEOUT)
            .send()
            .await?;
        let named = publish
            .headers()
            .get("access-control-allow-origin")
            .is_some();
        let expected = if allowed { 200 } else { 403 };
        ensure!(
            publish.status() == expected && named == allowed,
            "{origin}: {publish:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn an_open_hub_on_loopback_answers_no_request_made_under_another_host_name() -> Result<()> {
    // A page whose own name was rebound to 127.0.0.1 reaches the hub as its
    // own origin: same-origin reads carry no Origin, only that Host.
    let hub = herald().start(&[]).await?;
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/approvals", hub.http_url());
    let rebound = client
        .get(&url)
        .header("host", "rebind.evil.example:8765")
        .timeout(DEFAULT_TIMEOUT)
        .send()
        .await?;
    ensure!(rebound.status() == 403, "{rebound:?}");
    let local = client
        .get(&url)
        .header("host", "localhost:8765")
        .timeout(DEFAULT_TIMEOUT)
        .send()
        .await?;
    ensure!(local.status() == 200, "{local:?}");
    Ok(())
}

#[tokio::test]
async fn a_hub_on_loopback_with_tokens_but_no_keys_answers_its_open_http_api_for_this_machine_only()
-> Result<()> {
    // The WebSockets need a token; the HTTP API needs nothing, so a page
    // rebound to 127.0.0.1 must not reach it under its own name.
    let hub = hs256_hub(&[]).await?;
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/topics", hub.http_url());
    for (host, expected) in [("rebind.evil.example:8765", 403), ("localhost:8765", 200)] {
        let reply = client
            .get(&url)
            .header("host", host)
            .header("origin", format!("http://{host}"))
            .timeout(DEFAULT_TIMEOUT)
            .send()
            .await?;
        ensure!(reply.status() == expected, "{host}: {reply:?}");
    }
    // The WebSockets are authenticated: any name may reach them with a token.
    let token = hs256(&fresh("u1", &["run:*"]))?;
    expect_welcome(
        &hub.ws_url(&with_token("/ws", &token)),
        &[("host", "herald.example.com")],
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_token_with_an_empty_or_overlong_sub_or_critical_extensions_is_refused() -> Result<()> {
    let hub = hs256_hub(&[]).await?;
    token_refused(&hub, &hs256(&fresh("", &["run:*"]))?).await?;
    token_refused(&hub, &hs256(&fresh(&"u".repeat(256), &["run:*"]))?).await?;
    ws_as(&hub, "/ws", &hs256(&fresh(&"u".repeat(255), &["run:*"]))?).await?;
    let mut header = Header::new(Algorithm::HS256);
    header.crit = Some(vec!["exp-ext".to_owned()]);
    let critical = jsonwebtoken::encode(
        &header,
        &fresh("u1", &["run:*"]),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )?;
    token_refused(&hub, &critical).await
}

#[tokio::test]
async fn a_page_from_another_site_cannot_publish_to_an_open_hub_with_a_simple_post() -> Result<()> {
    // No --allowed-origins, no keys: what a developer runs on their laptop.
    let hub = herald().start(&[]).await?;
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/events", hub.http_url());
    let body = one_event("execution:csrf").to_string();
    // A form or text/plain POST needs no preflight: a page elsewhere could
    // send it. It is refused; a JSON one would need CORS, which is off.
    let simple = client
        .post(&url)
        .header("origin", "https://evil.example")
        .header("content-type", "text/plain")
        .body(body.clone())
        .timeout(DEFAULT_TIMEOUT)
        .send()
        .await?;
    ensure!(simple.status() == 403, "{simple:?}");
    let preflight = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .timeout(DEFAULT_TIMEOUT)
        .send()
        .await?;
    ensure!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "{preflight:?}"
    );
    // Not from a browser (no Origin), any body type still works, as with curl -d.
    let curl = client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .timeout(DEFAULT_TIMEOUT)
        .send()
        .await?;
    ensure!(curl.status() == 200, "{curl:?}");
    Ok(())
}

// ===========================================================================
// API keys

#[tokio::test]
async fn http_api_without_a_key_or_with_an_unknown_key_is_401_unauthorized() -> Result<()> {
    let hub = herald().start(&["--api-keys", API_KEYS]).await?;
    let event = one_event("execution:e1");
    for key in [None, Some("not-a-key-at-all"), Some("pubkey12")] {
        let (status, body) = api(
            &hub,
            reqwest::Method::POST,
            "/api/v1/events",
            key,
            Some(&event),
        )
        .await?;
        ensure!(status == 401, "key {key:?}: {status} {body}");
        ensure!(
            str_field(&body, "code") == "unauthorized" && body["message"].is_string(),
            "key {key:?}: {body}"
        );
    }
    let (status, body) = api(
        &hub,
        reqwest::Method::POST,
        "/api/v1/events",
        Some(PUBLISH_KEY),
        Some(&event),
    )
    .await?;
    ensure!(
        status == 200 || status == 201,
        "publish key: {status} {body}"
    );
    Ok(())
}

#[tokio::test]
async fn publish_key_on_an_admin_endpoint_is_403_and_the_admin_key_is_allowed() -> Result<()> {
    let hub = herald().start(&["--api-keys", API_KEYS]).await?;
    for path in ["/api/v1/connections", "/api/v1/status"] {
        let (status, body) = api(&hub, reqwest::Method::GET, path, Some(PUBLISH_KEY), None).await?;
        ensure!(
            status == 403,
            "{path} with the publish key: {status} {body}"
        );
        ensure!(str_field(&body, "code") == "forbidden", "{path}: {body}");
        let (status, body) = api(&hub, reqwest::Method::GET, path, Some(ADMIN_KEY), None).await?;
        ensure!(status == 200, "{path} with the admin key: {status} {body}");
        let (status, body) = api(&hub, reqwest::Method::GET, path, None, None).await?;
        ensure!(status == 401, "{path} without a key: {status} {body}");
    }
    Ok(())
}

#[tokio::test]
async fn a_method_a_producers_route_does_not_take_is_405_for_the_publish_key() -> Result<()> {
    let hub = herald().start(&["--api-keys", API_KEYS]).await?;
    for (method, path) in [
        (reqwest::Method::PUT, "/api/v1/events"),
        (reqwest::Method::DELETE, "/api/v1/broadcast"),
        (reqwest::Method::PUT, "/api/v1/users/u1/messages"),
        (reqwest::Method::DELETE, "/api/v1/approvals"),
        (reqwest::Method::DELETE, "/api/v1/approvals/a1"),
    ] {
        let (status, body) = api(&hub, method.clone(), path, Some(PUBLISH_KEY), None).await?;
        ensure!(status == 405, "{method} {path}: {status} {body}");
    }
    Ok(())
}

#[tokio::test]
async fn approvals_are_listed_and_read_with_the_publish_key_and_with_the_admin_key() -> Result<()> {
    const OPERATOR_KEY: &str = "opskey123";
    let keys = format!("{PUBLISH_KEY}:publish;{OPERATOR_KEY}:admin");
    let hub = herald().start(&["--api-keys", &keys]).await?;
    let ask = json!({"user_id": "u1", "task_id": "t1", "step": 1,
        "step_result": {"step": "s", "result": null, "completed": true, "message": "ok?", "status": "ok"}});
    let (status, created) = api(
        &hub,
        reqwest::Method::POST,
        "/api/v1/approvals",
        Some(PUBLISH_KEY),
        Some(&ask),
    )
    .await?;
    ensure!(status == 201, "asking: {status} {created}");
    let id = str_field(&created, "callback_id").to_owned();
    for key in [PUBLISH_KEY, OPERATOR_KEY] {
        for path in [
            "/api/v1/approvals?task_id=t1".to_owned(),
            format!("/api/v1/approvals/{id}"),
        ] {
            let (status, body) = api(&hub, reqwest::Method::GET, &path, Some(key), None).await?;
            ensure!(status == 200, "{path} with {key}: {status} {body}");
        }
    }
    // Asking stays the producer's.
    let (status, body) = api(
        &hub,
        reqwest::Method::POST,
        "/api/v1/approvals",
        Some(OPERATOR_KEY),
        Some(&ask),
    )
    .await?;
    ensure!(
        status == 403,
        "asking with an admin-only key: {status} {body}"
    );
    Ok(())
}

#[tokio::test]
async fn health_needs_no_key() -> Result<()> {
    let hub = herald().start(&["--api-keys", API_KEYS]).await?;
    let (status, body) = api(&hub, reqwest::Method::GET, "/health", None, None).await?;
    ensure!(status == 200, "{status} {body}");
    Ok(())
}

// ===========================================================================
// Rate limits

/// A client resubscribing after a reconnect sends a frame per subscription
/// at once: past the frame rate, subscription frames have a burst of as many
/// as a connection may hold, so none is refused; other frames still are.
#[tokio::test]
async fn a_burst_of_subscriptions_past_the_frame_rate_is_taken_whole() -> Result<()> {
    const SUBSCRIPTIONS: usize = 500;
    let hub = herald()
        .start(&["--client-rate-limit", "100", "--max-subscriptions", "1000"])
        .await?;
    let mut client = hub.ws("/ws").await?;
    for n in 0..SUBSCRIPTIONS {
        let frame =
            json!({"action": "subscribe", "id": format!("s{n}"), "topics": [format!("run:r{n}")]});
        client.send_text(frame.to_string()).await?;
    }
    let mut subscribed = 0;
    while subscribed < SUBSCRIPTIONS {
        let frame = client.recv_frame().await?;
        ensure!(frame_type(&frame) != "error", "{frame}");
        if frame_type(&frame) == "subscribed" {
            subscribed += 1;
        }
    }
    for n in 0..300 {
        client
            .send_text(json!({"action": "ping", "id": format!("p{n}")}).to_string())
            .await?;
    }
    client
        .recv_until(|f| str_field(f, "code") == "rate_limited")
        .await?;
    Ok(())
}

/// One connection floods pings; it is told `rate_limited` and then closed
/// with 4029, while fifty subscribers get every event, in order, meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_connection_is_closed_4029_while_fifty_others_get_every_event() -> Result<()> {
    const EVENTS: u64 = 200;
    const FLOOD: usize = 2000;
    let hub = herald().start(&["--client-rate-limit", "20"]).await?;
    let mut readers = Vec::new();
    for _ in 0..50 {
        let mut client = hub.ws("/ws").await?;
        client.subscribe(&["execution:flood"]).await?;
        readers.push(client);
    }
    let mut flooder = hub.ws("/ws").await?;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        let mut sent = 0;
        // The hub may close mid-flood: a failed send ends it.
        while sent < FLOOD {
            let ping = json!({"action": "ping", "id": sent + 1}).to_string();
            if flooder.send_text(ping).await.is_err() {
                break;
            }
            sent += 1;
        }
        let limited = flooder
            .recv_until(|f| str_field(f, "code") == "rate_limited")
            .await
            .with_context(|| format!("no rate_limited error after {sent} pings"))?;
        ensure!(frame_type(&limited) == "error", "{limited}");
        // Refused unread, but named: the ping it refused.
        ensure!(
            limited["ref"].as_u64().is_some_and(|id| id > 1),
            "{limited}"
        );
        let (code, reason) = flooder.expect_close().await?;
        ensure!(code == 4029, "flooder closed with {code} {reason:?}");
        Ok(())
    });
    for mut client in readers {
        tasks.spawn(async move {
            client.timeout = Duration::from_secs(15);
            let events = client.recv_events(EVENTS as usize).await?;
            let seqs = crate::seqs_on(&events, "execution:flood");
            ensure!(
                seqs == (1..=EVENTS).collect::<Vec<_>>(),
                "a subscriber got seqs {seqs:?}"
            );
            Ok(())
        });
    }
    let http = hub.http();
    for n in 0..EVENTS {
        http.publish_simple("execution:flood", "execution.progress", json!({"n": n}))
            .await?;
    }
    while let Some(result) = timeout(Duration::from_secs(30), tasks.join_next())
        .await
        .context("a flood-test task did not finish")?
    {
        result.context("a flood-test task panicked")??;
    }
    let took = started.elapsed();
    ensure!(
        took < Duration::from_secs(20),
        "the subscribers took {took:?}"
    );
    // The refused frames were received: they count, beside the 50
    // subscriptions and the pings let through.
    let metrics = hub.http().get("/metrics").await?.text;
    let refused = metric(&metrics, "herald_errors_total{code=\"rate_limited\"}").unwrap_or(0.0);
    let received = metric(&metrics, "herald_frames_in_total").unwrap_or(0.0);
    ensure!(
        refused > 0.0 && received >= refused + 50.0,
        "{received} frames received, {refused} refused"
    );
    let flooders = metric(
        &metrics,
        "herald_connections_closed_total{reason=\"rate_limited\"}",
    );
    ensure!(flooders == Some(1.0), "closed for flooding: {flooders:?}");
    Ok(())
}

#[tokio::test]
async fn publish_over_the_rate_limit_is_429_with_retry_after_and_a_batch_over_the_burst_413()
-> Result<()> {
    let hub = herald().start(&["--publish-rate-limit", "5"]).await?;
    // The burst is two seconds' worth: ten events at once pass.
    let burst: Vec<Value> = (0..10).map(|_| one_event("execution:rl")).collect();
    let receipts = hub.http().publish_batch(&burst).await?;
    ensure!(receipts.len() == 10, "{receipts:?}");
    // Five more at once need a second of refill; they are refused.
    let more = Value::Array((0..5).map(|_| one_event("execution:rl")).collect());
    let reply = hub.http().post("/api/v1/events", &more).await?;
    ensure!(reply.status == 429, "{} {}", reply.status, reply.text);
    ensure!(
        str_field(&reply.body, "code") == "rate_limited",
        "{}",
        reply.text
    );
    // They fit a second later, and the answer says so.
    ensure!(
        reply.retry_after.as_deref() == Some("1"),
        "Retry-After {:?}",
        reply.retry_after
    );
    // A batch larger than the burst never fits: not a 429 to retry forever.
    let too_many = Value::Array((0..11).map(|_| one_event("execution:rl2")).collect());
    let reply = hub.http().post("/api/v1/events", &too_many).await?;
    ensure!(reply.status == 413, "{} {}", reply.status, reply.text);
    ensure!(
        str_field(&reply.body, "code") == "too_large",
        "{}",
        reply.text
    );
    ensure!(reply.retry_after.is_none(), "{:?}", reply.retry_after);
    Ok(())
}

// ===========================================================================
// Sizes

/// Reads server frames from a raw socket until a close frame; returns its code.
async fn raw_close_code(reader: &mut OwnedReadHalf) -> Result<u16> {
    loop {
        let mut head = [0u8; 2];
        reader.read_exact(&mut head).await?;
        let len = match head[1] & 0x7f {
            126 => u64::from(reader.read_u16().await?),
            127 => reader.read_u64().await?,
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len)?];
        reader.read_exact(&mut payload).await?;
        if head[0] & 0x0f == 0x8 {
            ensure!(payload.len() >= 2, "close frame without a code");
            return Ok(u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
}

#[tokio::test]
async fn ten_megabyte_frame_is_closed_with_1009() -> Result<()> {
    const SIZE: usize = 10 * 1024 * 1024;
    let hub = herald().start(&[]).await?;
    let stream = raw_ws_upgrade(hub.addr(), "/ws").await?;
    let (mut reader, mut writer) = stream.into_split();
    // A masked text frame (mask 0: the payload goes as is) of 10 MiB.
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(SIZE as u64).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        // The hub stops reading once the header says 10 MiB: write errors are expected.
        if writer.write_all(&frame).await.is_ok() {
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..SIZE / chunk.len() {
                if writer.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        }
        writer
    });
    let code = timeout(DEFAULT_TIMEOUT, raw_close_code(&mut reader))
        .await
        .context("no close frame")??;
    ensure!(code == 1009, "close code {code}");
    tasks.abort_all();
    Ok(())
}

#[tokio::test]
async fn subscribing_to_more_topics_than_max_subscriptions_is_an_error() -> Result<()> {
    let hub = herald().start(&["--max-subscriptions", "3"]).await?;
    let mut client = hub.ws("/ws").await?;
    client.subscribe(&["execution:a", "execution:b"]).await?;
    client
        .send_json(&json!({
            "action": "subscribe",
            "topics": ["execution:c", "execution:d"],
            "id": "too-many",
        }))
        .await?;
    let frame = client
        .recv_until(|f| matches!(frame_type(f), "error" | "subscribed"))
        .await?;
    ensure!(
        frame_type(&frame) == "error" && str_field(&frame, "ref") == "too-many",
        "expected an error, got {frame}"
    );
    // A topic named again, in the same list or an earlier one, is not one more.
    client
        .send_json(&json!({
            "action": "subscribe",
            "topics": ["execution:c", "execution:c", "execution:a"],
        }))
        .await?;
    client
        .expect_subscribed(&["execution:c", "execution:a"])
        .await
        .context("the third subscription, named twice")?;
    Ok(())
}

/// Sends `frame` on a fresh connection to `/ws` and reads until the hub
/// closes the socket; gives back the code of the last close frame it sent.
async fn close_after(hub: &Hub, frame: &[u8]) -> Result<Option<u16>> {
    let mut raw = raw_ws_upgrade(hub.addr(), "/ws").await?;
    raw.write_all(frame).await?;
    let mut bytes = Vec::new();
    timeout(DEFAULT_TIMEOUT, raw.read_to_end(&mut bytes))
        .await
        .context("the connection stayed open")??;
    // The server's frames, unmasked: the last one must be a close frame.
    let mut rest = bytes.as_slice();
    let mut close = None;
    while let [head, len, tail @ ..] = rest {
        let (len, tail) = match len & 0x7f {
            126 if tail.len() >= 2 => (
                usize::from(u16::from_be_bytes([tail[0], tail[1]])),
                &tail[2..],
            ),
            n if n < 126 => (usize::from(n), tail),
            _ => bail!("an unexpected frame length in {bytes:?}"),
        };
        ensure!(tail.len() >= len, "a cut frame in {bytes:?}");
        let (payload, next) = tail.split_at(len);
        if head & 0x0f == 0x8 && payload.len() >= 2 {
            close = Some(u16::from_be_bytes([payload[0], payload[1]]));
        }
        rest = next;
    }
    Ok(close)
}

#[tokio::test]
async fn frames_rfc_6455_forbids_are_closed_with_the_codes_it_names() -> Result<()> {
    const TEXT: u8 = 0x81;
    const CLOSE: u8 = 0x88;
    let close = |code: u16, reason: &[u8]| {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        client_frame(CLOSE, &payload)
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        // A client's frames must be masked.
        ("an unmasked frame", vec![TEXT, 0x02, b'h', b'i'], 1002),
        (
            "a text frame holding 0xff",
            client_frame(TEXT, &[0xff]),
            1007,
        ),
        (
            "text that stops being UTF-8 in its second fragment",
            [client_frame(0x01, b"\"\xce"), client_frame(0x80, b"\xff\"")].concat(),
            1007,
        ),
        (
            "a close whose reason is not UTF-8",
            close(1000, &[0xff]),
            1007,
        ),
        (
            "a ping of 126 bytes (a control frame's limit is 125)",
            client_frame(0x89, &[b'x'; 126]),
            1002,
        ),
        ("a fragmented ping", client_frame(0x09, b"p"), 1002),
        (
            "a close with a one-byte payload",
            client_frame(CLOSE, &[3]),
            1002,
        ),
        ("reserved opcode 3", client_frame(0x83, b""), 1002),
        ("reserved control opcode 11", client_frame(0x8b, b""), 1002),
        (
            "RSV1 with no extension agreed",
            client_frame(TEXT | 0x40, b"{}"),
            1002,
        ),
        (
            "a continuation that continues nothing",
            client_frame(0x80, b"{}"),
            1002,
        ),
        (
            "a new text message inside a fragmented one",
            [client_frame(0x01, b"{"), client_frame(TEXT, b"}")].concat(),
            1002,
        ),
    ];
    // Closes the close handshake answers: with the peer's code when RFC 6455
    // allows it, with 1002 when not. The connection ends as the peer's close.
    let answered: Vec<(&str, Vec<u8>, u16)> = vec![
        ("a close with code 1000", close(1000, b"bye"), 1000),
        ("a close with code 3000", close(3000, b""), 3000),
        ("a close with code 999", close(999, b""), 1002),
        (
            "a close with code 1005, which is never sent",
            close(1005, b""),
            1002,
        ),
        ("a close with code 5000", close(5000, b""), 1002),
    ];
    let hub = herald().start(&[]).await?;
    let violations = cases.len();
    for (case, bytes, expected) in cases.into_iter().chain(answered) {
        let got = close_after(&hub, &bytes).await.context(case)?;
        ensure!(
            got == Some(expected),
            "{case}: close {got:?}, expected {expected}"
        );
    }
    let metrics = hub.http().get("/metrics").await?.text;
    let counted = metric(
        &metrics,
        "herald_connections_closed_total{reason=\"protocol_violation\"}",
    );
    ensure!(
        counted == Some(violations as f64),
        "counted {counted:?} of {violations}"
    );
    Ok(())
}

/// A close the hub starts (an admin's here; a drain's, a token's expiry)
/// keeps the socket open for the peer's answer, for up to a second: closed
/// at once, the answer would meet a closed socket and be reset, and a
/// browser then calls the close unclean.
#[tokio::test]
async fn a_close_the_hub_starts_waits_for_the_peers_answer_before_the_socket_closes() -> Result<()>
{
    let hub = herald().start(&[]).await?;
    let (mut reader, mut writer) = raw_ws_upgrade(hub.addr(), "/ws").await?.into_split();
    // The welcome: a short unmasked text frame.
    let mut head = [0u8; 2];
    timeout(DEFAULT_TIMEOUT, reader.read_exact(&mut head)).await??;
    let len = match head[1] & 0x7f {
        126 => usize::from(reader.read_u16().await?),
        n => usize::from(n),
    };
    let mut welcome = vec![0u8; len];
    reader.read_exact(&mut welcome).await?;
    let welcome: Value = serde_json::from_slice(&welcome)?;
    let id = welcome["session_id"].as_str().context("no session_id")?;
    let reply = hub
        .http()
        .delete(&format!("/api/v1/connections/{id}"))
        .await?;
    ensure!(
        (200..300).contains(&reply.status),
        "{} {}",
        reply.status,
        reply.text
    );
    let code = timeout(DEFAULT_TIMEOUT, raw_close_code(&mut reader))
        .await
        .context("no close frame")??;
    ensure!(code == 4500, "close code {code}");
    let mut byte = [0u8; 1];
    let early = timeout(Duration::from_millis(100), reader.read(&mut byte)).await;
    ensure!(
        early.is_err(),
        "the socket ended before the peer answered the close: {early:?}"
    );
    writer
        .write_all(&client_frame(0x88, &4500u16.to_be_bytes()))
        .await?;
    let after = timeout(DEFAULT_TIMEOUT, reader.read(&mut byte))
        .await
        .context("the socket stayed open after the peer's answer")?;
    ensure!(
        matches!(after, Ok(0)),
        "not a clean end after the answer: {after:?}"
    );
    Ok(())
}

/// A client frame (FIN, RSV bits and opcode in `first`), masked with mask 0
/// so the payload goes as it is.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![first];
    match (u8::try_from(payload.len()), u16::try_from(payload.len())) {
        (Ok(len), _) if len < 126 => frame.push(0x80 | len),
        (_, Ok(len)) => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&len.to_be_bytes());
        }
        (_, Err(_)) => unreachable!("the cases' payloads are under 64 KiB"),
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test]
async fn http_body_over_max_body_size_is_413() -> Result<()> {
    let hub = herald().start(&["--max-body-size", "4KiB"]).await?;
    let big = json!({
        "topic": "execution:big",
        "event_type": "execution.progress",
        "data": {"blob": "y".repeat(16 * 1024)},
    });
    let reply = hub.http().post("/api/v1/events", &big).await?;
    ensure!(reply.status == 413, "{} {}", reply.status, reply.text);
    // Its body unread, the connection cannot carry another request, and a
    // keep-alive client is told so.
    let mut raw = timeout(DEFAULT_TIMEOUT, TcpStream::connect(hub.addr()))
        .await
        .context("TCP connect timed out")??;
    let head = "POST /api/v1/events HTTP/1.1\r\nHost: localhost\r\n\
                Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n";
    raw.write_all(head.as_bytes()).await?;
    let mut answer = Vec::new();
    timeout(DEFAULT_TIMEOUT, raw.read_to_end(&mut answer))
        .await
        .context("the 413's connection stayed open")??;
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    ensure!(
        answer.starts_with("http/1.1 413") && answer.contains("connection: close"),
        "{answer}"
    );
    let small = one_event("execution:big");
    hub.http()
        .publish(&small)
        .await
        .context("a body under the limit")?;
    Ok(())
}

// ===========================================================================
// Slow loris

#[tokio::test]
async fn slow_loris_is_disconnected_by_the_header_timeout_while_others_are_served() -> Result<()> {
    let hub = herald().start(&["--header-timeout", "1s"]).await?;
    let started = Instant::now();
    let stream = timeout(DEFAULT_TIMEOUT, TcpStream::connect(hub.addr()))
        .await
        .context("TCP connect timed out")??;
    let (mut reader, mut writer) = stream.into_split();
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        // A request that would take a minute to send, a byte at a time.
        let partial = "GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for byte in partial.bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        writer
    });
    // Meanwhile an ordinary request is answered.
    let reply = hub.http().get("/health").await?;
    ensure!(reply.status == 200, "{} {}", reply.status, reply.text);
    // The slow client is cut off: EOF or a reset (hyper may answer 408 first).
    let mut answer = Vec::new();
    let read = timeout(Duration::from_secs(5), reader.read_to_end(&mut answer)).await;
    let took = started.elapsed();
    tasks.abort_all();
    ensure!(
        read.is_ok(),
        "the slow-loris connection was still open after {took:?}"
    );
    ensure!(
        took < Duration::from_secs(5),
        "disconnected only after {took:?}"
    );
    let answer = String::from_utf8_lossy(&answer);
    ensure!(
        !answer.starts_with("HTTP/1.1 200"),
        "the partial request was served: {answer}"
    );
    Ok(())
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_by_the_header_timeout() -> Result<()> {
    let hub = herald().start(&["--header-timeout", "1s"]).await?;
    let started = Instant::now();
    let mut silent = timeout(DEFAULT_TIMEOUT, TcpStream::connect(hub.addr()))
        .await
        .context("TCP connect timed out")??;
    let mut answer = Vec::new();
    let read = timeout(Duration::from_secs(5), silent.read_to_end(&mut answer)).await;
    let took = started.elapsed();
    ensure!(
        read.is_ok(),
        "a connection that sent nothing was still open after {took:?}"
    );
    ensure!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    Ok(())
}

#[tokio::test]
async fn an_http2_connection_that_goes_quiet_after_its_preface_is_closed() -> Result<()> {
    let hub = herald()
        .start(&["--header-timeout", "1s", "--heartbeat-interval", "1s"])
        .await?;
    let started = Instant::now();
    let mut quiet = timeout(DEFAULT_TIMEOUT, TcpStream::connect(hub.addr()))
        .await
        .context("TCP connect timed out")??;
    quiet.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
    // Never a frame of its own, nor an answer to the hub's ping.
    let mut answer = Vec::new();
    let read = timeout(Duration::from_secs(10), quiet.read_to_end(&mut answer)).await;
    ensure!(
        read.is_ok(),
        "a quiet HTTP/2 connection was still open after {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn a_body_that_trickles_in_is_answered_408_at_the_header_timeout_and_closed() -> Result<()> {
    let hub = herald().start(&["--header-timeout", "1s"]).await?;
    let stream = timeout(DEFAULT_TIMEOUT, TcpStream::connect(hub.addr()))
        .await
        .context("TCP connect timed out")??;
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        // Headers at once, then a 1000-byte body a byte every 250 ms.
        let head = "POST /api/v1/events HTTP/1.1\r\nHost: localhost\r\n\
                    Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
        if writer.write_all(head.as_bytes()).await.is_err() {
            return writer;
        }
        for _ in 0..1000 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        writer
    });
    let mut answer = Vec::new();
    let read = timeout(Duration::from_secs(5), reader.read_to_end(&mut answer)).await;
    let took = started.elapsed();
    tasks.abort_all();
    ensure!(
        read.is_ok(),
        "the trickling request was still open after {took:?}"
    );
    let answer = String::from_utf8_lossy(&answer);
    ensure!(
        answer.starts_with("HTTP/1.1 408") && answer.contains("--header-timeout"),
        "{answer}"
    );
    Ok(())
}

// ===========================================================================
// Binding beyond loopback

#[tokio::test]
async fn non_loopback_bind_without_auth_refuses_to_start_and_names_insecure() -> Result<()> {
    let output = herald()
        .run(&["serve", "--bind", "0.0.0.0:0"], START_TIMEOUT)
        .await?;
    ensure!(
        !output.status.success(),
        "herald serve --bind 0.0.0.0:0 started: {output:?}"
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(
        said.contains("--insecure"),
        "the refusal does not name --insecure: {said}"
    );
    ensure!(
        !said.contains("listening on"),
        "it listened before refusing: {said}"
    );
    Ok(())
}

#[tokio::test]
async fn non_loopback_bind_with_only_one_half_of_authentication_refuses_to_start_and_names_the_other()
-> Result<()> {
    let halves = [
        (["--jwt-secret", SECRET], "--api-keys"),
        (["--api-keys", API_KEYS], "--jwt-secret"),
    ];
    for (half, other) in halves {
        let mut args = vec!["serve", "--bind", "0.0.0.0:0"];
        args.extend(half);
        let (started, said) = herald().said(&args, &[]).await?;
        ensure!(
            !started && !said.contains("listening on"),
            "{args:?} started: {said}"
        );
        ensure!(
            said.contains(other) && said.contains("--insecure"),
            "the refusal of {args:?} names neither {other} nor --insecure: {said}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn an_empty_jwt_secret_refuses_to_start_instead_of_verifying_tokens_signed_with_nothing()
-> Result<()> {
    let serve = ["serve", "--bind", "127.0.0.1:0"];
    let from_flag = [&serve[..], &["--jwt-secret", ""]].concat();
    for (args, env) in [
        (&from_flag[..], &[][..]),
        (&serve[..], &[("HERALD_JWT_SECRET", "")][..]),
    ] {
        let (started, said) = herald().said(args, env).await?;
        ensure!(
            !started && !said.contains("listening on"),
            "an empty secret ({args:?}, {env:?}) started: {said}"
        );
        ensure!(
            said.contains("--jwt-secret is empty"),
            "the refusal does not say why: {said}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn non_loopback_bind_with_insecure_starts() -> Result<()> {
    // No traffic goes to it: it is stopped as soon as it says where it listens.
    let line = herald()
        .first_line(
            &["serve", "--bind", "0.0.0.0:0", "--insecure"],
            START_TIMEOUT,
        )
        .await?;
    ensure!(
        line.starts_with("listening on http://0.0.0.0:"),
        "first line: {line:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_cli_carries_an_api_key_over_http_and_a_jwt_over_the_websocket() -> Result<()> {
    let hub = hs256_hub(&["--api-keys", API_KEYS]).await?;
    let url = hub.http_url();
    let publish = ["publish", "--url", &url, "--topic", "run:cli-auth"];
    let refused = herald()
        .run(
            &[&publish[..], &["--type", "step.completed"]].concat(),
            DEFAULT_TIMEOUT,
        )
        .await?;
    let said = String::from_utf8_lossy(&refused.stderr);
    ensure!(!refused.status.success() && said.contains("401"), "{said}");
    let published = herald()
        .run(
            &[
                &publish[..],
                &["--type", "step.completed", "--id", "cli-keyed"],
                &["--api-key", PUBLISH_KEY],
            ]
            .concat(),
            DEFAULT_TIMEOUT,
        )
        .await?;
    ensure!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    // `herald tail` with the user's JWT replays the event it may read, and
    // a topic it may not read leaves the others followed.
    let token = hs256(&fresh("cli-user", &["run:*"]))?;
    for topics in ["run:cli-auth", "execution:x,run:cli-auth"] {
        let tail = [
            "tail", "--url", &url, "--topics", topics, "--since", "0", "--json", "--token", &token,
        ];
        let line = herald().first_line(&tail, DEFAULT_TIMEOUT).await?;
        let event: Value = serde_json::from_str(&line).context("an event frame")?;
        ensure!(
            str_field(&event, "id") == "cli-keyed",
            "tail --topics {topics} printed {line:?}"
        );
    }
    // A tail the hub refuses every topic of has nothing to follow: it ends.
    let refused = herald()
        .run(
            &[
                "tail",
                "--url",
                &url,
                "--topics",
                "execution:x",
                "--token",
                &token,
            ],
            DEFAULT_TIMEOUT,
        )
        .await?;
    let said = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        !refused.status.success() && said.contains("refused every topic"),
        "{said}"
    );
    Ok(())
}
