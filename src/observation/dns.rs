//! What one DNS lookup saw.

use std::time::Duration;

use hickory_proto::op::ResponseCode;

use super::IpFamily;

/// How a lookup ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A response with this code and this many answer records. A NOERROR one holds at least one
    /// record of the queried type for the name, directly or at the end of a CNAME chain.
    Response { rcode: ResponseCode, answers: usize },
    /// NOERROR without a record of the queried type for the name: an empty answer section
    /// (`answers == 0`, what libc calls NO_DATA), records of other types only (a TXT), or a
    /// CNAME chain that ends at a name without one (the target has no such record, or does not
    /// exist: the answer section cannot tell these apart).
    NoData { answers: usize },
    /// NOERROR whose records of the queried type all belong to names the query neither asked for
    /// nor reached through a CNAME, or whose CNAME chain loops or is longer than
    /// [`MAX_CNAME_CHAIN`]: a misdirected or broken answer.
    WrongAnswer { answers: usize },
    /// No response before the deadline.
    Timeout,
    /// The query could not be sent or the exchange broke (refused, unreachable, garbled).
    NetworkError(String),
}

super::label_values! {
    /// The `rcode` label: the response code as DNS names it, NODATA or WRONG_ANSWER for a
    /// NOERROR answer an application cannot use, or TIMEOUT / NETWORK_ERROR when no response
    /// came. `ALL` is in the order of docs/metrics.md.
    #[allow(clippy::upper_case_acronyms)]
    pub enum Rcode {
        NOERROR,
        FORMERR,
        SERVFAIL,
        NXDOMAIN,
        NOTIMP,
        REFUSED,
        YXDOMAIN,
        YXRRSET,
        NXRRSET,
        NOTAUTH,
        NOTZONE,
        BADVERS,
        OTHER,
        NODATA,
        WRONG_ANSWER,
        TIMEOUT,
        NETWORK_ERROR,
    }
}

impl Rcode {
    /// The code a response carried, by its DNS name; codes outside the table are OTHER.
    pub fn of(code: ResponseCode) -> Self {
        use ResponseCode as R;
        match code {
            R::NoError => Self::NOERROR,
            R::FormErr => Self::FORMERR,
            R::ServFail => Self::SERVFAIL,
            R::NXDomain => Self::NXDOMAIN,
            R::NotImp => Self::NOTIMP,
            R::Refused => Self::REFUSED,
            R::YXDomain => Self::YXDOMAIN,
            R::YXRRSet => Self::YXRRSET,
            R::NXRRSet => Self::NXRRSET,
            R::NotAuth => Self::NOTAUTH,
            R::NotZone => Self::NOTZONE,
            R::BADVERS => Self::BADVERS,
            _ => Self::OTHER,
        }
    }
}

/// The longest CNAME chain followed within one answer section; a longer one counts as a loop.
pub const MAX_CNAME_CHAIN: usize = 16;

impl Outcome {
    /// The `rcode` label: the response code's DNS name, NODATA or WRONG_ANSWER for a NOERROR
    /// answer an application cannot use, or TIMEOUT / NETWORK_ERROR when no response came.
    pub fn rcode_label(&self) -> Rcode {
        match self {
            Outcome::Response { rcode, .. } => Rcode::of(*rcode),
            Outcome::NoData { .. } => Rcode::NODATA,
            Outcome::WrongAnswer { .. } => Rcode::WRONG_ANSWER,
            Outcome::Timeout => Rcode::TIMEOUT,
            Outcome::NetworkError(_) => Rcode::NETWORK_ERROR,
        }
    }

    /// The response code the server sent, if a response came.
    pub fn rcode(&self) -> Option<ResponseCode> {
        match self {
            Outcome::Response { rcode, .. } => Some(*rcode),
            Outcome::NoData { .. } | Outcome::WrongAnswer { .. } => Some(ResponseCode::NoError),
            Outcome::Timeout | Outcome::NetworkError(_) => None,
        }
    }

