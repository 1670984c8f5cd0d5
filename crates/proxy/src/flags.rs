//! Envoy's response flags (`%RESPONSE_FLAGS%`): why a request did not get an ordinary answer
//! from its upstream. A request can earn several (`UF,URX`: the connect failed, and so did every
//! retry), so they are kept as a set and printed in Envoy's order.

use std::fmt;

/// One response flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ResponseFlag {
    /// `UH`: the cluster has no endpoint.
    NoHealthyUpstream,
    /// `UF`: connecting (TCP or TLS) to the upstream failed.
    UpstreamConnectionFailure,
    /// `UC`: the upstream connection ended before the response.
    UpstreamConnectionTermination,
    /// `UO`: a circuit breaker limit was reached (connections, pending or active requests).
    UpstreamOverflow,
    /// `NR`: no route (or inbound filter chain) matched.
    NoRoute,
    /// `UT`: the upstream did not answer within the route's timeout or the per-try timeout.
    UpstreamRequestTimeout,
    /// `DI`: a fault delay was injected.
    DelayInjected,
    /// `FI`: a fault abort answered the request.
    FaultInjected,
    /// `UR`: the upstream reset the request after it was sent.
    UpstreamRemoteReset,
    /// `DC`: the downstream connection ended before the response was complete.
    DownstreamConnectionTermination,
    /// `URX`: the request failed and the retry policy allowed no further attempt.
    UpstreamRetryLimitExceeded,
    /// `DPE`: the downstream request was malformed.
    DownstreamProtocolError,
}

/// Every flag, in the order Envoy prints them.
const ALL: [ResponseFlag; 12] = [
    ResponseFlag::NoHealthyUpstream,
    ResponseFlag::UpstreamRequestTimeout,
    ResponseFlag::UpstreamRemoteReset,
    ResponseFlag::UpstreamConnectionFailure,
    ResponseFlag::UpstreamConnectionTermination,
    ResponseFlag::UpstreamOverflow,
    ResponseFlag::NoRoute,
    ResponseFlag::DelayInjected,
    ResponseFlag::FaultInjected,
    ResponseFlag::DownstreamConnectionTermination,
    ResponseFlag::UpstreamRetryLimitExceeded,
    ResponseFlag::DownstreamProtocolError,
];

impl ResponseFlag {
    /// The flag as Envoy writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFlag::NoHealthyUpstream => "UH",
            ResponseFlag::UpstreamConnectionFailure => "UF",
            ResponseFlag::UpstreamConnectionTermination => "UC",
            ResponseFlag::UpstreamOverflow => "UO",
            ResponseFlag::NoRoute => "NR",
            ResponseFlag::UpstreamRequestTimeout => "UT",
            ResponseFlag::DelayInjected => "DI",
            ResponseFlag::FaultInjected => "FI",
            ResponseFlag::UpstreamRemoteReset => "UR",
            ResponseFlag::DownstreamConnectionTermination => "DC",
            ResponseFlag::UpstreamRetryLimitExceeded => "URX",
            ResponseFlag::DownstreamProtocolError => "DPE",
        }
    }

    fn bit(self) -> u16 {
        1 << self as u8
    }
}

impl fmt::Display for ResponseFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of response flags; `-` when empty, as Envoy's access log writes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseFlags(u16);

impl ResponseFlags {
    /// Adds `flag`.
    pub fn insert(&mut self, flag: ResponseFlag) {
        self.0 |= flag.bit();
    }

    /// Whether `flag` is set.
    pub fn contains(self, flag: ResponseFlag) -> bool {
        self.0 & flag.bit() != 0
    }

    /// The flags set, in Envoy's order.
    pub fn iter(self) -> impl Iterator<Item = ResponseFlag> {
        ALL.into_iter().filter(move |flag| self.contains(*flag))
    }
}

impl From<ResponseFlag> for ResponseFlags {
    fn from(flag: ResponseFlag) -> Self {
        ResponseFlags(flag.bit())
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut flags = self.iter();
        match flags.next() {
            None => f.write_str("-"),
            Some(first) => {
                f.write_str(first.as_str())?;
                flags.try_for_each(|flag| write!(f, ",{flag}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_as_envoy_does_in_its_order_whatever_the_order_they_were_set() {
        let mut flags = ResponseFlags::default();
        assert_eq!(flags.to_string(), "-");
        flags.insert(ResponseFlag::UpstreamRetryLimitExceeded);
        flags.insert(ResponseFlag::UpstreamConnectionFailure);
        flags.insert(ResponseFlag::UpstreamConnectionFailure);
        assert_eq!(flags.to_string(), "UF,URX");
        assert!(flags.contains(ResponseFlag::UpstreamConnectionFailure));
        assert!(!flags.contains(ResponseFlag::NoRoute));
        assert_eq!(ResponseFlags::from(ResponseFlag::NoRoute).to_string(), "NR");
    }

    #[test]
    fn every_flag_has_its_own_bit_and_envoy_name() {
        let names: Vec<&str> = ALL.iter().map(|flag| flag.as_str()).collect();
        let mut all = ResponseFlags::default();
        ALL.iter().for_each(|flag| all.insert(*flag));
        assert_eq!(all.iter().count(), ALL.len());
        assert_eq!(all.to_string(), names.join(","));
    }
}
