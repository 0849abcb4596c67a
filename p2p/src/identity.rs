//! Committee-bound TLS identities.
//!
//! Each node's QUIC endpoint presents a self-signed X.509 certificate for its ed25519 network
//! key. Both sides accept a peer only if the certificate's key is in the [`AllowedPeers`] set
//! (the committee's network keys, plus known sync-only peers) and learn the peer's identity
//! from it; the TLS 1.3 handshake signature proves the peer holds the matching private key.
//! There is no certificate authority and no name check: the key *is* the identity. The allowed
//! set can be replaced at run time (epoch changes); new handshakes see the new set.

use crate::error::{Error, Result};
use keel_types::PublicKey;
use parking_lot::RwLock;
use rustls::{
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring},
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};
use std::{collections::HashSet, sync::Arc};

/// The ed25519 OID (RFC 8410), as x509-parser prints it.
const ED25519_OID: &str = "1.3.101.112";

/// The network keys a node accepts connections with.
#[derive(Debug, Default)]
pub struct AllowedPeers {
    keys: RwLock<HashSet<PublicKey>>,
}

impl AllowedPeers {
    /// A set holding `keys`.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Arc<Self> {
        Arc::new(AllowedPeers {
            keys: RwLock::new(keys.into_iter().collect()),
        })
    }

    /// Replaces the set (e.g. at an epoch change).
    pub fn replace(&self, keys: impl IntoIterator<Item = PublicKey>) {
        *self.keys.write() = keys.into_iter().collect();
    }

    /// Whether `key` is allowed.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.read().contains(key)
    }
}

/// A node's TLS identity: its network key and the self-signed certificate for it.
pub struct NetworkIdentity {
    public: PublicKey,
    certificate: CertificateDer<'static>,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for NetworkIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NetworkIdentity({})", self.public)
    }
}

/// The PKCS#8 v1 encoding of an ed25519 private key (RFC 8410 §7): a fixed header, then the
/// 32-byte seed.
fn ed25519_pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    const HEADER: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut der = HEADER.to_vec();
    der.extend_from_slice(seed);
    der
}

impl NetworkIdentity {
    /// The identity of the network key with secret `seed`.
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self> {
        let tls = |e: rcgen::Error| Error::Tls {
            reason: e.to_string(),
        };
        let pkcs8 = ed25519_pkcs8(seed);
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8.clone()),
            &rcgen::PKCS_ED25519,
        )
        .map_err(tls)?;
        let public = keel_types::KeyPair::from_seed(seed).public();
        let mut params = rcgen::CertificateParams::new(vec!["keel".to_string()]).map_err(tls)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, public.to_string());
        let certificate = params.self_signed(&key_pair).map_err(tls)?;
        Ok(NetworkIdentity {
            public,
            certificate: certificate.der().clone(),
            pkcs8,
        })
    }

    /// The network public key.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The certificate presented to peers.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.clone()))
    }
}

/// The ed25519 key a peer's certificate is for.
pub fn peer_key(certificate: &CertificateDer<'_>) -> Result<PublicKey> {
    let bad = |reason: String| Error::Certificate { reason };
    let (rest, cert) = x509_parser::parse_x509_certificate(certificate.as_ref())
        .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes after the certificate".into()));
    }
    let spki = cert.public_key();
    if spki.algorithm.algorithm.to_id_string() != ED25519_OID {
        return Err(bad(format!(
            "key algorithm {} is not ed25519",
            spki.algorithm.algorithm.to_id_string()
        )));
    }
    let raw: &[u8] = &spki.subject_public_key.data;
    let bytes: [u8; 32] = raw
        .try_into()
        .map_err(|_| bad(format!("ed25519 key is {} bytes", raw.len())))?;
    PublicKey::from_bytes(&bytes).map_err(|e| bad(e.to_string()))
}

/// Accepts exactly the certificates whose key is allowed; used on both sides of a handshake.
#[derive(Debug)]
pub struct PeerVerifier {
    allowed: Arc<AllowedPeers>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerVerifier {
    /// A verifier backed by `allowed`.
    pub fn new(allowed: Arc<AllowedPeers>) -> Arc<Self> {
        Arc::new(PeerVerifier {
            allowed,
            algorithms: ring::default_provider().signature_verification_algorithms,
        })
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<PublicKey> {
        if !intermediates.is_empty() {
            return Err(Error::Certificate {
                reason: "certificate chains are not accepted".into(),
            });
        }
        let key = peer_key(end_entity)?;
        if !self.allowed.contains(&key) {
            return Err(Error::UnknownPeer {
                key: key.to_string(),
            });
        }
        Ok(key)
    }

    fn verify13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

/// The only handshake signature scheme accepted: network keys are ed25519.
const SCHEMES: [SignatureScheme; 1] = [SignatureScheme::ED25519];

/// Both sides refuse TLS 1.2 (QUIC needs 1.3, and so do we).
fn no_tls12() -> rustls::Error {
    rustls::Error::General("TLS 1.2 is not accepted".into())
}

/// The TLS server name a dial to `key` presents: the key's 64 hex characters as two DNS labels
/// of 32 (a label holds at most 63). The dialler's verifier accepts only that key.
pub fn server_name_for(key: &PublicKey) -> String {
    let hex = key.to_string();
    format!("{}.{}", &hex[..32], &hex[32..])
}

/// The key a server name made by [`server_name_for`] names.
fn key_of_server_name(name: &str) -> Option<PublicKey> {
    let (a, b) = name.split_once('.')?;
    if a.len() != 32 || b.len() != 32 {
        return None;
    }
    format!("{a}{b}").parse().ok()
}

fn reject(e: Error) -> rustls::Error {
    rustls::Error::General(e.to_string())
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let key = self.check(end_entity, intermediates).map_err(reject)?;
        // A dial names the key it expects ([`server_name_for`]): another allowed key answering
        // fails the handshake, before the server registers a connection it would replace a
        // good one with.
        if let ServerName::DnsName(name) = server_name
            && let Some(expected) = key_of_server_name(name.as_ref())
            && expected != key
        {
            return Err(reject(Error::Certificate {
                reason: format!("dialled {expected}, answered by {key}"),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SCHEMES.to_vec()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates).map_err(reject)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SCHEMES.to_vec()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// TLS 1.3 server configuration: presents `identity`, requires an allowed client certificate.
pub fn server_config(
    identity: &NetworkIdentity,
    allowed: Arc<AllowedPeers>,
) -> Result<rustls::ServerConfig> {
    rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls {
            reason: e.to_string(),
        })?
        .with_client_cert_verifier(PeerVerifier::new(allowed))
        .with_single_cert(vec![identity.certificate().clone()], identity.private_key())
        .map_err(|e| Error::Tls {
            reason: e.to_string(),
        })
}

/// TLS 1.3 client configuration: presents `identity`, accepts only allowed servers.
pub fn client_config(
    identity: &NetworkIdentity,
    allowed: Arc<AllowedPeers>,
) -> Result<rustls::ClientConfig> {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls {
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(PeerVerifier::new(allowed))
        .with_client_auth_cert(vec![identity.certificate().clone()], identity.private_key())
        .map_err(|e| Error::Tls {
            reason: e.to_string(),
        })
}