    /// Whether this outcome meets the expectation: the `expect` rcode (whatever the answer
    /// holds), or by default NOERROR with a record of the queried type for the name.
    pub fn meets(&self, expect: Option<ResponseCode>) -> bool {
        match expect {
            Some(expected) => self.rcode() == Some(expected),
            None => matches!(
                self,
                Outcome::Response {
                    rcode: ResponseCode::NoError,
                    answers: 1..
                }
            ),
        }
    }

    /// A short description for logs.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Response { rcode, answers } => {
                format!("{} with {answers} answer(s)", rcode_name(*rcode))
            }
            Outcome::NoData { answers: 0 } => "NOERROR with no answer (NODATA)".into(),
            Outcome::NoData { answers } => format!(
                "NOERROR with {answers} answer(s), none of the queried type for the name, \
                 directly or through a CNAME (NODATA)"
            ),
            Outcome::WrongAnswer { answers } => format!(
                "NOERROR with {answers} answer(s): records of the queried type for other names, \
                 or a CNAME chain that loops or is longer than {MAX_CNAME_CHAIN} (WRONG_ANSWER)"
            ),
            Outcome::Timeout => "no response before the deadline".into(),
            Outcome::NetworkError(e) => format!("network error: {e}"),
        }
    }

    /// Whether libc's res_send asks the next nameserver after this: no response, or SERVFAIL,
    /// NOTIMP or REFUSED.
    pub(crate) fn tries_next_server(&self) -> bool {
        !matches!(
            self.rcode(),
            Some(rcode) if !matches!(
                rcode,
                ResponseCode::ServFail | ResponseCode::NotImp | ResponseCode::Refused
            )
        )
    }

    /// Whether the response's answer section has records (libc's `ancount > 0` with NOERROR),
    /// which ends libc's search-list walk whether or not they are of any use.
    pub(crate) fn has_records(&self) -> bool {
        matches!(
            self,
            Outcome::Response {
                rcode: ResponseCode::NoError,
                answers: 1..
            } | Outcome::NoData { answers: 1.. }
                | Outcome::WrongAnswer { .. }
        )
    }
}

/// What one lookup saw.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsObservation {
    pub outcome: Outcome,
    /// From the first message sent to the final response; `None` when no response came.
    pub duration: Option<Duration>,
    pub udp_queries: u32,
    pub tcp_queries: u32,
}

/// One A or AAAA query of a lookup and what came back for it: an `rcode` label value, TIMEOUT
/// when its wait ended without an answer. A UDP query and its TCP retry after a truncated answer
/// count once, with the TCP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyQuery {
    /// `ipv4` (A) or `ipv6` (AAAA).
    pub family: IpFamily,
    pub rcode: Rcode,
}

/// The response codes `expect` may name, by their DNS names.
pub const RCODES: &[(&str, ResponseCode)] = &[
    ("NOERROR", ResponseCode::NoError),
    ("FORMERR", ResponseCode::FormErr),
    ("SERVFAIL", ResponseCode::ServFail),
    ("NXDOMAIN", ResponseCode::NXDomain),
    ("NOTIMP", ResponseCode::NotImp),
    ("REFUSED", ResponseCode::Refused),
    ("YXDOMAIN", ResponseCode::YXDomain),
    ("YXRRSET", ResponseCode::YXRRSet),
    ("NXRRSET", ResponseCode::NXRRSet),
    ("NOTAUTH", ResponseCode::NotAuth),
    ("NOTZONE", ResponseCode::NotZone),
    ("BADVERS", ResponseCode::BADVERS),
];

/// The DNS name of a response code (`NOERROR`, `NXDOMAIN`, ...), as CoreDNS labels it; codes
/// outside the table become `OTHER` so the label set stays closed.
pub fn rcode_name(code: ResponseCode) -> &'static str {
    Rcode::of(code).as_str()
}
