//! `--tls`: mutual X.509 authentication with rustls (ring), with CRIU's
//! files and defaults (criu/tls.c): the CA certificate, an optional
//! revocation list, this side's certificate and key; the peer's
//! certificate must be valid for `--address` unless `--tls-no-cn-verify`
//! (or, on a server, when no address was given): by its subjectAltName,
//! or as GnuTLS also allows, by its common name (`certname`).

use super::certname::gnutls_name_match;
use super::conn::ps_err;
use crate::options::TlsOptions;
use crate::Error;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// CRIU's default paths.
pub const DEFAULT_CACERT: &str = "/etc/pki/CA/cacert.pem";
pub const DEFAULT_CACRL: &str = "/etc/pki/CA/cacrl.pem";
pub const DEFAULT_CERT: &str = "/etc/pki/criu/cert.pem";
pub const DEFAULT_KEY: &str = "/etc/pki/criu/private/key.pem";

/// The files one side uses, read and checked.
struct Material {
    roots: Arc<RootCertStore>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn path_or(p: &Option<PathBuf>, default: &str) -> PathBuf {
    p.clone().unwrap_or_else(|| PathBuf::from(default))
}

fn tls_err(peer: &str, what: String, e: impl std::fmt::Display) -> Error {
    ps_err(
        peer,
        what,
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    )
}

/// ring: it builds quickly here; the post-quantum key exchange that
/// rustls now prefers is not needed to talk to CRIU's GnuTLS.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load(t: &TlsOptions, peer: &str) -> Result<Material, Error> {
    let cacert = path_or(&t.cacert, DEFAULT_CACERT);
    let cacrl = path_or(&t.cacrl, DEFAULT_CACRL);
    let cert = path_or(&t.cert, DEFAULT_CERT);
    let key = path_or(&t.key, DEFAULT_KEY);
    let mut roots = RootCertStore::empty();
    let cas = read_certs(&cacert, peer, "CA certificate (--tls-cacert)")?;
    let (added, _) = roots.add_parsable_certificates(cas);
    if added == 0 {
        return Err(tls_err(
            peer,
            format!("no usable CA certificate in {}", cacert.display()),
            "give the CA's PEM certificate with --tls-cacert",
        ));
    }
    // The revocation list is optional at its default path, required when
    // named (as CRIU).
    let crls = if t.cacrl.is_some() || Path::new(&cacrl).exists() {
        CertificateRevocationListDer::pem_file_iter(&cacrl)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                tls_err(
                    peer,
                    format!(
                        "cannot read the certificate revocation list {} (--tls-cacrl)",
                        cacrl.display()
                    ),
                    e,
                )
            })?
    } else {
        Vec::new()
    };
    let chain = read_certs(&cert, peer, "certificate (--tls-cert)")?;
    let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| {
        tls_err(
            peer,
            format!("cannot read the private key {} (--tls-key)", key.display()),
            e,
        )
    })?;
    Ok(Material {
        roots: Arc::new(roots),
        crls,
        chain,
        key,
    })
}

fn read_certs(path: &Path, peer: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            tls_err(
                peer,
                format!("cannot read the {what} {}", path.display()),
                e,
            )
        })?;
    if certs.is_empty() {
        return Err(tls_err(
            peer,
            format!("no certificate in {} ({what})", path.display()),
            "a PEM file with a CERTIFICATE block is needed",
        ));
    }
    Ok(certs)
}

/// The name the peer's certificate must be valid for.
pub(super) fn server_name(addr: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(addr.to_string()).ok()
}

/// The client's configuration: the server's certificate checked against
/// the CA (and the CRL), and for `addr` (the `--address` text) unless
/// `no_cn_verify`.
pub(super) fn client_config(
    t: &TlsOptions,
    addr: &str,
    peer: &str,
) -> Result<rustls::ClientConfig, Error> {
    let m = load(t, peer)?;
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(m.roots.clone(), provider())
            .with_crls(m.crls)
            .build()
            .map_err(|e| tls_err(peer, "cannot set up certificate checks".into(), e))?;
    let verifier: Arc<dyn ServerCertVerifier> = Arc::new(NameCheck {
        chain: verifier,
        addr: (!t.no_cn_verify).then(|| addr.to_string()),
    });
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(peer, "no TLS version".into(), e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(m.chain, m.key)
        .map_err(|e| tls_err(peer, "the certificate and key do not go together".into(), e))
}

/// The server's configuration: a client certificate is required and
/// checked against the CA (and the CRL).
pub(super) fn server_config(t: &TlsOptions, peer: &str) -> Result<rustls::ServerConfig, Error> {
    let m = load(t, peer)?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(m.roots.clone(), provider())
            .with_crls(m.crls)
            .build()
            .map_err(|e| tls_err(peer, "cannot set up certificate checks".into(), e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(peer, "no TLS version".into(), e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(m.chain, m.key)
        .map_err(|e| tls_err(peer, "the certificate and key do not go together".into(), e))?;
    // No TLS 1.3 session tickets: GnuTLS (CRIU's client) answers a read
    // that meets one with E_AGAIN, which CRIU takes for "no answer".
    cfg.send_tls13_tickets = 0;
    Ok(cfg)
}

/// Is the client's certificate (already checked against the CA) valid for
/// `addr`? CRIU's server checks the client's certificate against its own
/// `--address`.
pub(super) fn check_peer_name(
    peer_certs: Option<&[CertificateDer<'_>]>,
    addr: &str,
    peer: &str,
) -> Result<(), Error> {
    let Some(cert) = peer_certs.and_then(|c| c.first()) else {
        return Err(tls_err(
            peer,
            "the client sent no certificate".into(),
            "--tls needs a certificate on both sides",
        ));
    };
    let Some(name) = server_name(addr) else {
        return Err(tls_err(
            peer,
            format!("{addr} is not a host name or an address"),
            "use --tls-no-cn-verify",
        ));
    };
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| tls_err(peer, "cannot parse the client's certificate".into(), e))?;
    match ee.verify_is_valid_for_subject_name(&name) {
        Ok(()) => Ok(()),
        Err(_) if gnutls_name_match(cert, addr) => Ok(()),
        Err(e) => Err(tls_err(
            peer,
            format!("the client's certificate is not valid for {addr} (neither its subjectAltName nor its common name)"),
            format!("{e:?} (--tls-no-cn-verify skips this check)"),
        )),
    }
}

/// The client's check of the server's certificate: the chain as rustls
/// checks it, then the name: valid for `addr` as rustls judges (by
/// subjectAltName) or as GnuTLS does (its common name, see
/// [`gnutls_name_match`]); any name with `--tls-no-cn-verify` (addr None).
#[derive(Debug)]
struct NameCheck {
    chain: Arc<rustls::client::WebPkiServerVerifier>,
    addr: Option<String>,
}

impl ServerCertVerifier for NameCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is verified before the name: a name error means all
        // else passed.
        match self
            .chain
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self
                .addr
                .as_deref()
                .is_none_or(|a| gnutls_name_match(end_entity, a)) =>
            {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}
