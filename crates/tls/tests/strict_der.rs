//! Every certificate the CA makes must be DER, as strict clients read it: DER allows one encoding
//! per value, so decoding each part with RustCrypto's `der` types and encoding it again must give
//! back the same bytes. That catches what X.690 forbids and lenient parsers accept, such as a
//! DEFAULT value encoded explicitly (the `cA FALSE` rcgen 0.14.7 wrote into leaves, which
//! Python's `cryptography` refuses). paymesh makes roots and leaves; intermediates come only
//! from plugged-in `cacerts`.

use std::time::Duration;

use paymesh_tls::{Authority, PrivateKey, TrustDomain, Validity};
use x509_cert::Certificate;
use x509_cert::der::oid::db::rfc5280::{
    ID_CE_BASIC_CONSTRAINTS as BASIC_CONSTRAINTS, ID_CE_EXT_KEY_USAGE as EXT_KEY_USAGE,
    ID_CE_KEY_USAGE as KEY_USAGE, ID_CE_SUBJECT_ALT_NAME as SUBJECT_ALT_NAME,
};
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAltName};

#[test]
fn generated_roots_and_issued_leaves_are_strict_der() {
    let (authority, _) =
        Authority::generate_root(&TrustDomain::default(), Duration::from_secs(3600)).expect("root");
    let identity = "spiffe://cluster.local/ns/payments/sa/payment-service".parse().expect("identity");
    let key = PrivateKey::generate().expect("key");
    let csr = key.csr(&identity).expect("csr");
    let validity = Validity::from_now(Duration::from_secs(600), Duration::from_secs(1));
    let issued = authority.sign_csr(csr.as_pem(), &identity, &validity).expect("signed");
    let served =
        authority.issue(&identity, &["istiod.istio-system.svc".to_owned()], key, &validity).expect("issued");
    let certs =
        [("root", &issued.roots[0]), ("leaf from a CSR", &issued.leaf), ("served leaf", &served.chain()[0])];
    for (what, der) in certs {
        let parsed =
            Certificate::from_der(der.as_ref()).unwrap_or_else(|e| panic!("{what}: not strict DER: {e}"));
        assert_eq!(parsed.tbs_certificate.version, x509_cert::Version::V3, "{what}");
        assert!(parsed.to_der().expect("encodes") == der.as_ref(), "{what}: not in canonical DER");
        // Extension values are opaque to the certificate's own parse: each one must come back
        // byte for byte from its decoded form, as DER's one encoding per value demands.
        for ext in parsed.tbs_certificate.extensions.iter().flatten() {
            let value = ext.extn_value.as_bytes();
            let again = match ext.extn_id {
                BASIC_CONSTRAINTS => BasicConstraints::from_der(value).and_then(|v| v.to_der()),
                KEY_USAGE => KeyUsage::from_der(value).and_then(|v| v.to_der()),
                EXT_KEY_USAGE => ExtendedKeyUsage::from_der(value).and_then(|v| v.to_der()),
                SUBJECT_ALT_NAME => SubjectAltName::from_der(value).and_then(|v| v.to_der()),
                _ => Ok(value.to_vec()),
            };
            let again = again.unwrap_or_else(|e| panic!("{what}: extension {}: {e}", ext.extn_id));
            assert!(
                again == value,
                "{what}: extension {} is not DER: {value:02x?}, DER is {again:02x?}",
                ext.extn_id
            );
        }
    }
}
