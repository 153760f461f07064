//! Client certificate verification per endpoint mode.
//!
//! With trust anchors, rustls' WebPKI verifier checks the chain (issuer, validity dates, key
//! usage). Without them, the host's validator decides: [`HostDecides`] then only checks that the
//! client owns the key of the certificate it shows (the handshake signature), and the validator
//! runs once the handshake is done.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::{certificate, ClientCertificateMode, TlsOptions};
use crate::error::{Error, Result};

/// Builds the verifier an endpoint's options ask for. Blocking (may read the CA file).
pub(super) fn verifier(
    options: &TlsOptions,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>> {
    let mandatory = match options.client_mode {
        ClientCertificateMode::NoCertificate => {
            return Ok(WebPkiClientVerifier::no_client_auth());
        }
        ClientCertificateMode::AllowCertificate => false,
        ClientCertificateMode::RequireCertificate => true,
    };
    match &options.client_ca {
        Some(ca) => {
            let roots = certificate::load_ca(ca)?;
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let builder = if mandatory {
                builder
            } else {
                builder.allow_unauthenticated()
            };
            builder
                .build()
                .map_err(|e| Error::Tls(format!("cannot use the client CA: {e}")))
        }
        None if options.client_validator.is_some() => Ok(Arc::new(HostDecides {
            mandatory,
            provider: provider.clone(),
        })),
        None => Err(Error::Tls(
            "client certificates are allowed or required but nothing can check them: set a \
             client CA or a client certificate validator"
                .into(),
        )),
    }
}

/// Accepts any certificate whose key the client proves it holds; the host's validator decides
/// after the handshake.
#[derive(Debug)]
struct HostDecides {
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for HostDecides {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
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
