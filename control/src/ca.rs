//! The certificate authority: created on first start in the data dir (key 0600), it signs the
//! agent listener's server certificate and the agents' client certificates.

use std::path::Path;
use std::sync::Arc;

use crate::secrets::Keyring;
use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
    pin: String,
}

/// Why a CSR was refused. Shown to the agent only as a generic error.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("the CSR is malformed or its signature is invalid")]
    Invalid,
    #[error("the CSR's key must be ECDSA P-256 or Ed25519")]
    KeyType,
    #[error("signing failed: {0}")]
    Sign(String),
}

pub struct IssuedCert {
    pub pem: String,
    pub serial: String,
    pub expires_at_ms: i64,
}

/// The SPIFFE-style identity control puts in every agent certificate.
pub fn agent_uri(workspace_id: &str, agent_id: &str) -> String {
    format!("spiffe://outpost/workspace/{workspace_id}/agent/{agent_id}")
}

/// (workspace id, agent id) from a certificate control issued (its URI SAN).
pub fn identity_from_cert(der: &[u8]) -> Option<(String, String)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    identity_of(&cert)
}

fn identity_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<(String, String)> {
    let san = cert.subject_alternative_name().ok()??;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = name {
            let rest = uri.strip_prefix("spiffe://outpost/workspace/")?;
            let (ws, agent) = rest.split_once("/agent/")?;
            if !ws.is_empty() && !agent.is_empty() && !agent.contains('/') {
                return Some((ws.to_string(), agent.to_string()));
            }
        }
    }
    None
}

/// The identity a replica presents to another (replica-to-replica relaying).
pub fn replica_uri(replica_id: &str) -> String {
    format!("spiffe://outpost/replica/{replica_id}")
}

/// The replica id of a certificate control issued to a replica (its URI SAN).
fn replica_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => uri
            .strip_prefix("spiffe://outpost/replica/")
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .map(str::to_string),
        _ => None,
    })
}

/// A certificate's serial number as lowercase hex without leading zeros (DER drops them), the
/// form [`same_serial`] compares.
fn serial_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> String {
    cert.raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a connection's client certificate says, read in one parse: the agent identity, the
/// serial and the replica identity, or nothing at all outside the certificate's validity
/// dates. The TLS handshake checks them only when it verifies the chain, which a resumed
/// session (a TLS session ticket) does not do again.
#[derive(Debug, Default)]
pub struct PeerCert {
    pub identity: Option<(String, String)>,
    pub serial: Option<String>,
    pub replica: Option<String>,
}

pub fn peer_cert(der: &[u8], now_unix: i64) -> PeerCert {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return PeerCert::default();
    };
    let validity = cert.validity();
    if now_unix < validity.not_before.timestamp() || now_unix >= validity.not_after.timestamp() {
        return PeerCert::default();
    }
    PeerCert {
        identity: identity_of(&cert),
        serial: Some(serial_of(&cert)),
        replica: replica_of(&cert),
    }
}

/// Whether two hex serials are the same number.
pub fn same_serial(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.trim_start_matches('0').to_ascii_lowercase();
    !a.is_empty() && norm(a) == norm(b)
}

/// The CAs control knows: the one that signs, plus a staged next one and a previous one that
/// are still trusted during a rotation (`outpost ca rotate|promote|retire`).
pub struct CaSet {
    pub signing: Ca,
    /// Every CA agents may see or present: signing, next, previous.
    trusted: Vec<CertificateDer<'static>>,
    pins: Vec<String>,
}

impl CaSet {
    /// Loads `ca.*` (created on first start), `ca-next.*` and `ca-prev.crt` from `dir`.
    pub fn load(dir: &Path, keys: &Keyring) -> anyhow::Result<CaSet> {
        let signing = Ca::load_or_create_named(dir, "ca", keys)?;
        let mut trusted = vec![signing.cert_der.clone()];
        let mut pins = vec![signing.pin.clone()];
        for name in ["ca-next.crt", "ca-prev.crt"] {
            let p = dir.join(name);
            if p.exists() {
                let pem = std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?;
                let der = CertificateDer::from_pem_slice(pem.as_bytes())
                    .with_context(|| format!("parsing {}", p.display()))?;
                if let Some(pin) = outpost_common::tls::spki_pin(&der) {
                    pins.push(pin);
                }
                trusted.push(der);
            }
        }
        Ok(CaSet {
            signing,
            trusted,
            pins,
        })
    }

