//! What the probers saw, in the terms the metrics record: an outcome, durations, bytes, and the
//! closed sets of label values. The probers (above) produce these and the metrics (below)
//! record them, so neither imports the other's types.

/// A label whose values are a closed set, as an enum: `prometheus_client`'s
/// `#[derive(EncodeLabelValue)]` writes a variant's name as the label value, so the variants are
/// spelled exactly as the values appear in `/metrics` (hence lower case). `as_str` and `ALL`
/// come from the same names, for logs, docs and creating every series up front.
macro_rules! label_values {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[allow(non_camel_case_types)]
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            prometheus_client::encoding::EncodeLabelValue,
        )]
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The label value, as `/metrics` writes it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => stringify!($variant)),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use label_values;

pub mod dns;
pub mod storage;

use std::net::IpAddr;

label_values! {
    /// The `family` label: the IP family a probe went over (on
    /// `netprobe_dns_family_queries_total`, the family a query asked for: A is `ipv4`, AAAA `ipv6`).
    pub enum IpFamily {
        ipv4,
        ipv6,
    }
}

impl IpFamily {
    /// The family of an address; an IPv4-mapped IPv6 address travels as IPv4.
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(_) => Self::ipv4,
            IpAddr::V6(_) => Self::ipv6,
        }
    }
}
