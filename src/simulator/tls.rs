//! The simulator's TLS identity: a throwaway CA and a server certificate for
//! localhost and 127.0.0.1, generated at start. Clients trust the CA through
//! their `ca_file` setting, exactly as they would trust a proxy's. The same CA
//! issues client certificates for APNs certificate auth, which the server
//! accepts (but does not require) on every connection.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::SimulatorError;

pub struct Identity {
    /// PEM of the CA to trust.
    pub ca_pem: String,
    pub server: Arc<ServerConfig>,
    ca: CertifiedIssuer<'static, KeyPair>,
}

fn err(e: impl std::fmt::Display) -> SimulatorError {
    SimulatorError::Tls(e.to_string())
}

impl Identity {
    /// A client certificate and its key (PEM, concatenated), as Apple issues for
    /// certificate-based provider auth; the common name names the bundle id.
    pub fn issue_client(&self, bundle_id: &str) -> Result<String, SimulatorError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.distinguished_name.push(
            DnType::CommonName,
            format!("Apple Push Services: {bundle_id}"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &self.ca).map_err(err)?;
        Ok(format!("{}{}", cert.pem(), key.serialize_pem()))
    }
}

pub fn generate() -> Result<Identity, SimulatorError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Meridian provider simulator CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(err)?).map_err(err)?;

    let mut leaf = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .map_err(err)?;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_key = KeyPair::generate().map_err(err)?;
    let cert = leaf.signed_by(&leaf_key, &ca).map_err(err)?;

    let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone(), ca.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).map_err(err)?;
    let client_auth =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(err)?;
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(err)?
        .with_client_cert_verifier(client_auth)
        .with_single_cert(chain, key)
        .map_err(err)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Identity {
        ca_pem: ca.pem(),
        server: Arc::new(server),
        ca,
    })
}
