//! The credential a service-facing call presents, read from the transport and the metadata: a
//! service key in `authorization: Bearer idk_…`, else a person's token in `authorization:
//! Bearer …`, else the client certificate mutual TLS verified, else nothing. Deciding what the
//! credential may do is [`crate::service::Identity::authorize`]'s job.

use secrecy::SecretString;
use tonic::Request;
use x509_parser::{extensions::GeneralName, prelude::FromDer};

use crate::{
    domain::{CertificateNames, Credential, ServiceKey},
    error::AppError,
};

const MALFORMED: &str = "authorization metadata must be `Bearer <service key>`";

/// The credential of `request`. An explicit `authorization` wins over the certificate, so a
/// service in an mTLS cluster can still present a key of its own.
pub fn credential<T>(request: &Request<T>) -> Result<Credential, AppError> {
    if let Some(header) = request.metadata().get("authorization") {
        let value = header.to_str().map_err(|_| AppError::Unauthenticated(MALFORMED))?;
        let token = super::bearer_token(value).ok_or(AppError::Unauthenticated(MALFORMED))?;
        if token.starts_with(ServiceKey::PREFIX) {
            return ServiceKey::presented(token)
                .map(Credential::ServiceKey)
                .ok_or(AppError::Unauthenticated("unknown or revoked service key"));
        }
        return Ok(Credential::AccessToken(SecretString::from(token.to_owned())));
    }
    // The TLS layer verified the chain against IDENTITY_TLS_CLIENT_CA_FILE; the first
    // certificate is the client's own.
    let names =
        request.peer_certs().and_then(|chain| chain.first().map(|leaf| certificate_names(leaf.as_ref())));
    Ok(match names {
        Some(Some(names)) => Credential::Certificate(names),
        // A certificate we verified yet cannot read names nothing we could allow.
        Some(None) => Credential::Certificate(CertificateNames::default()),
        None => Credential::None,
    })
}

/// The subject common name and the DNS and URI subject alternative names of a DER certificate.
fn certificate_names(der: &[u8]) -> Option<CertificateNames> {
    let (_, certificate) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let common_name =
        certificate.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned);
    let mut names = CertificateNames { common_name, ..CertificateNames::default() };
    if let Ok(Some(san)) = certificate.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.dns_names.push((*dns).to_owned()),
                GeneralName::URI(uri) => names.uris.push((*uri).to_owned()),
                _ => {}
            }
        }
    }
    Some(names)
}
