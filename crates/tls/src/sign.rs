//! Signing workload certificates: an [`Authority`] (the signing CA's key and certificate, what
//! follows a leaf in a chain, the mesh roots) turns a CSR into a leaf.
//!
//! The CSR only contributes its public key: its signature must verify (proof the requester
//! holds the key) and its one URI SAN must be exactly the caller's authenticated identity.
//! Everything else in the leaf is the authority's: SAN = that identity and nothing more, empty
//! subject (so the SAN is critical, as X.509-SVIDs have it), server + client auth, not a CA.
//!
//! This is the control plane CA's signing core without its authentication, bootstrap tokens,
//! lifetime policy and key files, so the proxy's tests sign with the very same code without
//! depending on the control plane.

use std::fmt;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData,
    SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};

use crate::{CertError, Credential, Identity, PrivateKey, TrustBundle, TrustDomain, cert_to_pem};

/// The largest CSR accepted, in bytes of PEM (an RSA-4096 CSR is under 2 KiB).
pub const MAX_CSR_BYTES: usize = 32 * 1024;

/// PEM labels a CSR may carry.
const CSR_LABELS: [&str; 2] = ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"];

/// How far a generated root's `notBefore` lies in the past, so hosts with a clock a little
/// behind accept it.
const ROOT_BACKDATE: Duration = Duration::from_secs(3600);

/// Why a CSR was not signed or a root not generated.
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
    /// No randomness for the serial number.
    #[error("no randomness for a serial number")]
    Random,
    /// The signed leaf and the local key do not make a credential.
    #[error("the signed certificate does not make a credential: {0}")]
    Credential(#[source] CertError),
    /// A generated root cannot serve as a trust anchor or issuer.
    #[error("the generated root is unusable: {0}")]
    Root(#[source] CertError),
    /// rcgen failed to generate a key, or to write or sign the certificate.
    #[error("signing the certificate: {0}")]
    Sign(#[source] rcgen::Error),
}

/// The validity window of a certificate about to be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl Validity {
    /// From `backdate` ago (clock-skew allowance) until `lifetime` from now.
    pub fn from_now(lifetime: Duration, backdate: Duration) -> Self {
        let now = SystemTime::now();
        Validity { not_before: now - backdate, not_after: now + lifetime }
    }
}

/// A signed workload certificate with what a workload needs to use it.
#[derive(Debug, Clone)]
pub struct IssuedChain {
    /// The new leaf.
    pub leaf: CertificateDer<'static>,
    /// Intermediates between the leaf and a root (empty with a self-signed root).
    pub intermediates: Vec<CertificateDer<'static>>,
    /// The mesh roots.
    pub roots: Vec<CertificateDer<'static>>,
}

impl IssuedChain {
    /// `IstioCertificateResponse.cert_chain`: leaf, intermediates, then roots, one PEM
    /// certificate per entry, as Istio's CA answers.
    pub fn to_cert_chain_pems(&self) -> Vec<String> {
        std::iter::once(&self.leaf).chain(&self.intermediates).chain(&self.roots).map(cert_to_pem).collect()
    }
}

/// A signing CA: its key, its name, what follows a leaf in a chain, and the roots. `Debug`
/// never shows the key.
pub struct Authority {
    /// Signs leaves: the signing CA's name, key identifier and key.
    issuer: Issuer<'static, KeyPair>,
    /// What follows a leaf in a TLS chain: the signing CA (unless it is a root) and any further
    /// intermediates, never a root.
    intermediates: Vec<CertificateDer<'static>>,
    /// The roots every workload trusts.
    trust: TrustBundle,
}

impl Authority {
    /// Signs with `key` under the CA certificate `cert`; `intermediates` follow every leaf and
    /// `trust` holds the roots. The caller checks that `cert` belongs to `key` and is a CA.
    pub fn new(
        cert: &CertificateDer<'_>,
        key: KeyPair,
        intermediates: Vec<CertificateDer<'static>>,
        trust: TrustBundle,
    ) -> Result<Self, CertError> {
        let issuer = Issuer::from_ca_cert_der(cert, key).map_err(|e| CertError::Parse(e.to_string()))?;
        Ok(Authority { issuer, intermediates, trust })
    }

    /// A fresh self-signed root for `trust_domain` (ECDSA P-256, `O=<trust domain>,
    /// CN=paymesh root CA`, valid for `lifetime`), and its key as PKCS#8 PEM for the caller to
    /// keep (or drop, for a root that lives only as long as a test).
    pub fn generate_root(
        trust_domain: &TrustDomain,
        lifetime: Duration,
    ) -> Result<(Self, String), SignError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(SignError::Sign)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, trust_domain.as_str());
        params.distinguished_name.push(DnType::CommonName, "paymesh root CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let validity = Validity::from_now(lifetime, ROOT_BACKDATE);
        params.not_before = validity.not_before.into();
        params.not_after = validity.not_after.into();
        let cert = params.self_signed(&key).map_err(SignError::Sign)?.der().clone();
        let key_pem = key.serialize_pem();
        let trust = TrustBundle::new(vec![cert.clone()]).map_err(SignError::Root)?;
        let authority = Authority::new(&cert, key, Vec::new(), trust).map_err(SignError::Root)?;
        Ok((authority, key_pem))
    }

    /// The roots every workload must trust.
    pub fn trust(&self) -> &TrustBundle {
        &self.trust
    }

    /// Signs `csr_pem` for the authenticated `caller`, after the checks of this module.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        caller: &Identity,
        validity: &Validity,
    ) -> Result<IssuedChain, SignError> {
        let public_key = check_csr(csr_pem, caller)?;
        Ok(IssuedChain {
            leaf: self.sign_leaf(&public_key, caller, &[], validity)?,
            intermediates: self.intermediates.clone(),
            roots: self.trust.certs().to_vec(),
        })
    }

    /// A credential over a key made in this process (the control plane's serving certificate,
    /// a test's client), with extra DNS names.
    pub fn issue(
        &self,
        identity: &Identity,
        dns_names: &[String],
        key: PrivateKey,
        validity: &Validity,
    ) -> Result<Credential, SignError> {
        let mut chain = vec![self.sign_leaf(key.key_pair(), identity, dns_names, validity)?];
        chain.extend(self.intermediates.iter().cloned());
        Credential::new(key, chain).map_err(SignError::Credential)
    }

    /// Signs a leaf for `identity` (plus `dns_names`, used only for the control plane's own
    /// serving certificate) over `public_key`.
    fn sign_leaf(
        &self,
        public_key: &impl PublicKeyData,
        identity: &Identity,
        dns_names: &[String],
        validity: &Validity,
    ) -> Result<CertificateDer<'static>, SignError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let uri = identity.to_string().try_into().map_err(SignError::Sign)?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        for name in dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(name.clone().try_into().map_err(SignError::Sign)?));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.not_before.into();
        params.not_after = validity.not_after.into();
        params.serial_number = Some(random_serial()?);
        let cert = params.signed_by(public_key, &self.issuer).map_err(SignError::Sign)?;
        Ok(cert.der().clone())
    }
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("intermediates", &self.intermediates.len())
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

