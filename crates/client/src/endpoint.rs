//! [`HubUrl`]: a hub's base URL, and the URLs of its endpoints.

use std::fmt;
use std::str::FromStr;

use reqwest::Url;

use crate::error::UrlError;

/// A hub's base URL: `http://HOST:PORT` (or `https`), optionally with a path
/// prefix when the hub sits behind a proxy. A `ws://`/`wss://` URL is accepted
/// too and mapped back to `http`/`https`; a trailing `/ws` is dropped. A URL
/// with a query (`?topics=…`, `?token=…`) is refused: those go to the client's
/// builder.
#[derive(Clone, PartialEq, Eq)]
pub struct HubUrl {
    base: Url,
}

impl HubUrl {
    /// Parses and normalises `url`.
    pub fn parse(url: &str) -> Result<HubUrl, UrlError> {
        let invalid = |reason: String| UrlError {
            url: redacted(url),
            reason,
        };
        let mut base = Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        let scheme = match base.scheme() {
            "http" | "ws" => "http",
            "https" | "wss" => "https",
            other => {
                return Err(invalid(format!(
                    "unsupported scheme {other:?}; use http or https"
                )));
            }
        };
        base.set_scheme(scheme)
            .map_err(|()| invalid("cannot change the scheme".to_owned()))?;
        if base.host().is_none() {
            return Err(invalid("no host".to_owned()));
        }
        // A query would be dropped from every endpoint's URL: the topics and
        // the token go to the builder, never in the URL.
        if base.query().is_some_and(|query| !query.is_empty()) {
            return Err(invalid(
                "a hub URL takes no query: give topics and the token to the client".to_owned(),
            ));
        }
        base.set_query(None);
        base.set_fragment(None);
        let path = base.path().trim_end_matches('/');
        let path = path.strip_suffix("/ws").unwrap_or(path).to_owned();
        base.set_path(&format!("{path}/"));
        Ok(HubUrl { base })
    }

    /// The base URL, always ending with `/`.
    pub fn as_str(&self) -> &str {
        self.base.as_str()
    }

    /// `base` + `path` (a relative path such as `api/v1/events`).
    pub fn http(&self, path: &str) -> Result<Url, UrlError> {
        self.base.join(path).map_err(|e| UrlError {
            url: format!("{}{path}", self.base),
            reason: e.to_string(),
        })
    }

    /// `base` + the path segments, each percent-encoded (for ids in paths).
    pub fn http_segments(&self, segments: &[&str]) -> Result<Url, UrlError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| UrlError {
                url: self.base.to_string(),
                reason: "cannot be a base URL".to_owned(),
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// The WebSocket URL: `ws://HOST:PORT/ws` (`wss` for `https`).
    pub fn websocket(&self) -> String {
        let mut url = self.base.clone();
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        // Changing between these special schemes always succeeds.
        let _ = url.set_scheme(scheme);
        let path = format!("{}ws", url.path());
        url.set_path(&path);
        url.to_string()
    }
}

/// `url` as errors and logs may show it: without its query, fragment and
/// credentials (any of them may hold a token).
pub fn redacted(url: &str) -> String {
    let (without_query, cut) = match url.find(['?', '#']) {
        Some(at) => (&url[..at], true),
        None => (url, false),
    };
    let shown = match without_query.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((authority, path)) => {
                format!("{scheme}://{}/{path}", without_credentials(authority))
            }
            None => format!("{scheme}://{}", without_credentials(rest)),
        },
        None => without_query.to_owned(),
    };
    if cut { format!("{shown}?…") } else { shown }
}

fn without_credentials(authority: &str) -> String {
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("…@{host}"),
        None => authority.to_owned(),
    }
}

impl fmt::Debug for HubUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.base.as_str(), f)
    }
}

impl fmt::Display for HubUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base.as_str())
    }
}

impl FromStr for HubUrl {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HubUrl::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::HubUrl;

    #[test]
    fn websocket_url_is_derived_from_the_http_url() -> Result<(), Box<dyn std::error::Error>> {
        let url = HubUrl::parse("http://127.0.0.1:8765")?;
        assert_eq!(url.websocket(), "ws://127.0.0.1:8765/ws");
        assert_eq!(
            url.http("api/v1/events")?.as_str(),
            "http://127.0.0.1:8765/api/v1/events"
        );
        let proxied = HubUrl::parse("https://example.com/herald/")?;
        assert_eq!(proxied.websocket(), "wss://example.com/herald/ws");
        assert_eq!(HubUrl::parse("ws://h:1/ws")?.as_str(), "http://h:1/");
        assert_eq!(
            url.http_segments(&["api", "v1", "approvals", "a/b?c"])?
                .as_str(),
            "http://127.0.0.1:8765/api/v1/approvals/a%2Fb%3Fc"
        );
        assert!(HubUrl::parse("ftp://h").is_err());
        for leaky in [
            "ws://h:1/ws?token=secret",
            "ftp://user:secret@h/?token=secret",
            "http://h:notaport/x?secret",
        ] {
            let refused = HubUrl::parse(leaky).unwrap_err();
            assert!(!refused.to_string().contains("secret"), "{refused}");
        }
        let query = HubUrl::parse("ws://h:1/ws?token=secret").unwrap_err();
        assert!(query.reason.contains("no query"), "{query}");
        assert!(!query.to_string().contains("secret"), "{query}");
        assert_eq!(HubUrl::parse("http://h:1/?")?.as_str(), "http://h:1/");
        assert!(HubUrl::parse("not a url").is_err());
        Ok(())
    }
}