    /// SPKI pins of every trusted CA, the signing one first.
    pub fn pins(&self) -> Vec<String> {
        self.pins.clone()
    }

    /// Every trusted CA certificate, PEM, the signing one first.
    pub fn trusted_pem(&self) -> String {
        self.trusted
            .iter()
            .map(|d| {
                let b64 =
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, d.as_ref());
                let body: Vec<String> = b64
                    .as_bytes()
                    .chunks(64)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect();
                format!(
                    "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                    body.join("\n")
                )
            })
            .collect()
    }

    pub fn agent_server_config(&self, hosts: &[String]) -> anyhow::Result<rustls::ServerConfig> {
        self.signing.agent_server_config(hosts, &self.trusted)
    }

    /// The TLS client config replica `replica_id` uses to reach other replicas' agent
    /// listeners: their certificates checked against these CAs, its own certificate (a fresh
    /// key, issued now for a day, naming the replica) presented. TLS 1.3, HTTP/2.
    pub fn replica_client_config(&self, replica_id: &str) -> anyhow::Result<rustls::ClientConfig> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("outpost-replica {replica_id}"));
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(replica_uri(replica_id).try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(1);
        let cert = params.signed_by(&key, &self.signing.issuer()?)?;
        let chain = vec![cert.der().clone(), self.signing.cert_der.clone()];
        let key_der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in &self.trusted {
            roots.add(ca.clone())?;
        }
        let mut config =
            rustls::ClientConfig::builder_with_provider(outpost_common::tls::provider())
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key_der)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// `outpost ca rotate`: stage a new CA next to the current one.
pub fn rotate(dir: &Path, keys: &Keyring) -> anyhow::Result<String> {
    if dir.join("ca-next.crt").exists() {
        anyhow::bail!("a next CA is already staged; run `outpost ca promote` first");
    }
    let next = Ca::load_or_create_named(dir, "ca-next", keys)?;
    crate::ca_share::bump_generation(dir)?;
    Ok(next.pin)
}

/// `outpost ca promote`: the staged CA signs from now on; the old one stays trusted as previous.
pub fn promote(dir: &Path, keys: &Keyring) -> anyhow::Result<String> {
    if !dir.join("ca-next.crt").exists() {
        anyhow::bail!("no next CA is staged; run `outpost ca rotate` first");
    }
    if dir.join("ca-prev.crt").exists() {
        anyhow::bail!("a previous CA is still trusted; run `outpost ca retire` first");
    }
    std::fs::rename(dir.join("ca.crt"), dir.join("ca-prev.crt"))?;
    std::fs::remove_file(dir.join("ca.key"))?;
    std::fs::rename(dir.join("ca-next.key"), dir.join("ca.key"))?;
    std::fs::rename(dir.join("ca-next.crt"), dir.join("ca.crt"))?;
    crate::ca_share::bump_generation(dir)?;
    Ok(Ca::load_or_create_named(dir, "ca", keys)?.pin)
}

/// The CA key files that exist in `dir` (what `outpost secrets rotate` re-seals).
pub fn key_files(dir: &Path) -> Vec<std::path::PathBuf> {
    ["ca.key", "ca-next.key"]
        .iter()
        .map(|n| dir.join(n))
        .filter(|p| p.exists())
        .collect()
}

/// `outpost ca retire`: stop trusting the previous CA.
pub fn retire(dir: &Path) -> anyhow::Result<()> {
    let p = dir.join("ca-prev.crt");
    if !p.exists() {
        anyhow::bail!("no previous CA to retire");
    }
    std::fs::remove_file(p)?;
    crate::ca_share::bump_generation(dir)?;
    Ok(())
}

impl Ca {
    /// Loads the CA from `dir`, creating it on first start.
    pub fn load_or_create(dir: &Path, keys: &Keyring) -> anyhow::Result<Ca> {
        Self::load_or_create_named(dir, "ca", keys)
    }

