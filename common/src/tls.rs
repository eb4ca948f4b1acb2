//! TLS for the agent: trust only a CA whose SubjectPublicKeyInfo matches a pin from the bootstrap
//! bundle, and present the client certificate once the agent has one.

use std::sync::Arc;

use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

/// The crypto provider every Outpost process uses: ring, with TLS 1.3's AES-128-GCM first.
/// The relay tunnel carries every relayed byte through this cipher (and SSH's own inside it);
/// AES-128 costs about three quarters of AES-256 per byte and is as strong as any suite here.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring_provider())
}

fn ring_provider() -> CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    let pos = |s: &rustls::SupportedCipherSuite| match s.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        _ => 3,
    };
    p.cipher_suites.sort_by_key(pos);
    p
}

/// Installs ring as the process-wide rustls provider (idempotent).
pub fn install_provider() {
    let _ = ring_provider().install_default();
}

/// base64 of SHA-256 over a certificate's DER SubjectPublicKeyInfo.
pub fn spki_pin(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let digest = Sha256::digest(cert.tbs_certificate.subject_pki.raw);
    Some(base64::engine::general_purpose::STANDARD.encode(digest))
}

/// Verifies the server's chain against a CA certificate that the server itself presents, but only
/// when that CA's SPKI matches one of the pins. Hostname and validity are checked by webpki.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    pins: Vec<String>,
    provider: Arc<CryptoProvider>,
}

impl PinnedCaVerifier {
    pub fn new(pins: Vec<String>) -> Self {
        PinnedCaVerifier {
            pins,
            provider: provider(),
        }
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut last_err = rustls::Error::General("no presented CA matches the pinned key".into());
        for ca in intermediates {
            let Some(pin) = spki_pin(ca) else { continue };
            if !self.pins.iter().any(|p| p == &pin) {
                continue;
            }
            let mut roots = RootCertStore::empty();
            roots.add(ca.clone().into_owned())?;
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                    .build()
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
            match verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now) {
                Ok(v) => return Ok(v),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A rustls client config that trusts only the pinned CAs, with an optional client certificate
/// (chain PEM + PKCS#8 key PEM).
pub fn client_config(
    pins: &[String],
    client_cert: Option<(&str, &str)>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    use rustls::pki_types::pem::PemObject;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier::new(pins.to_vec())));
    let mut config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((chain_pem, key_pem)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| rustls::Error::General(format!("bad certificate PEM: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|e| rustls::Error::General(format!("bad key PEM: {e}")))?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    // HTTP/2 when control offers it: the long poll and heartbeats share one connection.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tunnel_prefers_aes128_gcm_and_keeps_the_others() {
        let p = super::provider();
        let suites: Vec<_> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(
            suites.first(),
            Some(&rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
        assert!(suites.contains(&rustls::CipherSuite::TLS13_AES_256_GCM_SHA384));
        assert!(suites.contains(&rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256));
        assert_eq!(
            suites.len(),
            rustls::crypto::ring::default_provider().cipher_suites.len()
        );
    }
}
