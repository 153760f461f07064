//! Loading certificates and keys (PEM files, PEM bytes, PKCS#12), checking them, and making the
//! development certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::{CaSource, CertificateSource};
use crate::error::{Error, Result};

/// A certificate ready to serve, with what the logs and checks need to know about it.
pub(super) struct LoadedCertificate {
    pub(super) key: Arc<CertifiedKey>,
    /// The leaf's subject, for messages.
    pub(super) subject: String,
    /// Set when the leaf is outside its validity period now: the text says how.
    pub(super) validity_problem: Option<String>,
}

/// The in-memory self-signed certificate for `localhost`, `127.0.0.1` and `::1` that an
/// `https://localhost` endpoint without a configured certificate serves (like `dotnet dev-certs`).
#[derive(Clone)]
pub struct DevCertificate {
    pub(super) key: Arc<CertifiedKey>,
    pem: String,
    fingerprint: String,
}

impl std::fmt::Debug for DevCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCertificate")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl DevCertificate {
    /// Generates a fresh ECDSA P-256 certificate valid for one year.
    pub(crate) fn generate(provider: &CryptoProvider) -> Result<DevCertificate> {
        let tls_err = |e: &dyn std::fmt::Display| {
            Error::Tls(format!("cannot make the development certificate: {e}"))
        };
        let mut params = rcgen::CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])
        .map_err(|e| tls_err(&e))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost (kestrel development)");
        let now = std::time::SystemTime::now();
        params.not_before = (now - std::time::Duration::from_secs(3600)).into();
        params.not_after = (now + std::time::Duration::from_secs(365 * 24 * 3600)).into();
        let key_pair = rcgen::KeyPair::generate().map_err(|e| tls_err(&e))?;
        let cert = params.self_signed(&key_pair).map_err(|e| tls_err(&e))?;
        let der = cert.der().clone();
        let fingerprint = sha256_hex(&der);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
        let key = CertifiedKey::from_der(vec![der], key, provider).map_err(|e| tls_err(&e))?;
        Ok(DevCertificate {
            key: Arc::new(key),
            pem: cert.pem(),
            fingerprint,
        })
    }

    /// The certificate as PEM, for a client to trust.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The SHA-256 fingerprint of the certificate's DER, colon-separated upper-case hex.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// Colon-separated upper-case hex of the SHA-256 of `bytes`, as browsers and openssl show it.
pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::Tls(format!("cannot read the {what} {}: {e}", path.display())))
}

/// Loads and checks one certificate source. Blocking (reads files).
pub(super) fn load(
    source: &CertificateSource,
    provider: &CryptoProvider,
) -> Result<LoadedCertificate> {
    let (chain, key, origin) = match source {
        CertificateSource::PemFiles { cert, key } => {
            let cert_bytes = read(cert, "certificate file")?;
            let key_bytes = read(key, "key file")?;
            let origin = format!("{} and {}", cert.display(), key.display());
            let chain = pem_chain(&cert_bytes, &cert.display().to_string())?;
            let key = pem_key(&key_bytes, &key.display().to_string())?;
            (chain, key, origin)
        }
        CertificateSource::Pem { cert, key } => {
            let chain = pem_chain(cert, "the certificate PEM")?;
            let key = pem_key(key, "the key PEM")?;
            (chain, key, "the PEM given in memory".to_string())
        }
        CertificateSource::Pkcs12File { path, password } => {
            let bytes = read(path, "PKCS#12 file")?;
            let (chain, key) = pkcs12(&bytes, password, &path.display().to_string())?;
            (chain, key, path.display().to_string())
        }
    };
    certify(chain, key, provider, &origin)
}

fn pem_chain(pem: &[u8], origin: &str) -> Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("{origin}: not a valid PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(Error::Tls(format!(
            "{origin}: no CERTIFICATE section found"
        )));
    }
    Ok(chain)
}

fn pem_key(pem: &[u8], origin: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => Error::Tls(format!(
            "{origin}: no private key found (expected PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY; \
             encrypted keys are not supported)"
        )),
        e => Error::Tls(format!("{origin}: not a valid PEM private key: {e}")),
    })
}

fn pkcs12(
    bytes: &[u8],
    password: &str,
    origin: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let store = p12_keystore::KeyStore::from_pkcs12(bytes, password).map_err(|e| {
        let text = e.to_string();
        // A wrong password shows up as a MAC (integrity) failure.
        if text.to_ascii_lowercase().contains("mac") {
            Error::Tls(format!(
                "{origin}: wrong password (the PKCS#12 integrity check failed)"
            ))
        } else {
            Error::Tls(format!("{origin}: not a readable PKCS#12 file: {text}"))
        }
    })?;
    let (_, chain) = store
        .private_key_chain()
        .ok_or_else(|| Error::Tls(format!("{origin}: the PKCS#12 file holds no private key")))?;
    let certs: Vec<CertificateDer<'static>> = chain
        .chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_der().to_vec()))
        .collect();
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "{origin}: the PKCS#12 file holds no certificate for its key"
        )));
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain.key().to_vec()));
    Ok((certs, key))
}

fn certify(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
    origin: &str,
) -> Result<LoadedCertificate> {
    let (subject, validity_problem) = describe(&chain[0], origin)?;
    let signing_key = provider.key_provider.load_private_key(key).map_err(|e| {
        Error::Tls(format!(
            "{origin}: unsupported or invalid private key (RSA, ECDSA P-256/P-384 and Ed25519 \
             are supported): {e}"
        ))
    })?;
    let key = CertifiedKey::new(chain, signing_key);
    match key.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(Error::Tls(format!(
                "{origin}: the private key does not match the certificate ({subject})"
            )))
        }
        // The provider cannot tell (no public key exposed): the first handshake will.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => return Err(Error::Tls(format!("{origin}: {e}"))),
    }
    Ok(LoadedCertificate {
        key: Arc::new(key),
        subject,
        validity_problem,
    })
}