    /// The CA's key file is sealed with the secrets key ([`crate::secrets`]); one written
    /// before sealing existed is sealed on first load.
    fn load_or_create_named(dir: &Path, name: &str, keys: &Keyring) -> anyhow::Result<Ca> {
        let key_path = dir.join(format!("{name}.key"));
        let cert_path = dir.join(format!("{name}.crt"));
        if key_path.exists() && cert_path.exists() {
            let stored = std::fs::read_to_string(&key_path)
                .with_context(|| format!("reading {}", key_path.display()))?;
            let key_pem = keys.open_str(&stored).with_context(|| {
                format!("opening {} (keys from {})", key_path.display(), keys.source)
            })?;
            if !keys.is_current(&stored) {
                write_private(&key_path, keys.seal(key_pem.as_bytes()).as_bytes())?;
            }
            let cert_pem = std::fs::read_to_string(&cert_path)
                .with_context(|| format!("reading {}", cert_path.display()))?;
            let key = KeyPair::from_pem(&key_pem).context("parsing the CA key")?;
            return Ca::from_parts(cert_pem, key);
        }
        let key = KeyPair::generate().context("generating the CA key")?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        // A distinct name per CA, so during a rotation each certificate names its own issuer.
        dn.push(
            DnType::CommonName,
            format!(
                "Outpost CA {}",
                OffsetDateTime::now_utc().unix_timestamp_nanos()
            ),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
        let cert = params.self_signed(&key).context("self-signing the CA")?;
        write_private(
            &key_path,
            keys.seal(key.serialize_pem().as_bytes()).as_bytes(),
        )?;
        std::fs::write(&cert_path, cert.pem())
            .with_context(|| format!("writing {}", cert_path.display()))?;
        Ca::from_parts(cert.pem(), key)
    }

    fn from_parts(cert_pem: String, key: KeyPair) -> anyhow::Result<Ca> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .context("parsing the CA certificate")?;
        let pin = outpost_common::tls::spki_pin(&cert_der).context("CA certificate has no SPKI")?;
        Ok(Ca {
            cert_pem,
            cert_der,
            key,
            pin,
        })
    }

