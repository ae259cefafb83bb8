//! TLS of the gRPC listener: the server identity, and with `--tls-client-ca` a mandatory client
//! certificate that must chain to that CA (webpki: signature, validity, intermediates, and an
//! extended key usage that allows client authentication) and be a leaf fit for TLS client
//! authentication (the policy below: webpki does not check keyUsage, and takes a missing
//! extendedKeyUsage as "any purpose").

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    ServerConfig, SignatureScheme,
};
use tokio_rustls::TlsAcceptor;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

/// Smallest RSA modulus accepted in a client certificate.
const MIN_RSA_BITS: usize = 2048;

/// Loading the TLS configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("TLS {what} {path}: {reason}")]
    File {
        /// Which file (certificate, key, client CA).
        what: &'static str,
        /// Its path.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The client CA cannot verify anything.
    #[error("TLS client CA: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

/// Why a client certificate that chains to the CA is still refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeafRefusal {
    /// Not parseable as X.509.
    #[error("not a valid X.509 certificate")]
    Unparseable,
    /// `basicConstraints CA:TRUE`: a CA certificate used as a client identity.
    #[error("it is a CA certificate (basicConstraints CA:TRUE), not a leaf")]
    CaCertificate,
    /// keyUsage present without digitalSignature (needed to sign the TLS handshake).
    #[error("its keyUsage lacks digitalSignature")]
    NoDigitalSignature,
    /// No extendedKeyUsage, or one without clientAuth.
    #[error("its extendedKeyUsage does not include clientAuth")]
    NoClientAuth,
    /// An RSA key shorter than 2048 bits (`MIN_RSA_BITS`).
    #[error("its RSA key has {0} bits (at least 2048 required)")]
    WeakKey(usize),
}

/// The acceptor of the gRPC listener (HTTP/2 only).
///
/// # Errors
///
/// [`TlsError::File`] naming the file when the certificate, key or client CA cannot be read, is not
/// PEM, or holds no certificate or key; [`TlsError::ClientCa`] when the client CA verifier cannot
/// be built from it; [`TlsError::Config`] when rustls refuses the configuration (e.g. the key does
/// not match the certificate).
pub fn acceptor(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error("certificate", cert, e))?;
    if chain.is_empty() {
        return Err(file_error("certificate", cert, "no certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("key", key, e))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match client_ca {
        Some(ca_path) => {
            let mut roots = RootCertStore::empty();
            for ca in CertificateDer::pem_file_iter(ca_path)
                .map_err(|e| file_error("client CA", ca_path, e))?
            {
                let ca = ca.map_err(|e| file_error("client CA", ca_path, e))?;
                roots
                    .add(ca)
                    .map_err(|e| file_error("client CA", ca_path, e))?;
            }
            if roots.is_empty() {
                return Err(file_error("client CA", ca_path, "no certificate in it"));
            }
            let webpki =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder
                .with_client_cert_verifier(Arc::new(ClientPolicy { webpki }))
                .with_single_cert(chain, key)?
        }
        None => builder.with_no_client_auth().with_single_cert(chain, key)?,
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn file_error(what: &'static str, path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        what,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The subject of a certificate, as text (the identity client budgets are shared by).
pub fn subject(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    Some(parsed.subject().to_string())
}

/// Whether `der` is a leaf fit for TLS client authentication.
///
/// # Errors
///
/// The [`LeafRefusal`] of the first check it fails, in this order: not parseable as X.509 (or one
/// of the extensions checked is malformed), a CA certificate, keyUsage without digitalSignature,
/// extendedKeyUsage missing or without clientAuth, an RSA key below 2048 bits.
pub fn check_client_leaf(der: &[u8]) -> Result<(), LeafRefusal> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| LeafRefusal::Unparseable)?;
    let constraints = cert
        .basic_constraints()
        .map_err(|_| LeafRefusal::Unparseable)?;
    if constraints.is_some_and(|c| c.value.ca) {
        return Err(LeafRefusal::CaCertificate);
    }
    let key_usage = cert.key_usage().map_err(|_| LeafRefusal::Unparseable)?;
    if key_usage.is_some_and(|ku| !ku.value.digital_signature()) {
        return Err(LeafRefusal::NoDigitalSignature);
    }
    let eku = cert
        .extended_key_usage()
        .map_err(|_| LeafRefusal::Unparseable)?;
    if !eku.is_some_and(|e| e.value.client_auth) {
        return Err(LeafRefusal::NoClientAuth);
    }
    if let Ok(PublicKey::RSA(rsa)) = cert.public_key().parsed() {
        let bits = significant_bits(rsa.modulus);
        if bits < MIN_RSA_BITS {
            return Err(LeafRefusal::WeakKey(bits));
        }
    }
    Ok(())
}

/// Bits of a big-endian unsigned integer, leading zeros not counted.
fn significant_bits(be: &[u8]) -> usize {
    match be.iter().position(|b| *b != 0) {
        Some(i) => (be.len() - i) * 8 - be[i].leading_zeros() as usize,
        None => 0,
    }
}

/// webpki's verification, then the leaf policy.
#[derive(Debug)]
struct ClientPolicy {
    webpki: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for ClientPolicy {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .webpki
            .verify_client_cert(end_entity, intermediates, now)?;
        check_client_leaf(end_entity.as_ref()).map_err(|refusal| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                refusal,
            ))))
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_significant_bits() {
        assert_eq!(significant_bits(&[0, 0x80, 0]), 16);
        assert_eq!(significant_bits(&[0x01, 0xff]), 9);
        assert_eq!(significant_bits(&[0, 0]), 0);
    }
}
