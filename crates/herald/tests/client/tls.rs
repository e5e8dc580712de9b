//! A hub behind a TLS-terminating proxy, as deployments run it: the
//! publisher over `https://`, the subscriber over `wss://`, and the CLI with
//! `--ca-cert`, trusting the proxy's self-signed certificate; without that
//! trust, nothing connects.

use std::sync::Arc;

use herald_client::{HttpError, Publisher, SubscribeError, Subscriber, SubscriberItem};
use herald_protocol::{EventType, PublishReceipt, PublishRequest, Topic, TopicPattern};
use rustls::pki_types::PrivatePkcs8KeyDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::harness::{Hub, bounded, herald, next_matching};

/// Terminates TLS on `127.0.0.1:PORT` with a fresh self-signed certificate
/// and forwards each connection's bytes to the hub. Stops when dropped.
struct TlsProxy {
    /// `https://127.0.0.1:PORT`.
    url: String,
    /// The certificate to trust, PEM.
    certificate: String,
    _tasks: JoinSet<()>,
}

impl TlsProxy {
    async fn start(upstream: &str) -> TlsProxy {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let key = PrivatePkcs8KeyDer::from(signing_key.serialize_der());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key.into())
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = upstream.to_owned();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            // Dropped with the accept loop: every forwarding task stops too.
            let mut connections = JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
                connections.spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut hub) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut hub).await;
                });
            }
        });
        TlsProxy {
            url: format!("https://127.0.0.1:{port}"),
            certificate: cert.pem(),
            _tasks: tasks,
        }
    }
}

fn request(topic: &Topic, id: &str) -> PublishRequest {
    let mut request = PublishRequest::new(
        topic.clone(),
        EventType::StepCompleted,
        serde_json::json!({"step": 1}),
    );
    request.id = Some(id.parse().unwrap());
    request
}

/// Every message of an error's source chain, joined.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        text.push_str(": ");
        text.push_str(&next.to_string());
        source = next.source();
    }
    text
}

#[tokio::test]
async fn publisher_and_subscriber_reach_a_hub_behind_tls_that_they_trust() {
    let hub = Hub::start(&[]).await;
    let proxy = TlsProxy::start(&hub.addr).await;
    let topic = Topic::parse("run:tls").unwrap();
    let mut subscriber = bounded(
        "subscribing over wss",
        Subscriber::builder(proxy.url.clone())
            .root_certificate_pem(proxy.certificate.clone())
            .topics([TopicPattern::from(topic.clone())])
            .connect(),
    )
    .await
    .unwrap();
    let publisher = Publisher::builder(proxy.url.clone())
        .root_certificate_pem(proxy.certificate.clone())
        .build()
        .unwrap();
    let receipt = bounded(
        "publishing over https",
        publisher.publish(request(&topic, "over-tls")),
    )
    .await
    .unwrap();
    let event = next_matching(&mut subscriber, "the event, over wss", |item| match item {
        SubscriberItem::Event(event) => Some(event),
        _ => None,
    })
    .await;
    assert_eq!((event.id.as_str(), event.seq), ("over-tls", receipt.seq));
    subscriber.close().await;
    hub.stop().await;
}

#[tokio::test]
async fn a_certificate_nobody_trusts_is_refused_by_the_publisher_and_the_subscriber() {
    let hub = Hub::start(&[]).await;
    let proxy = TlsProxy::start(&hub.addr).await;
    // Default retries: a certificate refused once is refused for good, so
    // the publisher says so at once instead of retrying for seconds.
    let publisher = Publisher::new(&proxy.url).unwrap();
    let topic = Topic::parse("run:tls").unwrap();
    let refused = bounded(
        "publishing to an untrusted certificate",
        publisher.publish(request(&topic, "refused")),
    )
    .await
    .unwrap_err();
    let text = chain(&refused);
    assert!(text.contains("certificate"), "{text}");
    assert!(text.contains("after 1 attempt(s)"), "{text}");
    let refused = bounded(
        "subscribing to an untrusted certificate",
        Subscriber::builder(proxy.url.clone())
            .topics([TopicPattern::from(topic)])
            .connect(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(refused, SubscribeError::Connect { .. }),
        "{refused:?}"
    );
    assert!(chain(&refused).contains("certificate"), "{refused}");
    hub.stop().await;
}

#[tokio::test]
async fn extra_roots_that_are_not_certificates_fail_the_build_not_the_first_request() {
    let built = Publisher::builder("https://127.0.0.1:1")
        .root_certificate_pem("-----BEGIN NONSENSE-----")
        .build();
    assert!(matches!(built, Err(HttpError::Tls(_))), "{built:?}");
}

#[tokio::test]
async fn the_cli_publishes_to_a_hub_behind_tls_with_ca_cert() {
    let hub = Hub::start(&[]).await;
    let proxy = TlsProxy::start(&hub.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("proxy.pem");
    std::fs::write(&ca, &proxy.certificate).unwrap();
    let output = bounded(
        "herald publish over https",
        herald()
            .args(["publish", "--url", &proxy.url, "--ca-cert"])
            .arg(&ca)
            .args([
                "--topic",
                "run:tls",
                "--type",
                "step.completed",
                "--id",
                "cli-tls",
            ])
            .output(),
    )
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let receipt: PublishReceipt = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(receipt.id.as_str(), "cli-tls");
    // The same command without the certificate is refused.
    let refused = bounded(
        "herald publish over https, untrusted",
        herald()
            .args(["publish", "--url", &proxy.url])
            .args(["--topic", "run:tls", "--type", "step.completed"])
            .output(),
    )
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("certificate"),
        "{said}"
    );
    hub.stop().await;
}
