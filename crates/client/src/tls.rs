//! TLS for hubs behind `https://` / `wss://` (a TLS-terminating proxy or load
//! balancer in front of `herald serve`, which itself speaks plain HTTP).
//!
//! One rustls configuration (the `ring` provider) serves both the publisher's
//! HTTP client and the subscriber's WebSocket. It trusts the Mozilla root
//! certificates (`webpki-roots`, as browsers and `reqwest` do), plus any CA
//! the caller adds: a private CA, or a self-signed proxy certificate. The
//! system's certificate store is not read, so a client trusts the same roots
//! on every machine.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// Why extra trusted certificates were not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The PEM text holds no `CERTIFICATE` block, or a block does not decode.
    #[error("not a PEM certificate: {0}")]
    Pem(String),
    /// A certificate decoded but cannot be a trust anchor.
    #[error("certificate {index} cannot be trusted as a root: {reason}")]
    Certificate { index: usize, reason: String },
    /// rustls refused the configuration (no usable protocol version).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The certificates a client trusts besides the Mozilla roots: PEM text, as
/// given by the caller, decoded when the client is built.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExtraRoots(Vec<Vec<u8>>);

impl ExtraRoots {
    /// Adds every certificate of a PEM text (one or several `CERTIFICATE`
    /// blocks), checked when the client is built.
    pub(crate) fn push(&mut self, pem: Vec<u8>) {
        self.0.push(pem);
    }

    /// The client configuration: Mozilla roots plus these certificates.
    pub(crate) fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let mut index = 0;
        for pem in &self.0 {
            let mut found = false;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| TlsError::Pem(e.to_string()))?;
                roots.add(cert).map_err(|e| TlsError::Certificate {
                    index,
                    reason: e.to_string(),
                })?;
                index += 1;
                found = true;
            }
            if !found {
                return Err(TlsError::Pem("no CERTIFICATE block".into()));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

#[cfg(test)]
mod tests {
    use super::{ExtraRoots, TlsError};

    #[test]
    fn text_without_a_certificate_is_refused_when_the_client_is_built() {
        let mut roots = ExtraRoots::default();
        roots.push(b"not a certificate".to_vec());
        assert!(matches!(roots.client_config(), Err(TlsError::Pem(_))));
    }
}