/// Checks `csr_pem` against the authenticated `caller` and returns the public key to certify.
fn check_csr(csr_pem: &str, caller: &Identity) -> Result<rcgen::PublicKey, SignError> {
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

/// 128 random bits, positive (top bit clear), as RFC 5280 and the CA/B baseline ask.
fn random_serial() -> Result<SerialNumber, SignError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).map_err(|_| SignError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Identity {
        s.parse().expect("valid identity")
    }

    const PAYMENT: &str = "spiffe://cluster.local/ns/payments/sa/payment-service";

    #[test]
    fn a_generated_root_signs_chains_that_verify_against_it() {
        let (authority, key_pem) =
            Authority::generate_root(&TrustDomain::default(), Duration::from_secs(3600)).expect("root");
        assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(!format!("{authority:?}").contains("PRIVATE"));
        let key = PrivateKey::generate().expect("key");
        let csr = key.csr(&id(PAYMENT)).expect("csr");
        let validity = Validity::from_now(Duration::from_secs(60), Duration::from_secs(1));
        let issued = authority.sign_csr(csr.as_pem(), &id(PAYMENT), &validity).expect("signed");
        assert_eq!(issued.to_cert_chain_pems().len(), 2, "leaf, then the root");
        let found = authority.trust().verify(&[issued.leaf], SystemTime::now()).expect("verifies");
        assert_eq!(found, id(PAYMENT));
        let dns = ["istiod.istio-system.svc".to_owned()];
        let credential = authority.issue(&id(PAYMENT), &dns, key, &validity).expect("credential");
        assert_eq!(credential.identity(), &id(PAYMENT));
        assert_eq!(credential.chain().len(), 1, "a self-signed root adds no intermediate");
    }

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
