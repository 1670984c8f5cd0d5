//! Turning a CSR into a workload certificate: the checks a CSR must pass and the shape of the
//! leaf the CA writes.
//!
//! The CSR only contributes its public key: its signature must verify (proof the requester
//! holds the key) and its one URI SAN must be exactly the caller's authenticated identity.
//! Everything else in the leaf is the CA's: SAN = that identity and nothing more, empty subject
//! (so the SAN is critical, as X.509-SVIDs have it), server + client auth, not a CA.

use std::time::{Duration, SystemTime};

use paymesh_tls::Identity;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};

/// The largest CSR accepted, in bytes of PEM (an RSA-4096 CSR is under 2 KiB).
pub const MAX_CSR_BYTES: usize = 32 * 1024;

/// PEM labels a CSR may carry.
const CSR_LABELS: [&str; 2] = ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"];

/// Why a CSR was not signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Larger than [`MAX_CSR_BYTES`].
    #[error("CSR is {0} bytes; at most {MAX_CSR_BYTES} are accepted")]
    CsrTooLarge(usize),
    /// Not exactly one PEM `CERTIFICATE REQUEST` block.
    #[error("CSR is not one PEM `CERTIFICATE REQUEST` block: {0}")]
    CsrPem(String),
    /// Not a PKCS#10 request, an unsupported extension or key, or a signature that does not verify.
    #[error("CSR is invalid or its signature does not verify: {0}")]
    CsrInvalid(#[source] rcgen::Error),
    /// No SAN at all.
    #[error("CSR names no identity: its only SAN must be the caller's SPIFFE ID")]
    NoSan,
    /// SANs other than exactly the caller's identity.
    #[error(
        "CSR asks for {requested:?}, but the caller is {caller}: a certificate names only the caller's own identity"
    )]
    NotCaller {
        /// The SANs of the CSR.
        requested: Vec<String>,
        /// The authenticated caller.
        caller: Box<Identity>,
    },
    /// A requested validity beyond the CA's maximum.
    #[error("requested validity of {}s is longer than the maximum of {}s", requested.as_secs(), max.as_secs())]
    TtlTooLong {
        /// What was asked.
        requested: Duration,
        /// The CA's maximum.
        max: Duration,
    },
    /// No randomness for the serial number.
    #[error("no randomness for a serial number")]
    Random,
    /// The signed leaf and the local key do not make a credential (control plane's own).
    #[error("the signed certificate does not make a credential: {0}")]
    Credential(#[source] paymesh_tls::CertError),
    /// rcgen failed to write or sign the certificate.
    #[error("signing the certificate: {0}")]
    Sign(#[source] rcgen::Error),
}

/// Checks `csr_pem` against the authenticated `caller` and returns the public key to certify.
pub(crate) fn check_csr(csr_pem: &str, caller: &Identity) -> Result<rcgen::PublicKey, SignError> {
    if csr_pem.len() > MAX_CSR_BYTES {
        return Err(SignError::CsrTooLarge(csr_pem.len()));
    }
    let blocks = pem::parse_many(csr_pem).map_err(|e| SignError::CsrPem(e.to_string()))?;
    let block = match blocks.as_slice() {
        [block] if CSR_LABELS.contains(&block.tag()) => block,
        [block] => return Err(SignError::CsrPem(format!("found a `{}` block", block.tag()))),
        blocks => return Err(SignError::CsrPem(format!("found {} blocks", blocks.len()))),
    };
    let der = CertificateSigningRequestDer::from(block.contents());
    let request = CertificateSigningRequestParams::from_der(&der).map_err(SignError::CsrInvalid)?;
    let requested: Vec<String> = request.params.subject_alt_names.iter().map(describe_san).collect();
    match request.params.subject_alt_names.as_slice() {
        [] => Err(SignError::NoSan),
        [SanType::URI(uri)] if uri.as_str().parse::<Identity>().is_ok_and(|id| &id == caller) => {
            Ok(request.public_key)
        }
        _ => Err(SignError::NotCaller { requested, caller: Box::new(caller.clone()) }),
    }
}

fn describe_san(san: &SanType) -> String {
    match san {
        SanType::URI(uri) => uri.as_str().to_owned(),
        SanType::DnsName(name) => format!("DNS:{}", name.as_str()),
        SanType::IpAddress(ip) => format!("IP:{ip}"),
        SanType::Rfc822Name(mail) => format!("email:{}", mail.as_str()),
        other => format!("{other:?}"),
    }
}

/// The validity window and serial of a leaf about to be signed.
pub(crate) struct LeafTerms {
    /// Start of validity (already backdated for clock skew).
    pub(crate) not_before: SystemTime,
    /// End of validity.
    pub(crate) not_after: SystemTime,
}

/// Signs a workload leaf for `identity` (plus `dns_names`, used only for the control plane's
/// own serving certificate) over `public_key`.
pub(crate) fn sign_leaf(
    issuer: &Issuer<'static, KeyPair>,
    public_key: &impl PublicKeyData,
    identity: &Identity,
    dns_names: &[String],
    terms: &LeafTerms,
) -> Result<CertificateDer<'static>, SignError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let uri = identity.to_string().try_into().map_err(SignError::Sign)?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    for name in dns_names {
        params.subject_alt_names.push(SanType::DnsName(name.clone().try_into().map_err(SignError::Sign)?));
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = terms.not_before.into();
    params.not_after = terms.not_after.into();
    params.serial_number = Some(random_serial()?);
    let cert = params.signed_by(public_key, issuer).map_err(SignError::Sign)?;
    Ok(cert.der().clone())
}