    pub fn pin(&self) -> &str {
        &self.pin
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, rcgen::Error> {
        Issuer::from_ca_cert_der(&self.cert_der, &self.key)
    }

    /// The agent listener's TLS config: server certificate for `hosts` (IPs or DNS names) and
    /// client certificates from this CA optional at the TLS layer (bootstrap has none), required
    /// by every other route.
    fn agent_server_config(
        &self,
        hosts: &[String],
        trusted: &[CertificateDer<'static>],
    ) -> anyhow::Result<rustls::ServerConfig> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        for h in hosts {
            params
                .subject_alt_names
                .push(match h.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(h.clone().try_into()?),
                });
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Outpost agent API");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(365);
        let cert = params.signed_by(&key, &self.issuer()?)?;
        let chain = vec![cert.der().clone(), self.cert_der.clone()];
        let key_der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())?;

        let provider = outpost_common::tls::provider();
        let mut roots = rustls::RootCertStore::empty();
        for ca in trusted {
            roots.add(ca.clone())?;
        }
        let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()?;
        // TLS 1.3 only: before 1.3 a client certificate travels in clear, naming the workspace.
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain, key_der)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Checks a CSR without signing it: well-formed, a valid signature, an accepted key type.
    pub fn check_csr(csr_pem: &str) -> Result<CertificateSigningRequestParams, CsrError> {
        let csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|_| CsrError::Invalid)?;
        let alg = csr.public_key.algorithm();
        if alg != &rcgen::PKCS_ECDSA_P256_SHA256 && alg != &rcgen::PKCS_ED25519 {
            return Err(CsrError::KeyType);
        }
        Ok(csr)
    }

    /// SHA-256 (hex) of a CSR's public key: what a bootstrap token is spent for.
    pub fn csr_key_hash(csr_pem: &str) -> Result<String, CsrError> {
        use rcgen::PublicKeyData;
        use sha2::Digest;
        let csr = Self::check_csr(csr_pem)?;
        Ok(sha2::Sha256::digest(csr.public_key.der_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }

    /// Signs an agent's CSR. Only the CSR's public key is used: subject, SANs, extensions and
    /// lifetime are chosen here.
    pub fn sign_agent_csr(
        &self,
        csr_pem: &str,
        workspace_id: &str,
        agent_id: &str,
        lifetime: std::time::Duration,
    ) -> Result<IssuedCert, CsrError> {
        let csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|_| CsrError::Invalid)?;
        let alg = csr.public_key.algorithm();
        if alg != &rcgen::PKCS_ECDSA_P256_SHA256 && alg != &rcgen::PKCS_ED25519 {
            return Err(CsrError::KeyType);
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("outpost-agent {agent_id}"));
        params.distinguished_name = dn;
        let uri = agent_uri(workspace_id, agent_id)
            .try_into()
            .map_err(|e: rcgen::Error| CsrError::Sign(e.to_string()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let mut serial = [0u8; 16];
        rand::Rng::fill(&mut rand::thread_rng(), &mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(serial.to_vec().into());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        let not_after =
            now + Duration::try_from(lifetime).map_err(|e| CsrError::Sign(e.to_string()))?;
        params.not_after = not_after;
        let issuer = self.issuer().map_err(|e| CsrError::Sign(e.to_string()))?;
        let cert = params
            .signed_by(&csr.public_key, &issuer)
            .map_err(|e| CsrError::Sign(e.to_string()))?;
        Ok(IssuedCert {
            pem: cert.pem(),
            serial: serial.iter().map(|b| format!("{b:02x}")).collect(),
            expires_at_ms: (not_after.unix_timestamp_nanos() / 1_000_000) as i64,
        })
    }
}

pub use outpost_common::fs::write_private;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_only_what_control_chooses() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let keys = Keyring::load(None, &Keyring::default_file(dir.path()))?;
        let ca = Ca::load_or_create(dir.path(), &keys)?;
        // The key file is sealed.
        assert!(!std::fs::read_to_string(dir.path().join("ca.key"))?.contains("PRIVATE KEY"));
        // A CSR asking for a DNS SAN and CA rights.
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["evil.example".to_string()])?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = params.serialize_request(&key)?.pem()?;
        let issued = ca.sign_agent_csr(&csr, "ws1", "ag1", std::time::Duration::from_secs(3600))?;
        let der = CertificateDer::from_pem_slice(issued.pem.as_bytes())?;
        assert_eq!(identity_from_cert(&der), Some(("ws1".into(), "ag1".into())));
        let (_, cert) = x509_parser::parse_x509_certificate(&der)?;
        assert!(!cert.is_ca());
        let sans = cert
            .subject_alternative_name()?
            .map(|s| s.value.general_names.len());
        assert_eq!(sans, Some(1));
        // Reloading gives the same CA.
        let again = Ca::load_or_create(dir.path(), &keys)?;
        assert_eq!(again.pin(), ca.pin());
        let mode = std::fs::metadata(dir.path().join("ca.key"))?.permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        Ok(())
    }

    #[test]
    fn an_expired_certificate_names_no_one() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let keys = Keyring::load(None, &Keyring::default_file(dir.path()))?;
        let ca = Ca::load_or_create(dir.path(), &keys)?;
        let key = KeyPair::generate()?;
        let csr = CertificateParams::new(Vec::<String>::new())?
            .serialize_request(&key)?
            .pem()?;
        let issued = ca.sign_agent_csr(&csr, "ws1", "ag1", std::time::Duration::from_secs(3600))?;
        let der = CertificateDer::from_pem_slice(issued.pem.as_bytes())?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)?;
        let (from, until) = (
            cert.validity().not_before.timestamp(),
            cert.validity().not_after.timestamp(),
        );
        let valid = peer_cert(&der, from + 60);
        assert_eq!(valid.identity, Some(("ws1".into(), "ag1".into())));
        assert!(valid.serial.is_some());
        for t in [until, until + 1, from - 1] {
            let p = peer_cert(&der, t);
            assert!(p.identity.is_none() && p.serial.is_none() && p.replica.is_none());
        }
        assert!(peer_cert(b"not a certificate", from + 60)
            .identity
            .is_none());
        Ok(())
    }

    #[test]
    fn refuses_rsa_and_garbage() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let keys = Keyring::load(None, &Keyring::default_file(dir.path()))?;
        let ca = Ca::load_or_create(dir.path(), &keys)?;
        assert!(matches!(
            ca.sign_agent_csr("not a csr", "w", "a", std::time::Duration::from_secs(60)),
            Err(CsrError::Invalid)
        ));
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
        let csr = CertificateParams::new(Vec::<String>::new())?
            .serialize_request(&key)?
            .pem()?;
        assert!(matches!(
            ca.sign_agent_csr(&csr, "w", "a", std::time::Duration::from_secs(60)),
            Err(CsrError::KeyType)
        ));
        Ok(())
    }
}