/// The leaf's subject, and a description of its validity problem if it is not valid now.
fn describe(leaf: &CertificateDer<'_>, origin: &str) -> Result<(String, Option<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| Error::Tls(format!("{origin}: the certificate is not valid X.509: {e}")))?;
    let subject = cert.subject().to_string();
    let validity = cert.validity();
    let problem = if validity.not_after.timestamp() < unix_now() {
        Some(format!("expired on {}", validity.not_after))
    } else if validity.not_before.timestamp() > unix_now() {
        Some(format!("not valid before {}", validity.not_before))
    } else {
        None
    };
    Ok((subject, problem))
}

/// The subject of a DER certificate, for handlers (`CN=alice, O=Example`).
pub(super) fn subject_of(der: &[u8]) -> Option<String> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, cert)| cert.subject().to_string())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Loads the trust anchors for client certificates. Blocking (may read a file).
pub(super) fn load_ca(source: &CaSource) -> Result<rustls::RootCertStore> {
    let (bytes, origin) = match source {
        CaSource::File(path) => (read(path, "client CA file")?, path.display().to_string()),
        CaSource::Pem(pem) => (pem.clone(), "the client CA PEM".to_string()),
    };
    let certs = pem_chain(&bytes, &origin)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| Error::Tls(format!("{origin}: not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> CryptoProvider {
        rustls::crypto::ring::default_provider()
    }

    /// A self-signed certificate and its key as PEM, valid from `from` to `to` (seconds from now).
    fn make(name: &str, from: i64, to: i64) -> (String, String, rcgen::KeyPair) {
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let at = |s: i64| {
            let now = std::time::SystemTime::now();
            let d = std::time::Duration::from_secs(s.unsigned_abs());
            if s < 0 {
                now - d
            } else {
                now + d
            }
        };
        params.not_before = at(from).into();
        params.not_after = at(to).into();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem(), key)
    }

    fn pem(cert: &str, key: &str) -> CertificateSource {
        CertificateSource::Pem {
            cert: cert.as_bytes().to_vec(),
            key: key.as_bytes().to_vec(),
        }
    }

    fn error(source: &CertificateSource) -> String {
        match load(source, &provider()) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_good_pair_loads_with_its_subject() {
        let (cert, key, _) = make("good.test", -60, 3600);
        let loaded = load(&pem(&cert, &key), &provider()).unwrap();
        assert_eq!(loaded.subject, "CN=good.test");
        assert!(loaded.validity_problem.is_none());
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (cert, _, _) = make("a.test", -60, 3600);
        let (_, other_key, _) = make("b.test", -60, 3600);
        let e = error(&pem(&cert, &other_key));
        assert!(e.contains("does not match"), "{e}");
    }

    #[test]
    fn expired_and_future_certificates_are_flagged() {
        let (cert, key, _) = make("old.test", -7200, -3600);
        let loaded = load(&pem(&cert, &key), &provider()).unwrap();
        assert!(loaded.validity_problem.unwrap().starts_with("expired"));
        let (cert, key, _) = make("new.test", 3600, 7200);
        let loaded = load(&pem(&cert, &key), &provider()).unwrap();
        assert!(loaded
            .validity_problem
            .unwrap()
            .starts_with("not valid before"));
    }

    #[test]
    fn garbage_and_missing_parts_are_named() {
        let (cert, key, _) = make("x.test", -60, 3600);
        assert!(error(&pem("not pem", &key)).contains("no CERTIFICATE"));
        assert!(error(&pem(&cert, "not pem")).contains("no private key"));
        let e = error(&CertificateSource::PemFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        });
        assert!(e.contains("/nonexistent/cert.pem"), "{e}");
    }

    #[test]
    fn pkcs12_with_right_and_wrong_password() {
        let (cert, _, key) = make("p12.test", -60, 3600);
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let chain = p12_keystore::PrivateKeyChain::new(
            key.serialize_der(),
            [1u8; 20],
            vec![p12_keystore::Certificate::from_der(&der).unwrap()],
        );
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry("k", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        let bytes = store.writer("s3cret").write().unwrap();
        let dir = std::env::temp_dir().join(format!("kestrel-p12-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("test.pfx");
        std::fs::write(&path, bytes).unwrap();
        let good = CertificateSource::Pkcs12File {
            path: path.clone(),
            password: "s3cret".into(),
        };
        assert_eq!(load(&good, &provider()).unwrap().subject, "CN=p12.test");
        let wrong = CertificateSource::Pkcs12File {
            path: path.clone(),
            password: "nope".into(),
        };
        assert!(error(&wrong).contains("wrong password"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn development_certificate_covers_localhost_only() {
        let dev = DevCertificate::generate(&provider()).unwrap();
        assert_eq!(dev.fingerprint().len(), 32 * 3 - 1);
        let der = CertificateDer::from_pem_slice(dev.pem().as_bytes()).unwrap();
        assert_eq!(sha256_hex(&der), dev.fingerprint());
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = parsed.subject_alternative_name().unwrap().unwrap();
        use x509_parser::extensions::GeneralName;
        let names = &san.value.general_names;
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains(&GeneralName::DNSName("localhost")));
        assert!(names.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));
        let v6_loopback = std::net::Ipv6Addr::LOCALHOST.octets();
        assert!(names.contains(&GeneralName::IPAddress(&v6_loopback)));
    }
}