/// 128 random bits, positive (top bit clear), as RFC 5280 and the CA/B baseline ask.
fn random_serial() -> Result<SerialNumber, SignError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).map_err(|_| SignError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use paymesh_tls::PrivateKey;

    use super::*;

    fn id(s: &str) -> Identity {
        s.parse().expect("valid identity")
    }

    const PAYMENT: &str = "spiffe://cluster.local/ns/payments/sa/payment-service";

    #[test]
    fn a_csr_for_the_caller_passes() {
        let key = PrivateKey::generate().expect("key");
        let csr = key.csr(&id(PAYMENT)).expect("csr");
        let public = check_csr(csr.as_pem(), &id(PAYMENT)).expect("accepted");
        assert_eq!(public.der_bytes(), key.public_key_raw());
    }

    #[test]
    fn a_csr_for_someone_else_is_refused() {
        let key = PrivateKey::generate().expect("key");
        let csr = key.csr(&id("spiffe://cluster.local/ns/payments/sa/account-service")).expect("csr");
        let err = check_csr(csr.as_pem(), &id(PAYMENT)).expect_err("other identity");
        assert_eq!(
            err.to_string(),
            format!(
                "CSR asks for [\"spiffe://cluster.local/ns/payments/sa/account-service\"], but the caller is {PAYMENT}: \
                 a certificate names only the caller's own identity"
            )
        );
    }

    #[test]
    fn extra_or_missing_sans_are_refused() {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![
            SanType::URI(PAYMENT.try_into().expect("ia5")),
            SanType::DnsName("payment-service.payments.svc".try_into().expect("ia5")),
        ];
        let csr = params.serialize_request(&key).expect("csr").pem().expect("pem");
        let err = check_csr(&csr, &id(PAYMENT)).expect_err("extra SAN");
        assert!(err.to_string().contains("DNS:payment-service.payments.svc"), "{err}");
        params.subject_alt_names.clear();
        let csr = params.serialize_request(&key).expect("csr").pem().expect("pem");
        assert!(matches!(check_csr(&csr, &id(PAYMENT)), Err(SignError::NoSan)));
    }

    #[test]
    fn malformed_csrs_are_refused_with_a_reason() {
        let caller = id(PAYMENT);
        let huge = "A".repeat(MAX_CSR_BYTES + 1);
        assert!(
            matches!(check_csr(&huge, &caller), Err(SignError::CsrTooLarge(n)) if n == MAX_CSR_BYTES + 1)
        );
        assert!(matches!(check_csr("\u{0}\u{1}garbage", &caller), Err(SignError::CsrPem(_))));
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = check_csr(cert, &caller).expect_err("wrong block");
        assert_eq!(
            err.to_string(),
            "CSR is not one PEM `CERTIFICATE REQUEST` block: found a `CERTIFICATE` block"
        );
        let junk = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
        assert!(matches!(check_csr(junk, &caller), Err(SignError::CsrInvalid(_))));
    }

    #[test]
    fn a_csr_with_a_broken_signature_is_refused() {
        let key = PrivateKey::generate().expect("key");
        let csr = key.csr(&id(PAYMENT)).expect("csr");
        let block = pem::parse(csr.as_pem()).expect("pem");
        let mut der = block.contents().to_vec();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        let err = check_csr(&tampered, &id(PAYMENT)).expect_err("bad signature");
        assert!(
            matches!(err, SignError::CsrInvalid(rcgen::Error::InvalidCertificationRequestSignature)),
            "{err}"
        );
    }
}
