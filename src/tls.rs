//! TLS failures in words an operator can act on, for every client Meridian
//! opens (the providers' HTTP/2 connections, the Postgres pool): all of them
//! run rustls, which names a refused certificate by an enum variant alone.

/// Whether an I/O error is a refused TLS handshake (rustls's error inside).
pub fn is_tls(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some())
}

/// A failed TLS handshake in words an operator can act on, rustls's own name
/// for it kept in parentheses (`CaUsedAsEndEntity` alone says little).
/// `ca_setting` names where the operator gives a CA to trust.
pub fn reason(e: &std::io::Error, host: &str, ca_setting: &str) -> String {
    use rustls::{CertificateError, Error};
    let Some(error) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) else {
        return format!("TLS handshake with {host} failed: {e}");
    };
    let plain = match error {
        Error::InvalidCertificate(c) => match c {
            // BadSignature: a CA of the same name, not the one trusted.
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "{host}'s certificate is not signed by a CA this machine trusts \
                 (behind a TLS-inspecting proxy or against a test server, name its CA in {ca_setting})"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("{host}'s certificate has expired (or this machine's clock is wrong)")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("{host}'s certificate is not valid yet (check this machine's clock)")
            }
            CertificateError::NotValidForName
            | CertificateError::NotValidForNameContext { .. } => {
                format!("{host}'s certificate is issued for another name")
            }
            CertificateError::Revoked => format!("{host}'s certificate has been revoked"),
            CertificateError::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => {
                format!(
                    "{host} presented a CA certificate as its own \
                     (a misconfigured server or TLS-inspecting proxy)"
                )
            }
            _ => format!("{host}'s certificate was refused"),
        },
        Error::AlertReceived(alert) => {
            format!("{host} refused the TLS handshake (alert {alert:?})")
        }
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => {
            format!("{host} did not answer in TLS (is the port right?)")
        }
        _ => format!("TLS handshake with {host} failed"),
    };
    format!("{plain} ({error})")
}
