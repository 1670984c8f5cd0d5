//! Money and identifier types shared by every service: positive amounts in minor units,
//! ISO 4217 currencies, account and tenant ids.
//!
//! Requests carry raw values (so validation can report every broken rule at once); the
//! ledger and the saga only ever see these parsed types, so a zero, negative or unknown
//! value cannot reach a balance. Arithmetic on balances is checked: an overflow is an error,
//! never a wrap.

mod iso4217;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a value is not valid money or a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Amounts are strictly positive.
    #[error("amount_minor must be a positive integer, got {0}")]
    NotPositive(i64),
    /// Not an active ISO 4217 alphabetic code.
    #[error("currency {0:?} is not an ISO 4217 currency code")]
    UnknownCurrency(String),
    /// Ids are 1 to 64 characters of `A-Z a-z 0-9 _ - .`.
    #[error("{kind} {value:?} must be 1 to 64 characters of letters, digits, '_', '-' or '.'")]
    BadId {
        /// Which kind of id ("account id", "tenant id").
        kind: &'static str,
        /// The rejected value.
        value: String,
    },
    /// A balance would leave the `i64` range.
    #[error("balance overflow")]
    Overflow,
}

/// A strictly positive amount of money in minor units (cents for EUR, yen for JPY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Amount(i64);

impl Amount {
    /// Parses a raw amount; zero and negative amounts are refused.
    pub fn new(minor: i64) -> Result<Self, MoneyError> {
        if minor > 0 { Ok(Self(minor)) } else { Err(MoneyError::NotPositive(minor)) }
    }

    /// The amount in minor units (always > 0).
    pub fn minor(self) -> i64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Amount::new(i64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A balance in minor units, changed only through checked operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Balance(i64);

impl Balance {
    /// Wraps a stored balance.
    pub fn new(minor: i64) -> Self {
        Self(minor)
    }

    /// The balance in minor units.
    pub fn minor(self) -> i64 {
        self.0
    }

    /// `self + amount`, or `Overflow`.
    pub fn credit(self, amount: Amount) -> Result<Self, MoneyError> {
        self.0.checked_add(amount.0).map(Self).ok_or(MoneyError::Overflow)
    }

    /// `self - amount` when the result stays >= 0; `None` when funds are insufficient.
    pub fn debit(self, amount: Amount) -> Option<Self> {
        self.0.checked_sub(amount.0).filter(|b| *b >= 0).map(Self)
    }
}

/// An active ISO 4217 currency code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct Currency(&'static str);

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Currency {
    /// The three-letter code.
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match iso4217::CODES.binary_search(&s) {
            Ok(i) => Ok(Self(iso4217::CODES[i])),
            Err(_) => Err(MoneyError::UnknownCurrency(s.to_owned())),
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = MoneyError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                if valid_id(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(MoneyError::BadId { kind: $kind, value: s.to_owned() })
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = MoneyError;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                if valid_id(&s) { Ok(Self(s)) } else { Err(MoneyError::BadId { kind: $kind, value: s }) }
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A customer account id.
    AccountId,
    "account id"
);
id_type!(
    /// A transfer id: the saga id and the payment id (one payment, one saga, one transfer).
    TransferId,
    "transfer id"
);
id_type!(
    /// A tenant id (the `x-tenant-id` header).
    TenantId,
    "tenant id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_must_be_positive() {
        assert_eq!(Amount::new(0), Err(MoneyError::NotPositive(0)));
        assert_eq!(Amount::new(-5), Err(MoneyError::NotPositive(-5)));
        assert_eq!(Amount::new(i64::MIN), Err(MoneyError::NotPositive(i64::MIN)));
        assert_eq!(Amount::new(i64::MAX).map(Amount::minor), Ok(i64::MAX));
        let parsed: Result<Amount, _> = serde_json::from_str("0");
        assert!(parsed.is_err());
        let parsed: Result<Amount, _> = serde_json::from_str("9223372036854775808");
        assert!(parsed.is_err());
    }

    #[test]
    fn balances_never_overflow_or_go_negative() {
        let ten = Amount::new(10).expect("valid in test");
        assert_eq!(Balance::new(10).debit(ten), Some(Balance::new(0)));
        assert_eq!(Balance::new(9).debit(ten), None);
        assert_eq!(Balance::new(i64::MAX).credit(ten), Err(MoneyError::Overflow));
        assert_eq!(Balance::new(5).credit(ten), Ok(Balance::new(15)));
    }

    #[test]
    fn currencies_are_iso_4217() {
        assert_eq!("EUR".parse::<Currency>().map(|c| c.to_string()), Ok("EUR".to_owned()));
        assert!("eur".parse::<Currency>().is_err());
        assert!("XXX".parse::<Currency>().is_err());
        assert!("EURO".parse::<Currency>().is_err());
        assert!("".parse::<Currency>().is_err());
        let c: Currency = serde_json::from_str("\"JPY\"").expect("valid in test");
        assert_eq!(serde_json::to_string(&c).expect("valid in test"), "\"JPY\"");
    }

    #[test]
    fn ids_are_bounded_and_plain() {
        assert!("acct-1_A.b".parse::<AccountId>().is_ok());
        assert!("".parse::<AccountId>().is_err());
        assert!("a b".parse::<AccountId>().is_err());
        assert!("clearing:EUR".parse::<AccountId>().is_err());
        assert!("x".repeat(65).parse::<TenantId>().is_err());
        assert!("x".repeat(64).parse::<TenantId>().is_ok());
    }
}
