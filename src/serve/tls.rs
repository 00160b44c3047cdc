//! HTTPS for `serve`: PEM certificate and key loading. The server handshakes each connection in
//! its own task, bounded by [`crate::server::listen::HANDSHAKE_TIMEOUT`] and the cap on
//! connections without a valid token, so a slow or silent client cannot hold up the others.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::{self, ServerConfig};

/// Reads a PEM certificate chain and private key into a rustls server configuration (HTTP/1.1).
/// Errors name the option, the file and what is wrong with it.
pub fn load_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let cert_pem = std::fs::read(cert)
        .map_err(|e| format!("--tls-cert: cannot read {}: {e}", cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "--tls-cert: {} is not a valid PEM certificate file: {e}",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert: {} holds no certificate (expected PEM \"-----BEGIN CERTIFICATE-----\")",
            cert.display()
        ));
    }
    let key_pem =
        std::fs::read(key).map_err(|e| format!("--tls-key: cannot read {}: {e}", key.display()))?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "--tls-key: {} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| {
            format!(
                "--tls-cert/--tls-key: the certificate {} and key {} do not work together: {e}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
