//! [`HubArgs`]: the flags every client command takes to reach a hub, and the
//! publisher and subscriber built from them.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use herald_client::{Publisher, Subscriber, SubscriberBuilder};

/// The hub a client command talks to.
#[derive(Debug, Clone, Args)]
pub(crate) struct HubArgs {
    /// The hub's base URL (the WebSocket URL is derived from it: http → ws,
    /// https → wss, + /ws). Given more than once (or comma-separated in
    /// `HERALD_URL`), the nodes of one hub: a retry, or a reconnect, moves to
    /// the next one.
    #[arg(
        long = "url",
        env = "HERALD_URL",
        default_value = herald_client::DEFAULT_URL,
        value_delimiter = ','
    )]
    pub(crate) urls: Vec<String>,
    /// A PEM file of certificates to trust for an `https://` hub besides the
    /// Mozilla roots: a private CA, or a TLS proxy's self-signed certificate.
    #[arg(long, env = "HERALD_CA_CERT", value_name = "PEM_FILE")]
    ca_cert: Option<PathBuf>,
    /// An API key for a hub started with `--api-keys`, sent as
    /// `Authorization: Bearer` on HTTP calls (publishing needs `publish`).
    #[arg(long, env = "HERALD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// A JWT for a hub started with `--jwt-secret`/`--jwt-public-key`, sent
    /// as `Authorization: Bearer` on the WebSocket (tail, approve).
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl HubArgs {
    /// The URLs as messages show them (see [`herald_client::endpoint::redacted`]).
    pub(crate) fn shown_urls(&self) -> String {
        let shown: Vec<String> = self
            .urls
            .iter()
            .map(|url| herald_client::endpoint::redacted(url))
            .collect();
        shown.join(", ")
    }

    /// The first URL, and the others.
    fn split_urls(&self) -> (String, &[String]) {
        match self.urls.split_first() {
            Some((first, others)) => (first.clone(), others),
            None => (herald_client::DEFAULT_URL.to_owned(), &[]),
        }
    }

    /// The `--ca-cert` file's text, if one was given.
    fn ca_pem(&self) -> anyhow::Result<Option<Vec<u8>>> {
        self.ca_cert
            .as_ref()
            .map(|path| {
                std::fs::read(path).with_context(|| format!("reading --ca-cert {}", path.display()))
            })
            .transpose()
    }

    /// A publisher for this hub.
    pub(crate) fn publisher(&self) -> anyhow::Result<Publisher> {
        let (first, others) = self.split_urls();
        let mut builder = others
            .iter()
            .fold(Publisher::builder(first), |builder, url| {
                builder.failover(url.clone())
            });
        if let Some(pem) = self.ca_pem()? {
            builder = builder.root_certificate_pem(pem);
        }
        if let Some(key) = &self.api_key {
            builder = builder.bearer_token(key.clone());
        }
        Ok(builder.build()?)
    }

    /// Subscriber options for this hub.
    pub(crate) fn subscriber(&self) -> anyhow::Result<SubscriberBuilder> {
        let (first, others) = self.split_urls();
        let mut builder = others
            .iter()
            .fold(Subscriber::builder(first), |builder, url| {
                builder.failover(url.clone())
            });
        if let Some(pem) = self.ca_pem()? {
            builder = builder.root_certificate_pem(pem);
        }
        if let Some(token) = &self.token {
            builder = builder.token(token.clone());
        }
        Ok(builder)
    }
}
